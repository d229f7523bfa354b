"""How close to the device's limit: FLOPs per frame and the fraction of peak a run reached.

``torch.utils.flop_counter.FlopCounterMode`` counts the floating-point
operations of one UNet pass and one pass of each half of the autoencoder at a
frame size (matrix multiplies and convolutions, 2 FLOPs a multiply-add; the
elementwise rest is left out, as FLOP counters do). A measured time per frame
then gives achieved TFLOP/s, and over the device's peak, the fraction of peak:
what "engines reach 70-80% of peak" claims, checked.

Peaks are dense (no sparsity) tensor-core numbers from the vendors' data sheets
for float16 and bfloat16, and the plain float32 (not TF32) numbers; a CPU's
peak is cores x clock x FLOPs a cycle from its vector units (AVX-512 or AVX2
FMA, AMX for bfloat16). ``--peak-tflops`` overrides any of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense TFLOP/s: (float16/bfloat16 tensor cores, float32 without TF32). The first name
# that is part of torch.cuda.get_device_name() wins, so longer names come first.
GPU_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 67.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (989.0, 67.0),  # SXM
    "H20": (148.0, 44.0),
    "GH200": (989.0, 67.0),
    "B200": (2250.0, 80.0),
    "A100": (312.0, 19.5),
    "A10G": (70.0, 31.2),  # AWS's A10G; tensor-core fp16 with fp32 accumulate
    "A10": (125.0, 31.2),
    "L40S": (362.0, 91.6),
    "L40": (181.0, 90.5),
    "L4": (121.0, 30.3),
    "RTX 6000 Ada": (364.0, 91.1),
    "RTX 4090": (165.2, 82.6),  # fp16 with fp32 accumulate, as torch uses
    "RTX 3090": (71.0, 35.6),
    "T4": (65.0, 8.1),
    "V100": (125.0, 15.7),
}
# FLOPs a cycle per core: two FMA units of 16 (AVX-512) or 8 (AVX2) float32 lanes.
CPU_FLOPS_PER_CYCLE = {"avx512f": 64, "avx2": 32}
AMX_BF16_FLOPS_PER_CYCLE = 1024


def flops_per_call(pipeline: Any, height: int, width: int) -> dict[str, int]:
    """FLOPs of one UNet pass and of the VAE encoder and decoder, for one frame.

    Counted on copies of the architectures on the meta device: no memory, no compute,
    and none of the CPU's prepacked oneDNN layers (pipelines/prepack.py), which the
    counter does not see.
    """
    from diffusers.utils import logging as diffusers_logging

    factor = pipeline.vae_scale_factor
    embedding = pipeline.prompts(["a frame"])[0]
    verbosity = diffusers_logging.get_verbosity()
    # The copies are built from configs the loaders already checked: their notes are noise.
    diffusers_logging.set_verbosity_error()
    try:
        return _count(pipeline, embedding, height // factor, width // factor, height, width)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _count(
    pipeline: Any, embedding: Any, latent_height: int, latent_width: int, height: int, width: int
) -> dict[str, int]:
    with torch.device("meta"):
        unet = type(pipeline.unet).from_config(pipeline.unet.config).to(pipeline.dtype)
        vae = type(pipeline.vae).from_config(pipeline.vae.config).to(pipeline.vae.dtype)
        shape = (1, pipeline.latent_channels, latent_height, latent_width)
        latents = torch.zeros(shape, dtype=pipeline.dtype)
        image = torch.zeros((1, 3, height, width), dtype=pipeline.vae.dtype)
        hidden = torch.zeros((1, *embedding.hidden.shape), dtype=pipeline.dtype)
        added = None
        if embedding.pooled is not None:  # SDXL's size conditioning
            added = {
                "text_embeds": torch.zeros((1, *embedding.pooled.shape), dtype=pipeline.dtype),
                "time_ids": torch.zeros((1, 6), dtype=pipeline.dtype),
            }
        timestep = torch.tensor([499.0])
        runs = {
            "unet": lambda: unet(
                latents, timestep, encoder_hidden_states=hidden, added_cond_kwargs=added
            ),
            "vae_encoder": lambda: vae.encode(image),
            "vae_decoder": lambda: vae.decode(latents.to(vae.dtype)),
        }
        counts = {}
        for name, run in runs.items():
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                run()
            counts[name] = int(counter.get_total_flops())
    return counts


def _cpu_clock_ghz() -> float | None:
    limit = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if limit.exists():
        return int(limit.read_text()) / 1e6
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1]) / 1000
    return None


def peak_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """The device's peak for ``dtype`` and where the number comes from (None: unknown)."""
    low_precision = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, single) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return (half if low_precision else single), f"data sheet of {key} ({name})"
        return None, f"{name} is not in bench/flops.py's table: pass --peak-tflops"
    if device.type == "cpu":
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        clock = _cpu_clock_ghz()
        cores = len(os.sched_getaffinity(0))
        if clock is None:
            return None, "no CPU clock found: pass --peak-tflops"
        if dtype == torch.bfloat16 and "amx_bf16" in flags:
            per_cycle, unit = AMX_BF16_FLOPS_PER_CYCLE, "AMX bf16"
        else:
            unit = next((f for f in CPU_FLOPS_PER_CYCLE if f in flags), None)
            per_cycle = CPU_FLOPS_PER_CYCLE[unit] if unit else 16
            unit = unit or "SSE"
        tflops = cores * clock * per_cycle / 1000
        return _significant(
            tflops
        ), f"{cores} cores x {clock:.2f} GHz x {per_cycle} FLOPs/cycle ({unit})"
    return None, f"no peak known for {device.type}: pass --peak-tflops"


def _significant(value: float) -> float:
    return float(f"{value:.4g}")


def report(
    pipeline: Any, height: int, width: int, steps: int, override_tflops: float | None
) -> dict[str, Any]:
    """FLOPs per frame and the peak that fractions are taken of (JSON-ready)."""
    counts = flops_per_call(pipeline, height, width)
    peak, source = peak_tflops(pipeline.device, pipeline.dtype)
    if override_tflops is not None:
        peak, source = override_tflops, "--peak-tflops"
    return {
        "gflops_per_call": {name: _significant(n / 1e9) for name, n in counts.items()},
        # A frame runs the UNet once a step; the encoder only for a new input image.
        "gflops_per_frame": {
            "unet": _significant(counts["unet"] * steps / 1e9),
            "vae_encoder": _significant(counts["vae_encoder"] / 1e9),
            "vae_decoder": _significant(counts["vae_decoder"] / 1e9),
        },
        "peak_tflops": peak,
        "peak_source": source,
        "counted": "torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions and "
        "attention, 2 FLOPs a multiply-add; elementwise work not counted",
    }


def fraction_of_peak(
    flops_report: dict[str, Any], stage_ms: dict[str, float], frame_ms: float
) -> dict[str, float | None]:
    """Achieved fraction of peak for each timed stage and for the whole frame."""
    peak = flops_report["peak_tflops"]
    per_frame = flops_report["gflops_per_frame"]
    if not peak:
        return {}

    def fraction(gflops: float, ms: float) -> float | None:
        return _significant(gflops / ms / peak) if ms > 0 else None  # GFLOP/ms = TFLOP/s

    fractions = {
        name: fraction(per_frame[name], stage_ms[name]) for name in per_frame if stage_ms.get(name)
    }
    fractions["frame"] = fraction(sum(per_frame.values()), frame_ms)
    return fractions
