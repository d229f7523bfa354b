"""bench/gpu.sh runs as written: here, without a GPU, in its reduced CPU form.

The numbers mean nothing (tiny models, references only); what is checked is that
every step ran within its limit and left the JSON that bench/README.md describes,
so that the one short run on a lent GPU is not spent finding a typo.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, run bench/gpu.sh itself")
def test_the_gpu_script_runs_its_reduced_form_on_the_cpu(tmp_path: Path) -> None:
    environment = {**os.environ, "RESULTS": str(tmp_path)}
    environment.pop("TRITON_INTERPRET", None)  # the script's own pytest sets it, as a user's
    run = subprocess.run(
        ["bash", "bench/gpu.sh"], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "no CUDA device: running the reduced CPU form" in run.stdout
    summary = json.loads((tmp_path / "gpu-script-on-cpu-summary.json").read_text())
    assert summary["mode"] == "cpu" and summary["failed_steps"] == 0
    steps = [step["step"] for step in summary["steps"]]
    assert steps == ["kernel_tests", "kernels", "pipeline", "model_roundtrip"]
    kernels = json.loads((tmp_path / "gpu-script-on-cpu-kernels.json").read_text())
    assert "needs a CUDA device" in kernels["kernels"]["latent_step"]["batch_1"]["triton"]
    pipeline = json.loads((tmp_path / "gpu-script-on-cpu-pipeline.json").read_text())
    assert pipeline["complete"] and pipeline["flops"]["gflops_per_frame"]["unet"] > 0
    trips = json.loads((tmp_path / "gpu-script-on-cpu-model_roundtrip.json").read_text())
    assert [case["sessions"] for case in trips["starts"][0]["cases"]] == [1, 4]
