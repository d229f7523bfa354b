"""bench/conditioning.py still runs end to end: its --quick smoke mode on tiny models.

A smoke run's timings mean nothing; what is checked is that every phase ran and
the cache-based targets hold (they do not depend on speed): a prompt edit with a
ControlNet on an unchanged sketch makes no control picture and runs no VAE
encoder, an adapter's features are not recomputed, and a 4-prompt blend runs no
text encoder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_conditioning_benchmark_runs_every_phase_and_meets_its_cache_targets(
    tmp_path: Path,
) -> None:
    out = tmp_path / "conditioning.json"
    subprocess.run(
        [sys.executable, "bench/conditioning.py", "--quick"]
        + ["--models-dir", str(tmp_path / "models"), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())

    assert set(result["phases"]) == {"plain", "controlnet", "adapter", "blend"}
    for phase in result["phases"].values():
        assert phase["frame_ms"]["p50"] > 0 and phase["stage_ms_per_frame"]["unet"] > 0
    stages = {name: phase["stage_ms_per_frame"] for name, phase in result["phases"].items()}
    assert stages["controlnet"]["controlnet"] > 0 and stages["plain"]["controlnet"] == 0
    targets = result["targets"]
    assert targets["controlnet_prompt_edit_no_preprocessing_no_encode"]["pass"] is True
    assert targets["blend_4_prompts_no_text_encoder"]["pass"] is True
    assert stages["adapter"]["adapter"] == 0  # its features were cached at warm-up
    assert isinstance(targets["adapter_vs_plain"]["ratio"], float)
