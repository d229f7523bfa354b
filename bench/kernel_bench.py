"""Each Triton kernel against its plain-torch reference: time per call and the largest error.

Shapes are a real frame's: a 720p camera frame (RGB or I420) to a 512 px model
input, a 512 px decoded image to uint8 RGB and to I420, two 512 px frames
compared by the similarity filter, and one sampler step on 64 x 64 latents with
a float16 model output, fresh noise and the feedback blend, at batch 1 and 16.
Times are p50/p95/p99 over ``--iterations`` calls after a warm-up, each call
synchronised (CUDA events would hide the launch cost a frame pays). The summary
adds up the kernels one frame needs, per frame at each batch: the issue's
"everything outside the UNet and autoencoder, at most 0.5 ms a frame".

Without CUDA only the references are timed, and each Triton case says why it
was skipped: the interpreter checks correctness (tests/kernels), not speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from stats import describe_machine, latency_ms

from livegen_kernels import dispatch
from livegen_kernels.frame_difference import frame_difference_ref, frame_difference_triton
from livegen_kernels.i420_input import i420_to_model_input_ref, i420_to_model_input_triton
from livegen_kernels.latent_step import coefficients, latent_step_ref, latent_step_triton
from livegen_kernels.model_input import rgb_to_model_input_ref, rgb_to_model_input_triton
from livegen_kernels.model_output import (
    model_output_to_i420_ref,
    model_output_to_i420_triton,
    model_output_to_rgb_ref,
    model_output_to_rgb_triton,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CAMERA = (720, 1280)
SIZE_PX = 512
LATENT_PX = SIZE_PX // 8
BATCHES = (1, 16)
ITERATIONS = 50
WARMUP = 5
# What one frame of SD-Turbo image to image runs outside the UNet and autoencoder.
PER_FRAME = ("rgb_to_model_input", "latent_step", "model_output_to_rgb", "frame_difference")


def cases(batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, tuple[Any, ...]]:
    """name -> (reference, kernel, args): the inputs one call takes, at ``batch``."""
    generator = torch.Generator().manual_seed(0)

    def uint8(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8).to(device)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    half = (CAMERA[0] // 2, CAMERA[1] // 2)
    latents = (batch, 4, LATENT_PX, LATENT_PX)
    table = coefficients(batch, device, blend=0.3, q=-1.0, r=0.5, s=0.5, u=0.2)
    size = (SIZE_PX, SIZE_PX)
    return {
        "rgb_to_model_input": (
            rgb_to_model_input_ref, rgb_to_model_input_triton,
            (uint8(batch, *CAMERA, 3), size, dtype, True),
        ),
        "i420_to_model_input": (
            i420_to_model_input_ref, i420_to_model_input_triton,
            (uint8(batch, *CAMERA), uint8(batch, *half), uint8(batch, *half), size, dtype, True),
        ),
        "model_output_to_rgb": (
            model_output_to_rgb_ref, model_output_to_rgb_triton,
            (normal(batch, 3, SIZE_PX, SIZE_PX).to(dtype),),
        ),
        "model_output_to_i420": (
            model_output_to_i420_ref, model_output_to_i420_triton,
            (normal(batch, 3, SIZE_PX, SIZE_PX).to(dtype),),
        ),
        "frame_difference": (
            frame_difference_ref, frame_difference_triton,
            (uint8(batch, SIZE_PX, SIZE_PX, 3), uint8(batch, SIZE_PX, SIZE_PX, 3)),
        ),
        "latent_step": (
            latent_step_ref, latent_step_triton,
            (normal(*latents), table, normal(*latents).to(dtype), normal(*latents),
             normal(*latents)),
        ),
    }  # fmt: skip


def timed(call: Callable[[], Any], device: torch.device, iterations: int) -> dict[str, float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(WARMUP):
        call()
    sync()
    seconds = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        sync()
        seconds.append(time.perf_counter() - started)
    return latency_ms(seconds)


def max_error(got: Any, expected: Any) -> float:
    """The largest absolute difference, over every output tensor (levels for uint8)."""
    pairs = zip(got, expected, strict=True) if isinstance(got, tuple) else [(got, expected)]
    return max(float((a.float() - b.float()).abs().max()) for a, b in pairs)


def run(
    device: torch.device, dtype: torch.dtype, iterations: int, batches: Sequence[int]
) -> dict[str, Any]:
    triton_ok = device.type == "cuda" and dispatch.triton_available()
    skipped = (
        None
        if triton_ok
        else f"Triton path skipped: it needs a CUDA device (this run is on {device.type}"
        + ("" if dispatch.triton_available() else ", and Triton does not import")
        + "); tests/kernels check it under the interpreter"
    )
    if skipped:
        print(skipped)
    results: dict[str, Any] = {}
    for batch in batches:
        for name, (reference, kernel, args) in cases(batch, device, dtype).items():
            entry: dict[str, Any] = {
                "reference_ms": timed(lambda: reference(*args), device, iterations)  # noqa: B023
            }
            if triton_ok:
                entry["triton_ms"] = timed(lambda: kernel(*args), device, iterations)  # noqa: B023
                entry["max_abs_error"] = max_error(kernel(*args), reference(*args))
                entry["speedup_p50"] = round(
                    entry["reference_ms"]["p50"] / entry["triton_ms"]["p50"], 2
                )
            else:
                entry["triton"] = skipped
            results.setdefault(name, {})[f"batch_{batch}"] = entry
            line = f"  {name} batch {batch}: reference p50 {entry['reference_ms']['p50']} ms"
            if triton_ok:
                line += (
                    f", triton p50 {entry['triton_ms']['p50']} ms, "
                    f"max error {entry['max_abs_error']:.3g}"
                )
            print(line)
    return results


def per_frame_ms(results: dict[str, Any], path: str, batches: Sequence[int]) -> dict[str, float]:
    """The kernels one frame runs, added up, per frame, at each batch."""
    return {
        f"batch_{batch}": round(
            sum(results[name][f"batch_{batch}"][path]["p50"] for name in PER_FRAME) / batch, 4
        )
        for batch in batches
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help="cuda (default here) or cpu")
    parser.add_argument(
        "--dtype", choices=("float16", "bfloat16", "float32"),
        help="the model's dtype, what inputs are written in and outputs read from (default: "
        "float16 on CUDA, float32 on a CPU, as livegen serve picks)",
    )  # fmt: skip
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="batch sizes, comma-separated"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON path (default bench/results/kernel_bench.json)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    batches = [int(batch) for batch in args.batches.split(",")]
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    # The references run as livegen runs them: never through the interpreter.
    results = run(device, dtype, args.iterations, batches)
    summary = {"reference_ms_per_frame": per_frame_ms(results, "reference_ms", batches)}
    if "triton_ms" in results[PER_FRAME[0]][f"batch_{batches[0]}"]:
        summary["triton_ms_per_frame"] = per_frame_ms(results, "triton_ms", batches)
    result = {
        "benchmark": "kernels",
        "machine": describe_machine(["torch", "triton"]),
        "settings": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "dtype": args.dtype,
            "camera_px": list(CAMERA),
            "size_px": SIZE_PX,
            "batches": batches,
            "iterations": args.iterations,
            "per_frame": list(PER_FRAME),
            "timing": "perf_counter around each call, synchronised; p50/p95/p99 in ms",
        },
        "kernels": results,
        "summary": summary,
    }
    out = args.out or RESULTS_DIR / "kernel_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
