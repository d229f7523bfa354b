"""bench/pipeline.py still runs end to end: its --quick smoke mode on tiny models.

The numbers of a smoke run mean nothing (tiny random models, one round); what is
checked is that every phase ran and the JSON holds what bench/README.md describes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_pipeline_benchmark_runs_every_phase_and_reports_its_targets(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    subprocess.run(
        [
            sys.executable,
            "bench/pipeline.py",
            "--quick",
            "--models-dir",
            str(tmp_path / "models"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())

    assert result["complete"] is True
    assert set(result["targets"]) == {
        "prompt_edit_speedup",
        "sketch_edit_speedup",
        "batched_4_sessions",
        "memory_bounded",
    }
    for name, goal in result["targets"].items():
        assert isinstance(goal["value"], float | int) and isinstance(goal["pass"], bool), name
    assert result["targets"]["prompt_edit_speedup"]["value"] > 0
    assert [batch["sessions"] for batch in result["batched"]] == [1, 2, 4]
    for loop in ("prompt_edit", "sketch_edit"):
        livegen = result[loop]["cases"]["livegen"]
        assert livegen["ms"]["p50"] > 0 and livegen["stage_mean_ms"]["unet"] > 0
    assert result["settings"]["livegen"]["lanes"] >= 1
    # FLOPs per frame (bench/flops.py) and the fraction of peak each batched run reached.
    gflops = result["flops"]["gflops_per_frame"]
    assert set(gflops) == {"unet", "vae_encoder", "vae_decoder"} and min(gflops.values()) > 0
    assert result["flops"]["peak_tflops"] > 0
    for batch in result["batched"]:
        fractions = batch["batched"]["fraction_of_peak"]
        assert 0 < fractions["frame"] < 1 and 0 < fractions["unet"] < 1
