"""Check the checker: plant one known error at a time, and see the reference tests fail.

tests/pipelines/test_reference*.py compare livegen's frames with diffusers' own
pipelines (plain, with ControlNets and T2I-Adapters, with blends). A comparison
that cannot fail proves nothing, so this script copies the repository to a
scratch folder once per planted error, applies that one change to the copy (an
off-by-one timestep, BGR input, the wrong VAE scaling factor, ...), runs the
reference tests that bear on it there, and records which test caught it. Every
plant must be caught; the JSON (bench/results/planted_errors.json) says by which
test.

    .venv/bin/python bench/planted_errors.py            # every plant, a few minutes each
    .venv/bin/python bench/planted_errors.py --only bgr
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


CONTROL_TESTS = "tests/pipelines/test_reference_control.py"
BLEND_TESTS = "tests/pipelines/test_reference_blending.py"


@dataclass(frozen=True)
class Plant:
    name: str
    what: str
    file: str
    old: str  # must occur exactly once in ``file``
    new: str
    tests: str = "tests/pipelines/test_reference.py"
    select: str = ""  # a pytest -k expression: the tests that bear on the plant


PLANTS = [
    Plant(
        "vae-scaling",
        "SD's VAE scaling factor (0.18215) for every model",
        "pipelines/diffusion.py",
        "scaling: float = self.vae.config.scaling_factor",
        "scaling: float = 0.18215",
    ),
    Plant(
        "timestep-off-by-one",
        "the UNet is given each timestep plus one",
        "pipelines/diffusion.py",
        "model_input, schedule.timesteps[k], embeddings, requests",
        "model_input, schedule.timesteps[k] + 1, embeddings, requests",
    ),
    Plant(
        "bgr",
        "input pixels in BGR order",
        "kernels/model_input.py",
        "x = image.permute(2, 0, 1).unsqueeze(0).float()",
        "x = image.flip(-1).permute(2, 0, 1).unsqueeze(0).float()",
    ),
    Plant(
        "sdxl-hidden-layer",
        "SDXL conditioned on the text encoders' last hidden layer, not the penultimate",
        "pipelines/prompts.py",
        "output.hidden_states[-2]",
        "output.hidden_states[-1]",
    ),
    Plant(
        "lcm-guidance-w",
        "w instead of w - 1 in LCM's guidance embedding",
        "pipelines/lcm.py",
        "r.params.guidance_scale - 1 for r in requests",
        "r.params.guidance_scale for r in requests",
    ),
    Plant(
        "euler-unit-noise",
        "text to image from unit noise (Euler's init_noise_sigma left out)",
        "pipelines/samplers.py",
        "u=torch.where(text_only, schedule.init_scale, add),",
        "u=torch.where(text_only, torch.ones_like(add), add),",
    ),
    Plant(
        "euler-floor",
        "Euler's timesteps floored where diffusers rounds",
        "pipelines/samplers.py",
        "trailing = torch.round(fractions * starts) - 1",
        "trailing = torch.floor(fractions * starts) - 1",
    ),
    Plant(
        "posterior-mode",
        "the VAE posterior's mode where diffusers samples it with the seed",
        "pipelines/diffusion.py",
        "latent = posterior.mean + posterior.std * noise.to(posterior.std.dtype)",
        "latent = posterior.mean",
    ),
    Plant(
        "sdxl-negative-zeros",
        'an empty SDXL negative prompt encoded as "" instead of zeros',
        "pipelines/prompts.py",
        "if not self.zeros_for_empty_negative or all(prompts):",
        "if True:",
    ),
    Plant(
        "sdxl-vae-upcast",
        "SDXL's VAE left in float16 although its config says force_upcast",
        "pipelines/diffusion.py",
        "vae_dtype = torch.float32 if upcast else dtype",
        "vae_dtype = dtype",
    ),
    Plant(
        "lcm-lora-on-request",
        "a base model's LCM-LoRA only for sessions that ask for it by name",
        "pipelines/lcm.py",
        "        return LCM_LORA\n",
        "        return None\n",
    ),
    Plant(
        "lcm-grid",
        "LCM's timesteps evenly spaced instead of from its distillation grid",
        "pipelines/samplers.py",
        "self.scheduler.set_timesteps(steps, strength=strength)",
        "self.scheduler.set_timesteps(steps, strength=strength, original_inference_steps=1000)",
    ),
    Plant(
        "control-scale-ignored",
        "a ControlNet's residuals at full scale whatever control_scale says",
        "pipelines/control.py",
        "scale = scales[:, j].view(-1, 1, 1, 1)",
        "scale = scales[:, j].clamp(max=0).add(1).view(-1, 1, 1, 1)",
        CONTROL_TESTS,
        "strength_1_equals and sd-turbo",
    ),
    Plant(
        "control-end-off-by-one",
        "a ControlNet kept one step past control_end",
        "pipelines/control.py",
        "(step.index + 1) / step.count > p.control_end",
        "step.index / step.count > p.control_end",
        CONTROL_TESTS,
        "start_and_end",
    ),
    Plant(
        "multi-controlnet-first-only",
        "only the first of several ControlNets counted",
        "pipelines/control.py",
        "down = samples if not down else [a + b for a, b in zip(down, samples, strict=True)]",
        "down = samples if not down else down",
        CONTROL_TESTS,
        "two_controlnets",
    ),
    Plant(
        "control-picture-unnormalised",
        "the control picture given to ControlNets in levels (0 to 255), not 0 to 1",
        "pipelines/control.py",
        "images = torch.stack([s.pixels for s in states if s.pixels is not None]) / 255.0",
        "images = torch.stack([s.pixels for s in states if s.pixels is not None])",
        CONTROL_TESTS,
        "strength_1_equals and sd-turbo",
    ),
    Plant(
        "control-strength-1-img2img",
        "a controlled frame at strength 1 starting from the input (img2img) as well",
        "pipelines/diffusion.py",
        "None if controlled and request.params.strength >= 1.0 else image",
        "image",
        CONTROL_TESTS,
        "strength_1_equals and sd-turbo",
    ),
    Plant(
        "adapter-luma-mean",
        "a one-channel adapter given the mean of R, G and B instead of PIL's luma",
        "pipelines/control.py",
        "weighted: torch.Tensor = r * 19595 + g * 38470 + b * 7471 + 0x8000",
        "weighted: torch.Tensor = (r + g + b) * 21845 + 0x8000",
        CONTROL_TESTS,
        "t2i_adapter",
    ),
    Plant(
        "canny-thresholds",
        "canny edges at other thresholds than the README's",
        "pipelines/control.py",
        "CANNY_THRESHOLDS = (0.1, 0.2)",
        "CANNY_THRESHOLDS = (0.2, 0.4)",
        CONTROL_TESTS,
        "canny",
    ),
    Plant(
        "prompt-blend-unnormalised",
        "a linear prompt blend not divided by the sum of its weights",
        "pipelines/blending.py",
        "mixed = sum((x.float() * (w / total) for x, w in kept), torch.zeros(()))",
        "mixed = sum((x.float() * w for x, w in kept), torch.zeros(()))",
        BLEND_TESTS,
        "prompt_blend",
    ),
    Plant(
        "seed-blend-linear",
        "seed noises mixed linearly (their norm shrinks) instead of by slerp",
        "pipelines/diffusion.py",
        'mixed = [blend([d[i] for d in each], weights, "slerp") for i in range(count)]',
        'mixed = [blend([d[i] for d in each], weights, "linear") for i in range(count)]',
        BLEND_TESTS,
        "seed_blend",
    ),
    Plant(
        "transition-late",
        "a prompt transition one frame behind",
        "pipelines/prompts.py",
        "t = self.frame / frames",
        "t = (self.frame - 1) / frames",
        BLEND_TESTS,
        "transition",
    ),
]


def run_plant(plant: Plant, scratch: Path) -> dict[str, object]:
    copy = scratch / plant.name
    shutil.copytree(
        ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules", "__pycache__")
    )
    # The copy's kernels/ as livegen_kernels (pyproject's package-dir), ahead of the checkout's.
    (copy / "livegen_kernels").symlink_to(copy / "kernels", target_is_directory=True)
    target = copy / plant.file
    text = target.read_text()
    if text.count(plant.old) != 1:
        raise SystemExit(f"{plant.name}: {plant.old!r} is not once in {plant.file}; update it")
    target.write_text(text.replace(plant.old, plant.new))
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        + [plant.tests]
        + (["-k", plant.select] if plant.select else []),
        cwd=copy,
        capture_output=True,
        text=True,
        # The copy's packages, not the checkout's editable install, are the ones imported.
        env={**os.environ, "PYTHONPATH": str(copy)},
        check=False,
    )
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    caught_by = [line.split(" ")[1] for line in failed]
    return {
        "plant": plant.name,
        "error": plant.what,
        "caught": run.returncode == 1 and bool(caught_by),
        "caught_by": caught_by[0] if caught_by else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--only", nargs="*", help="plant names to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/planted_errors.json")
    args = parser.parse_args()
    plants = [p for p in PLANTS if not args.only or p.name in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="livegen-plants-") as scratch:
        for plant in plants:
            result = run_plant(plant, Path(scratch))
            results.append(result)
            print(json.dumps(result), flush=True)
    args.out.write_text(json.dumps({"plants": results}, indent=2) + "\n")
    missed = [r["plant"] for r in results if not r["caught"]]
    print(f"{len(results) - len(missed)} of {len(results)} planted errors caught", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
