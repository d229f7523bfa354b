"""What conditioning costs a frame: ControlNet, T2I-Adapter and prompt blends, on the CPU or a GPU.

Builds the full SD-Turbo architecture with random weights (as bench/pipeline.py,
with the TAESD-architecture tiny autoencoder), a ControlNet made from its UNet's
config with the published control-picture embedding, and a T2I-Adapter with the
published layout; loads them through livegen's own loading path and times whole
frames at 256 px, each phase in turn within every round (this VM's speed swings):

- ``plain``: a prompt edit, text to image (strength 1), no control;
- ``controlnet``: a prompt edit on an unchanged sketch with the ControlNet
  (strength 1): the control picture and the VAE encoder must not run again (cache
  counters), and the frame should cost no more than the UNet, ControlNet and
  decoder passes it runs (forward hooks time each);
- ``adapter``: the same with the T2I-Adapter, whose features are cached per
  sketch: target at most 1.15x ``plain``;
- ``blend``: a 4-prompt blend whose weights change every frame, each text cached
  once: target no text-encoder pass.

The prompt edits cycle through four prompts, cached after the first round, so the
text encoder stays out of every phase and the comparison is the conditioning's.
``--quick`` runs it in seconds on tiny models (tests/bench). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pipeline import DEFAULT_MODELS_DIR, REPO, RESULTS_DIR, SEED, Sketch, StageTimer, ensure_models
from stats import describe_machine, latency_ms

from pipelines import FrameRequest, PipelineOptions, create_pipeline

PROMPTS = ["a lighthouse at dawn", "a lighthouse at dusk", "a lighthouse at noon", "a harbour"]
PHASES = ("plain", "controlnet", "adapter", "blend")
ADAPTER_TARGET = 1.15


def ensure_controls(models_dir: Path, model: Path, size: str) -> tuple[Path, Path]:
    """A random ControlNet and T2I-Adapter for ``model``, built once and reused after."""
    sys.path.insert(0, str(REPO))
    from tests.models import save_controlnet, save_t2i_adapter

    full = size == "full"
    controlnet = models_dir / f"controlnet-{size}-seed{SEED}"
    adapter = models_dir / f"t2i-adapter-{size}-seed{SEED}"
    if not controlnet.is_dir():
        channels = (16, 32, 96, 256) if full else (8, 8, 16, 16)
        save_controlnet(controlnet, model, conditioning_channels=channels)
    if not adapter.is_dir():
        save_t2i_adapter(adapter, model, res_blocks=2 if full else 1)
    return controlnet, adapter


def phase_params(base: Any, phase: str, frame: int) -> Any:
    prompt = PROMPTS[frame % len(PROMPTS)]
    if phase == "controlnet":
        return base.updated({"prompt": prompt, "controlnet": ("lines",)})
    if phase == "adapter":
        return base.updated({"prompt": prompt, "controlnet": ("sketch",)})
    if phase == "blend":
        rng = np.random.default_rng(frame)
        weights = [float(w) for w in rng.uniform(0.1, 1.0, len(PROMPTS))]
        return base.updated(
            {"prompt": tuple(zip(PROMPTS, weights, strict=True)), "prompt_blend": "slerp"}
        )
    return base.updated({"prompt": prompt})


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = "tiny" if args.quick else "full"
    model, taesd = ensure_models(args.models_dir, size)
    controlnet, adapter = ensure_controls(args.models_dir, model, size)
    torch.set_num_threads(args.threads)
    pipeline = create_pipeline(
        "sd-turbo",
        PipelineOptions(
            model=str(model),
            device=args.device,
            dtype=args.dtype,
            tiny_vae=str(taesd),
            controlnets={"lines": str(controlnet)},
            t2i_adapters={"sketch": str(adapter)},
        ),
    )
    pipeline.warmup()
    px = 64 if args.quick else args.px
    base = pipeline.default_params.updated(
        {"width": px, "height": px, "steps": 1, "strength": 1.0, "seed": SEED}
    )
    sketch = Sketch(px, seed=4).pixels()
    structure = pipeline.structure
    stages = StageTimer(
        {
            "text_encoder": pipeline.prompts.text_encoders[0],
            "vae_encoder": pipeline.vae.encoder,
            "unet": pipeline.unet,
            "controlnet": structure.controlnets["lines"],
            "adapter": structure.adapters["sketch"],
            "vae_decoder": pipeline.vae.decoder,
        },
        pipeline.device,
    )
    states = {phase: pipeline.new_state() for phase in PHASES}
    # Warm every phase and cache every prompt and the sketch's control picture.
    for phase in PHASES:
        for frame in range(len(PROMPTS)):
            image = None if phase in ("plain", "blend") else sketch
            pipeline([FrameRequest(states[phase], phase_params(base, phase, frame), image)])
    counts_before = {n: (s.hits, s.misses) for n, s in pipeline.cache_stats().items()}
    seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
    stage_seconds: dict[str, dict[str, float]] = {
        phase: dict.fromkeys(stages.modules, 0.0) for phase in PHASES
    }
    for round_ in range(args.rounds):
        for phase in PHASES:
            image = None if phase in ("plain", "blend") else sketch
            for frame in range(args.frames):
                params = phase_params(base, phase, round_ * args.frames + frame + 1)
                with stages.active() as spent:
                    started = time.perf_counter()
                    pipeline([FrameRequest(states[phase], params, image)])
                    seconds[phase].append(time.perf_counter() - started)
                for name, value in spent.items():
                    stage_seconds[phase][name] += value
    counts_after = {n: (s.hits, s.misses) for n, s in pipeline.cache_stats().items()}
    frames = args.rounds * args.frames
    result: dict[str, Any] = {
        "benchmark": "conditioning",
        "machine": describe_machine(["torch", "diffusers", "kornia"]),
        "settings": {
            "size": size,
            "px": px,
            "device": str(pipeline.device),
            "dtype": str(pipeline.dtype).removeprefix("torch."),
            "threads": args.threads,
            "rounds": args.rounds,
            "frames_per_round": args.frames,
        },
        "phases": {},
        "caches": {
            name: {
                "hits": counts_after[name][0] - counts_before[name][0],
                "misses": counts_after[name][1] - counts_before[name][1],
            }
            for name in counts_after
        },
    }
    for phase in PHASES:
        per_frame = {name: round(1000 * s / frames, 3) for name, s in stage_seconds[phase].items()}
        frame_ms = latency_ms(seconds[phase])
        passes = per_frame["unet"] + per_frame["controlnet"] + per_frame["vae_decoder"]
        result["phases"][phase] = {
            "frame_ms": frame_ms,
            "stage_ms_per_frame": per_frame,
            "outside_model_passes_ms": round(frame_ms["mean"] - passes - per_frame["adapter"], 3),
        }
    plain = result["phases"]["plain"]["frame_ms"]["p50"]
    phases = result["phases"]
    caches = result["caches"]
    result["targets"] = {
        "controlnet_prompt_edit_no_preprocessing_no_encode": {
            "control_image_misses": caches["control_images"]["misses"],
            "vae_encoder_ms_per_frame": phases["controlnet"]["stage_ms_per_frame"]["vae_encoder"],
            "pass": caches["control_images"]["misses"] == 0
            and phases["controlnet"]["stage_ms_per_frame"]["vae_encoder"] == 0.0,
        },
        "adapter_vs_plain": {
            "ratio": round(phases["adapter"]["frame_ms"]["p50"] / plain, 3),
            "goal": ADAPTER_TARGET,
            "adapter_ms_per_frame": phases["adapter"]["stage_ms_per_frame"]["adapter"],
            "pass": phases["adapter"]["frame_ms"]["p50"] / plain <= ADAPTER_TARGET,
        },
        "blend_4_prompts_no_text_encoder": {
            "text_encoder_ms_per_frame": phases["blend"]["stage_ms_per_frame"]["text_encoder"],
            "prompt_embedding_misses": caches["prompt_embeddings"]["misses"],
            "pass": caches["prompt_embeddings"]["misses"] == 0
            and phases["blend"]["stage_ms_per_frame"]["text_encoder"] == 0.0,
        },
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--px", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--frames", type=int, default=4, help="frames per phase per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--quick", action="store_true", help="tiny models, 64 px: seconds")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "conditioning.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.frames = 1, 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for phase, numbers in result["phases"].items():
        p50, stages = numbers["frame_ms"]["p50"], numbers["stage_ms_per_frame"]
        print(f"{phase:>10}: p50 {p50:8.1f} ms  {stages}")
    for name, target in result["targets"].items():
        print(f"{name}: {'PASS' if target['pass'] else 'FAIL'} {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
