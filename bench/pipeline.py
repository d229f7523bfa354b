"""Per-frame time of livegen's SD-Turbo pipeline against stock diffusers, on the CPU or a GPU.

Builds the full SD-Turbo architecture with random weights (``tests/models.py``;
nothing is downloaded), loads it once through livegen's own loading path
(``create_pipeline("sd-turbo", ...)`` with the TAESD-architecture tiny
autoencoder) and once as diffusers' ``AutoPipelineForImage2Image``, and times
whole frames at 256 px in the same process: (a) a prompt-edit loop, a fixed
sketch with a prompt that changes every frame as if typed; (b) a sketch-edit
loop, a fixed prompt with a sketch that gains a stroke every frame. Stock
diffusers runs twice, with the model's full VAE and with the same tiny
autoencoder livegen uses, so that the gain from livegen's caches shows apart
from the gain from the autoencoder. Both do the same denoising work: one UNet
pass at t=499. Then the throughput of 1, 2 and 4 sessions batched into one call
against the same requests one by one, and 1,000 frames with a new prompt each
at 64 px with the process's RSS sampled (the prompt LRU must stay bounded).
The issue's targets are for the CPU at 256 px; ``--device cuda --size 512``
measures the same loops on a GPU (``--compile`` adds livegen's torch.compile).
``--quick`` runs every phase in seconds on tiny models, for tests/bench.
FLOPs per frame of the UNet and autoencoder and the fraction of the device's
peak each batched run reached come from bench/flops.py. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import flops
import numpy as np
import psutil
import torch
from PIL import Image, ImageDraw
from stats import describe_machine, latency_ms

from pipelines import FrameRequest, PipelineOptions, create_pipeline
from pipelines.loading import resolve_dtype

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS_DIR = Path("/tmp/livegen-bench-models")
SEED = 0
SIZE_PX = 256
FRAMES = 8
WARMUP_FRAMES = 2
ROUNDS = 16  # this VM's speed swings 2x within a minute: more rounds, a steadier median
SESSION_COUNTS = (1, 2, 4)
# livegen: ``steps`` counts the UNet passes run, from strength * T down (t=499).
# diffusers img2img runs int(num_inference_steps * strength) passes of a trailing
# schedule over num_inference_steps: int(2 * 0.5) = 1 pass, also at t=499.
STEPS = 1
STRENGTH = 0.5
STOCK_STEPS = 2
MEMORY_FRAMES = 1000
MEMORY_SIZE_PX = 64
MEMORY_SAMPLE_EVERY = 50
# --quick: a prompt LRU this small fills within the first memory sample, so the memory
# check runs its course in 100 frames instead of 1,000.
QUICK_PROMPT_CACHE = 16
QUICK_SIZE_PX = 64  # the smallest side an SD UNet and VAE divide; frames take milliseconds
# The anonymous memory (heap, tensors) may grow this much after the LRU is full: well under
# what an unbounded prompt cache would add over 700 more prompts (about 210 MiB).
MEMORY_GROWTH_LIMIT_MIB = 50.0
PROMPT_EDIT_TARGET = 3.0
SKETCH_EDIT_TARGET = 2.0
BATCH_TARGET = 1.2
BATCH_TARGET_SESSIONS = 4
MAX_OTHER_PCT = 25.0
QUIET_WAIT_S = 180.0
SPARE_FRAMES = 2  # up to this many times --frames more inputs, for rejected noisy frames
# Typed one character at a time, each distinct prefix is one frame's prompt.
TYPED_TEXT = (
    "a red fox sitting in a snowy pine forest at dusk, soft warm light through the trees, "
    "watercolor illustration with loose brush strokes, muted blue shadows, a small wooden "
    "cabin in the distance with smoke rising from the chimney, highly detailed, trending"
)
FIXED_PROMPT = "a watercolor painting of a lighthouse on a rocky coast, stormy sky"
SESSION_PROMPTS = (
    "a cat sleeping on a windowsill, oil painting",
    "a futuristic city skyline at night, neon lights",
    "a bowl of fruit on a table, still life, charcoal",
    "a mountain lake at sunrise, photograph",
)
STAGES = ("text_encoder", "vae_encoder", "unet", "vae_decoder")


# Inputs.


class Sketch:
    """A white canvas with dark strokes; ``add_stroke`` draws one more, deterministically."""

    def __init__(self, size_px: int, seed: int, strokes: int = 5) -> None:
        self.size_px = size_px
        self.rng = np.random.default_rng([SEED, seed])
        self.image = Image.new("RGB", (size_px, size_px), "white")
        self.draw = ImageDraw.Draw(self.image)
        for _ in range(strokes):
            self.add_stroke(length=size_px // 2)

    def add_stroke(self, length: int | None = None) -> np.ndarray:
        """Draw a stroke (a short one by default) and return the sketch as (H, W, 3) uint8."""
        size = self.size_px
        length = length or size // 8
        points = [tuple(float(v) for v in self.rng.uniform(0.1 * size, 0.9 * size, 2))]
        for _ in range(3):
            x, y = points[-1]
            dx, dy = self.rng.uniform(-length / 3, length / 3, 2)
            points.append(
                (float(np.clip(x + dx, 0, size - 1)), float(np.clip(y + dy, 0, size - 1)))
            )
        shade = int(self.rng.integers(0, 80))
        self.draw.line(points, fill=(shade, shade, shade), width=max(1, size // 64), joint="curve")
        return self.pixels()

    def pixels(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()


def typed_prompts(count: int) -> list[str]:
    """``count`` distinct prompts, as someone types: "a", "a r", "a re", "a red", ..."""
    prompts: list[str] = []
    for end in range(1, len(TYPED_TEXT) + 1):
        prompt = TYPED_TEXT[:end].rstrip(" ,")
        if prompt and (not prompts or prompts[-1] != prompt):
            prompts.append(prompt)
    if count > len(prompts):
        raise ValueError(f"the typed text gives {len(prompts)} distinct prompts, {count} wanted")
    return prompts[:count]


# Models.


def ensure_models(models_dir: Path, size: str) -> tuple[Path, Path]:
    """The random-weight SD-Turbo and TAESD folders, built once and reused after."""
    folders = (models_dir / f"sd-turbo-{size}-seed{SEED}", models_dir / f"taesd-{size}-seed{SEED}")
    missing = [folder for folder in folders if not folder.is_dir()]
    if missing:
        # tests/ is not an installed package: import it from the repository.
        sys.path.insert(0, str(REPO))
        from tests.models import save_model, save_tiny_autoencoder

        builders: dict[Path, Callable[[Path], Any]] = {
            folders[0]: lambda p: save_model(p, family="sd-turbo", size=size, seed=SEED),
            folders[1]: lambda p: save_tiny_autoencoder(p, SEED, size=size),
        }
        for folder in missing:
            started = time.perf_counter()
            # Built beside the final folder and renamed, so a killed build is never reused.
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            builders[folder](partial)
            partial.rename(folder)
            print(f"  built {folder} in {time.perf_counter() - started:.1f} s")
    return folders


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Timing.


@dataclass
class StageTimer:
    """Seconds spent inside each named module's forward, by forward hooks.

    A batch's lanes (pipelines/lanes.py) run modules at once on several threads:
    each thread's time counts, so stages can add up to more than the wall time.
    """

    modules: Mapping[str, torch.nn.Module]
    # On a GPU, wait for the queued kernels at each edge, or the time lands elsewhere.
    device: torch.device = torch.device("cpu")
    seconds: dict[str, float] = field(default_factory=dict)
    _started: dict[tuple[str, int], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def active(self) -> Iterator[dict[str, float]]:
        """Time the modules for the block; yields their seconds, filled in when it ends."""
        self.seconds = dict.fromkeys(self.modules, 0.0)
        handles = []
        for name, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(self._pre(name)))
            handles.append(module.register_forward_hook(self._post(name)))
        try:
            yield self.seconds
        finally:
            for handle in handles:
                handle.remove()

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._sync()
            self._started[name, threading.get_ident()] = time.perf_counter()

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._sync()
            elapsed = time.perf_counter() - self._started.pop((name, threading.get_ident()))
            with self._lock:
                self.seconds[name] += elapsed

        return hook

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class OtherLoad:
    """CPU the rest of the machine used since the start, in percent of one core.

    Machine-wide busy time (/proc/stat, steal included) less this process's CPU time:
    other processes on these cores make every number noisy, and this shows when.
    """

    def __init__(self) -> None:
        self.machine, self.own, self.started = (
            _machine_busy_s(),
            time.process_time(),
            time.perf_counter(),
        )

    def pct(self) -> float:
        elapsed = time.perf_counter() - self.started
        other = (_machine_busy_s() - self.machine) - (time.process_time() - self.own)
        return round(max(0.0, 100.0 * other / elapsed), 1)


def _machine_busy_s() -> float:
    # user nice system idle iowait irq softirq steal
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class UnetPasses:
    """The timestep of every UNet forward while active: proof of equal denoising work."""

    def __init__(self, unet: torch.nn.Module | None) -> None:
        self.unet = unet  # None: count nothing (a compiled UNet, see livegen_stages)
        self.timesteps: list[list[float]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[list[list[float]]]:
        self.timesteps = []

        def hook(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            self.timesteps.append(torch.as_tensor(t).float().flatten().tolist())

        if self.unet is None:
            yield self.timesteps
            return
        handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield self.timesteps
        finally:
            handle.remove()


@dataclass
class Runner:
    """One way of making a frame: a call per (prompt, sketch) and the modules it runs."""

    name: str
    stages: StageTimer
    unet: torch.nn.Module | None  # None: its UNet passes are not counted

    def prepare(self) -> None:
        """Set up before a frame, outside the timed call."""

    def frame(self, prompt: str, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class LivegenRunner(Runner):
    pipeline: Any = None
    params: Any = None
    state: Any = None

    def frame(self, prompt: str, image: np.ndarray) -> np.ndarray:
        params = replace(self.params, prompt=prompt)
        output: np.ndarray = self.pipeline([FrameRequest(self.state, params, image)])[0]
        return output


@dataclass
class StockRunner(Runner):
    pipe: Any = None
    vae: Any = None  # swapped into ``pipe`` before each frame

    def prepare(self) -> None:
        if self.pipe.vae is not self.vae:
            self.pipe.vae = self.vae

    def frame(self, prompt: str, image: np.ndarray) -> np.ndarray:
        # What a diffusers user would write; the float image to uint8 is part of the frame.
        images = self.pipe(
            prompt=prompt,
            image=Image.fromarray(image),
            num_inference_steps=STOCK_STEPS,
            strength=STRENGTH,
            guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(SEED),
            output_type="np",
        ).images
        return np.asarray((images[0] * 255).round().clip(0, 255), dtype=np.uint8)


def livegen_stages(pipeline: Any) -> StageTimer:
    if pipeline.options.compile:
        # Hooks added and removed around a compiled UNet would make it recompile, then
        # run eagerly: a compiled run is timed whole.
        return StageTimer({}, pipeline.device)
    return StageTimer(
        {
            "text_encoder": pipeline.prompts.text_encoders[0],
            "vae_encoder": pipeline.vae.encoder,
            "unet": pipeline.unet,
            "vae_decoder": pipeline.vae.decoder,
        },
        pipeline.device,
    )


def stock_stages(pipe: Any, vae: Any) -> StageTimer:
    return StageTimer(
        {
            "text_encoder": pipe.text_encoder,
            "vae_encoder": vae.encoder,
            "unet": pipe.unet,
            "vae_decoder": vae.decoder,
        },
        pipe.device,
    )


def cache_counts(pipeline: Any) -> dict[str, tuple[int, int]]:
    return {name: (s.hits, s.misses) for name, s in pipeline.cache_stats().items()}


def cache_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, dict[str, int]]:
    return {
        name: {"hits": hits - before[name][0], "misses": misses - before[name][1]}
        for name, (hits, misses) in after.items()
    }


def summarise(
    seconds: Sequence[float], stage_seconds: Sequence[dict[str, float]], loads: Sequence[float]
) -> dict[str, Any]:
    stats = latency_ms(seconds)
    total_ms = 1000.0 * float(np.mean(seconds))
    stage_ms = {
        s: 1000.0 * float(np.mean([f[s] for f in stage_seconds]))
        for s in STAGES
        if s in stage_seconds[0]
    }
    stage_ms["other"] = total_ms - sum(stage_ms.values())
    return {
        "n": len(seconds),
        "ms": stats,
        "fps": round(1.0 / float(np.mean(seconds)), 4),
        # Means per frame of the time inside each model, from forward hooks; "other" is the
        # rest of the frame (tokenising, preprocessing, sampler math, conversions).
        "stage_mean_ms": {name: round(ms, 1) for name, ms in stage_ms.items()},
        "other_load_pct": {"mean": round(float(np.mean(loads)), 1), "max": max(loads)},
    }


@dataclass
class Quiet:
    """Measure on a quiet machine: wait for one before each timed call, reject a noisy one.

    Other processes on these few cores slow a frame several times over (torch's threads
    wait for each other), so a timed call only counts when the rest of the machine used
    less than ``max_other_pct`` of a core meanwhile; the loops make more frames instead.
    """

    max_other_pct: float
    max_wait_s: float
    waited_s: float = 0.0

    def wait(self) -> None:
        """Until the rest of the machine used under ``max_other_pct`` for 1 s, or a timeout."""
        started = time.perf_counter()
        while time.perf_counter() - started < self.max_wait_s:
            load = OtherLoad()
            time.sleep(1.0)
            if load.pct() < self.max_other_pct:
                break
        waited = time.perf_counter() - started
        self.waited_s += waited
        if waited > 5:
            print(f"    waited {waited:.0f} s for a quiet machine")

    def ok(self, other_pct: float) -> bool:
        return other_pct < self.max_other_pct


def edit_loop(
    runners: Sequence[Runner],
    inputs: Sequence[tuple[str, np.ndarray]],
    frames: int,
    warmup: int,
    livegen: Any,
    quiet: Quiet,
) -> dict[str, Any]:
    """Every runner makes the same frames in turn, frame by frame (drift hits all alike).

    A runner stops once it has ``frames`` quiet frames after the warmup; ``inputs`` holds
    spares for the noisy ones.
    """
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    stages: dict[str, list[dict[str, float]]] = {r.name: [] for r in runners}
    loads: dict[str, list[float]] = {r.name: [] for r in runners}
    rejected: dict[str, list[float]] = {r.name: [] for r in runners}
    passes: dict[str, list[list[float]]] = {}
    caches_before = None
    for index, (prompt, image) in enumerate(inputs):
        if index == warmup:
            caches_before = cache_counts(livegen)
        lap: dict[str, str] = {}
        for runner in runners:
            if len(times[runner.name]) >= frames:
                continue
            runner.prepare()
            counter = UnetPasses(runner.unet)
            if index >= warmup:
                quiet.wait()
            load = OtherLoad()
            with runner.stages.active() as stage_s, counter.active() as timesteps:
                started = time.perf_counter()
                output = runner.frame(prompt, image)
                elapsed = time.perf_counter() - started
            other = load.pct()
            if output.shape != image.shape or output.dtype != np.uint8:
                raise RuntimeError(f"{runner.name} made {output.shape} {output.dtype}")
            passes.setdefault(runner.name, timesteps)
            note = ""
            if index >= warmup and quiet.ok(other):
                times[runner.name].append(elapsed)
                stages[runner.name].append(dict(stage_s))
                loads[runner.name].append(other)
            elif index >= warmup:
                rejected[runner.name].append(round(elapsed, 3))
                note = ", rejected"
            lap[runner.name] = f"{1000 * elapsed:.0f} ms (other load {other:.0f}%{note})"
        if not lap:
            break
        warm = " (warmup)" if index < warmup else ""
        print(f"    frame {index}{warm}: " + ", ".join(f"{n} {t}" for n, t in lap.items()))
    assert caches_before is not None
    cases = {}
    for name in times:
        if not times[name]:
            raise RuntimeError(f"{name}: no quiet frame in {len(inputs)}; see --max-other-load")
        cases[name] = summarise(times[name], stages[name], loads[name])
        cases[name]["rejected_noisy_s"] = rejected[name]
    cases["livegen"]["cache"] = cache_delta(caches_before, cache_counts(livegen))
    return {"cases": cases, "unet_timesteps_first_frame": passes}


# Batched throughput.


def batched_throughput(
    pipeline: Any, base: Any, sessions: int, rounds: int, size_px: int, quiet: Quiet
) -> dict[str, Any]:
    """Rounds of ``sessions`` new sketches, one call (batched) or one call each, ABAB.

    Each mode runs until it has ``rounds`` quiet rounds (at most three times as many).
    """
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("batched", "one_by_one"):
        modes[mode] = {
            "states": [pipeline.new_state() for _ in range(sessions)],
            "sketches": [Sketch(size_px, seed=100 + s) for s in range(sessions)],
            "params": [replace(base, prompt=SESSION_PROMPTS[s]) for s in range(sessions)],
            "seconds": [],
            "stages": [],
            "loads": [],
            "rejected": [],
        }
    timer = livegen_stages(pipeline)

    def run_round(mode: str) -> tuple[float, dict[str, float], float]:
        m = modes[mode]
        requests = [
            FrameRequest(state, params, sketch.add_stroke())
            for state, params, sketch in zip(m["states"], m["params"], m["sketches"], strict=True)
        ]
        load = OtherLoad()
        with timer.active() as stage_s:
            started = time.perf_counter()
            if mode == "batched":
                outputs = pipeline(requests)
            else:
                outputs = [pipeline([request])[0] for request in requests]
            elapsed = time.perf_counter() - started
        if len(outputs) != sessions:
            raise RuntimeError(f"{mode}: {len(outputs)} outputs for {sessions} requests")
        return elapsed, dict(stage_s), load.pct()

    for mode in modes:  # warmup: fills the prompt cache, allocates for this batch size
        run_round(mode)
    before = cache_counts(pipeline)
    for _ in range(3 * rounds):
        for mode, m in modes.items():
            if len(m["seconds"]) >= rounds:
                continue
            quiet.wait()
            elapsed, stage_s, other = run_round(mode)
            if quiet.ok(other):
                m["seconds"].append(elapsed)
                m["stages"].append({name: s / sessions for name, s in stage_s.items()})
                m["loads"].append(other)
            else:
                m["rejected"].append(round(elapsed, 3))
            print(
                f"    {sessions} sessions {mode}: {elapsed:.2f} s (other load {other:.0f}%"
                f"{'' if quiet.ok(other) else ', rejected'})"
            )
    result: dict[str, Any] = {"sessions": sessions}
    for mode, m in modes.items():
        if not m["seconds"]:
            raise RuntimeError(f"{sessions} sessions {mode}: no quiet round; see --max-other-load")
        median_s = float(np.median(m["seconds"]))
        result[mode] = {
            "fps": round(sessions / median_s, 4),
            "rounds": len(m["seconds"]),
            "round_s": [round(s, 3) for s in m["seconds"]],
            "median_round_s": round(median_s, 3),
            "other_load_pct": m["loads"],
            "rejected_noisy_s": m["rejected"],
            "stage_mean_ms_per_frame": {
                s: round(1000.0 * float(np.mean([r[s] for r in m["stages"]])), 1)
                for s in STAGES
                if s in m["stages"][0]
            },
        }
    result["ratio"] = round(result["batched"]["fps"] / result["one_by_one"]["fps"], 3)
    result["cache"] = cache_delta(before, cache_counts(pipeline))
    print(
        f"  {sessions} sessions: batched {result['batched']['fps']:.3f} fps, one by one "
        f"{result['one_by_one']['fps']:.3f} fps, ratio {result['ratio']}"
    )
    return result


# Memory.


def memory_mib(process: psutil.Process) -> dict[str, float]:
    """Resident MiB, all and anonymous, once the heap's free pages are given back to the OS.

    Without the trim, memory freed earlier (the stock pipeline's) stays resident and new
    allocations reuse it unseen, so a leak could hide under a flat RSS. RSS also counts
    the pages of the memory-mapped weight files, which the kernel may drop and read back;
    the anonymous part (RssAnon: heap, tensors) is where a cache that grows would show.
    """
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc).malloc_trim(0)  # glibc only
    status = Path(f"/proc/{process.pid}/status").read_text()
    anon = next(line for line in status.splitlines() if line.startswith("RssAnon:"))
    return {
        "rss_mib": round(process.memory_info().rss / 2**20, 1),
        "anon_mib": round(int(anon.split()[1]) / 1024, 1),
    }


def memory_filled_at(cache_entries: int) -> int:
    """The first sampled frame by which a prompt LRU of ``cache_entries`` is full (256: 300)."""
    return MEMORY_SAMPLE_EVERY * (cache_entries // MEMORY_SAMPLE_EVERY + 1)


def memory_growth(pipeline: Any, base: Any, frames: int, size_px: int) -> dict[str, Any]:
    """``frames`` frames, each with a new prompt, RSS sampled every few frames."""
    filled_at = memory_filled_at(pipeline.prompts.cache.max_entries)
    process = psutil.Process()
    sketch = Sketch(size_px, seed=7).pixels()
    params = replace(base, width=size_px, height=size_px)
    state = pipeline.new_state()
    prompts = [f"{FIXED_PROMPT}, variation {i}" for i in range(frames)]
    samples: list[dict[str, Any]] = [{"frame": 0, "t_s": 0.0, **memory_mib(process)}]
    started = time.perf_counter()
    load = OtherLoad()
    for index, prompt in enumerate(prompts, start=1):
        pipeline([FrameRequest(state, replace(params, prompt=prompt), sketch)])
        if index % MEMORY_SAMPLE_EVERY == 0 or index == frames:
            other = load.pct()
            elapsed = time.perf_counter() - started
            sample = {"frame": index, "t_s": round(elapsed, 1), **memory_mib(process)}
            samples.append(sample | {"other_load_pct": other})
            print(
                f"    frame {index}: RSS {sample['rss_mib']:.0f} MiB, anonymous "
                f"{sample['anon_mib']:.0f} MiB, {elapsed:.0f} s, other load {other:.0f}%"
            )
            load = OtherLoad()
    seconds = time.perf_counter() - started
    by_frame = {s["frame"]: s for s in samples}
    filled, end = by_frame[filled_at], samples[-1]
    cache = pipeline.prompts.cache
    entry = pipeline.prompts(prompts[-1:])[0]  # cached: one embedding's size, for scale
    entry_bytes = entry.hidden.numel() * entry.hidden.element_size()
    result: dict[str, Any] = {
        "frames": frames,
        "filled_at_frame": filled_at,
        "size_px": size_px,
        "why_this_size": "growth would come from the caches (the prompt LRU, per-session "
        "tensors), not from the resolution: a small frame measures the same thing faster",
        "memory": "process RSS and its anonymous part (RssAnon), after gc.collect() and "
        "glibc malloc_trim(0), so that freed heap pages do not hide growth",
        "seconds": round(seconds, 1),
        "fps": round(frames / seconds, 3),
    }
    for kind in ("rss_mib", "anon_mib"):
        result[kind] = {
            "frame_0": samples[0][kind],
            f"frame_{filled_at}": filled[kind],
            "end": end[kind],
            "max": max(s[kind] for s in samples),
        }
    result |= {
        "growth_after_filled_mib": round(end["rss_mib"] - filled["rss_mib"], 1),
        "anon_growth_after_filled_mib": round(end["anon_mib"] - filled["anon_mib"], 1),
        "prompt_cache": {
            "entries_at_end": len(cache),
            "max_entries": cache.max_entries,
            "mib_at_end": round(len(cache) * entry_bytes / 2**20, 1),
        },
        "prompt_embedding_kib": round(entry_bytes / 1024, 1),
        # What an unbounded cache would have added after the LRU filled, for scale.
        "unbounded_cache_would_add_mib": round((frames - filled_at) * entry_bytes / 2**20, 1),
        "samples": samples,
    }
    return result


# Report.


def machine_info() -> dict[str, Any]:
    packages = ("torch", "diffusers", "transformers", "numpy", "pillow", "psutil")
    return describe_machine(packages) | {
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def ratio(result: dict[str, Any], loop: str, stock: str) -> float:
    cases = result[loop]["cases"]
    return round(cases[stock]["ms"]["p50"] / cases["livegen"]["ms"]["p50"], 3)


def targets(result: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    for loop, goal in (("prompt_edit", PROMPT_EDIT_TARGET), ("sketch_edit", SKETCH_EDIT_TARGET)):
        value = result["ratios"][loop]["stock_full_vae"]
        goals[f"{loop}_speedup"] = {
            "value": value,
            "goal": goal,
            "rule": "stock diffusers (full VAE) p50 / livegen p50 >= goal",
            "pass": value >= goal,
        }
    batched = next((b for b in result["batched"] if b["sessions"] == BATCH_TARGET_SESSIONS), None)
    if batched is None:  # --sessions without 4
        return goals
    goals[f"batched_{BATCH_TARGET_SESSIONS}_sessions"] = {
        "value": batched["ratio"],
        "goal": BATCH_TARGET,
        "rule": "median fps of one call with 4 requests / of 4 calls of 1 request >= goal",
        "pass": batched["ratio"] >= BATCH_TARGET,
    }
    if "memory" in result:
        memory = result["memory"]
        value = memory["anon_growth_after_filled_mib"]
        goals["memory_bounded"] = {
            "value": value,
            "goal": MEMORY_GROWTH_LIMIT_MIB,
            "rule": "anonymous MiB (RssAnon) at the end - at frame "
            f"{memory['filled_at_frame']} < goal, over {memory['frames']} frames with a new "
            "prompt each",
            "pass": value < MEMORY_GROWTH_LIMIT_MIB,
            # For scale: what an unbounded prompt cache would have added meanwhile.
            "unbounded_cache_would_add_mib": memory["unbounded_cache_would_add_mib"],
            "rss_growth_mib": memory["growth_after_filled_mib"],
        }
    return goals


def print_report(result: dict[str, Any]) -> None:
    print(
        f"{'loop':<12} {'case':<15} {'n':>3} {'p50':>8} {'p95':>8} {'p99':>8} {'fps':>7} "
        f"{'other%':>6}  stage means ms (text/vae enc/unet/vae dec/other)"
    )
    for loop in ("prompt_edit", "sketch_edit"):
        for name, case in result[loop]["cases"].items():
            ms, st = case["ms"], case["stage_mean_ms"]
            stage_text = "/".join(f"{st[s]:.0f}" if s in st else "-" for s in (*STAGES, "other"))
            print(
                f"{loop:<12} {name:<15} {case['n']:>3} {ms['p50']:>8.0f} {ms['p95']:>8.0f} "
                f"{ms['p99']:>8.0f} {case['fps']:>7.3f} {case['other_load_pct']['mean']:>6.0f}  "
                f"{stage_text}"
            )
    for loop, ratios in result["ratios"].items():
        print(
            f"{loop}: stock full VAE / livegen {ratios['stock_full_vae']}x, "
            f"stock tiny VAE / livegen {ratios['stock_tiny_vae']}x"
        )
    report = result["flops"]
    print(
        "GFLOPs a frame: "
        + ", ".join(f"{name} {g}" for name, g in report["gflops_per_frame"].items())
        + f"; peak {report['peak_tflops']} TFLOP/s ({report['peak_source']})"
    )
    for b in result["batched"]:
        peak = b["batched"].get("fraction_of_peak", {})
        print(
            f"{b['sessions']} sessions: batched {b['batched']['fps']:.3f} fps, one by one "
            f"{b['one_by_one']['fps']:.3f} fps, ratio {b['ratio']}; fraction of peak "
            + (", ".join(f"{name} {value}" for name, value in peak.items()) or "unknown")
        )
    if "memory" in result:
        memory = result["memory"]
        rss, anon = memory["rss_mib"], memory["anon_mib"]
        print(
            f"memory: {memory['frames']} frames at {memory['size_px']} px in "
            f"{memory['seconds']:.0f} s; prompt cache {memory['prompt_cache']['entries_at_end']} "
            "entries; MiB RSS / anonymous: "
            + ", ".join(f"{k} {v} / {anon[k]}" for k, v in rss.items())
        )
    for name, goal in result["targets"].items():
        print(
            f"{name}: {goal['value']} (goal {goal['goal']}): {'PASS' if goal['pass'] else 'FAIL'}"
        )


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=FRAMES, help="measured frames per loop")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measured rounds per mode")
    parser.add_argument(
        "--size",
        type=int,
        help=f"frame side in px (default {SIZE_PX}; {QUICK_SIZE_PX} with --quick)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (the targets' device), cuda, mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="for both pipelines; auto (the server's default) = float16 on a GPU, bfloat16 "
        "on a CPU with AMX, float32 on other CPUs",
    )
    parser.add_argument(
        "--compile", action="store_true", help="livegen's --compile (torch.compile of the UNet)"
    )
    parser.add_argument(
        "--cpu-lanes",
        type=int,
        default=PipelineOptions().cpu_lanes,
        help="livegen's --cpu-lanes (1: a batch in one call, as before lanes)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="where the random-weight model folders are built once and reused",
    )
    parser.add_argument("--skip-memory", action="store_true", help="leave out the memory run")
    parser.add_argument("--memory-frames", type=int, default=MEMORY_FRAMES)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run in seconds on tiny random models at {QUICK_SIZE_PX} px (meaningless "
        f"numbers): 2 frames, 1 round, a {QUICK_PROMPT_CACHE}-prompt LRU over "
        f"{memory_filled_at(QUICK_PROMPT_CACHE) + MEMORY_SAMPLE_EVERY} memory frames, no "
        "waiting for a quiet machine",
    )
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=MAX_OTHER_PCT,
        metavar="PCT",
        help="reject a timed frame or round while other processes used this much of a core "
        "(percent) and make another; 1000 keeps every one",
    )
    parser.add_argument(
        "--sessions",
        default=",".join(map(str, SESSION_COUNTS)),
        help="session counts of the batched-throughput phase, comma-separated",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="the device's peak TFLOP/s for --dtype (default: bench/flops.py's table of GPUs, "
        "or the CPU's cores x clock x vector width)",
    )
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/pipeline.json)")
    args = parser.parse_args(argv)
    try:
        session_counts = [int(count) for count in args.sessions.split(",")]
    except ValueError:
        parser.error(f"--sessions {args.sessions!r}: give counts like 1,4,16")
    if min(session_counts) < 1:
        parser.error("--sessions: every count must be at least 1")
    # Local folders only: a hub id must never be looked up, let alone downloaded.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prompt_cache_size = QUICK_PROMPT_CACHE if args.quick else PipelineOptions().prompt_cache_size
    filled_at = memory_filled_at(prompt_cache_size)
    if args.quick:
        # Tiny frames take milliseconds, too short to tell other load from tick rounding:
        # keep them all, and so never wait for a quiet machine either.
        args.frames, args.rounds, args.max_other_load = 2, 1, 1000.0
        # Tiny models gain nothing from a second thread, and while another process holds a
        # core torch's threads wait for each other, seconds a frame: one thread stays fast.
        torch.set_num_threads(1)
        args.memory_frames = min(args.memory_frames, filled_at + MEMORY_SAMPLE_EVERY)
    if args.memory_frames <= filled_at:
        parser.error(f"--memory-frames must be over {filled_at}")
    if args.size is None:
        args.size = QUICK_SIZE_PX if args.quick else SIZE_PX
    out = args.out or (
        Path("/tmp/livegen-pipeline-quick.json") if args.quick else RESULTS_DIR / "pipeline.json"
    )
    model_size = "tiny" if args.quick else "full"
    run_started = time.perf_counter()
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    model_dir, taesd_dir = ensure_models(args.models_dir, model_size)
    phase_s: dict[str, float] = {}
    started = time.perf_counter()
    livegen: Any = create_pipeline(
        "sd-turbo",
        PipelineOptions(
            model=str(model_dir),
            tiny_vae=str(taesd_dir),
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
            cpu_lanes=args.cpu_lanes,
            prompt_cache_size=prompt_cache_size,
        ),
    )
    livegen.warmup()  # as the server does before it listens: compiles with --compile
    from diffusers import AutoencoderTiny, AutoPipelineForImage2Image

    stock: Any = AutoPipelineForImage2Image.from_pretrained(model_dir, torch_dtype=dtype).to(device)
    stock.set_progress_bar_config(disable=True)
    full_vae = stock.vae
    tiny_vae = AutoencoderTiny.from_pretrained(taesd_dir, torch_dtype=dtype).to(device).eval()
    phase_s["load"] = time.perf_counter() - started
    print(f"  loaded livegen (and warmed it up) and stock diffusers in {phase_s['load']:.1f} s")

    base = replace(
        livegen.default_params, width=args.size, height=args.size, steps=STEPS, strength=STRENGTH
    )
    livegen.check_params(base)
    flop_report = flops.report(livegen, args.size, args.size, base.steps, args.peak_tflops)
    quiet = Quiet(args.max_other_load, 0.0 if args.quick else QUIET_WAIT_S)
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "complete": False,
        "machine": machine_info(),
        "flops": flop_report,
        "settings": {
            "model": f"SD-Turbo architecture ({model_size}), random weights, tests/models.py, "
            f"seed {SEED}",
            "model_dir": str(model_dir),
            "tiny_vae_dir": str(taesd_dir),
            "parameters_m": {
                "unet": round(parameter_count(livegen.unet) / 1e6, 1),
                "text_encoder": round(parameter_count(livegen.prompts.text_encoders[0]) / 1e6, 1),
                "full_vae": round(parameter_count(full_vae) / 1e6, 1),
                "tiny_vae": round(parameter_count(tiny_vae) / 1e6, 1),
            },
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "dtype": str(dtype).removeprefix("torch."),
            "size_px": args.size,
            "frames": args.frames,
            "warmup_frames": WARMUP_FRAMES,
            "rounds": args.rounds,
            "sessions": session_counts,
            "livegen": {
                "load": 'create_pipeline("sd-turbo", PipelineOptions(model, tiny_vae, '
                f'device="{args.device}", compile={args.compile}, cpu_lanes={args.cpu_lanes}))',
                "lanes": livegen.lanes.count,
                "params": {
                    "steps": base.steps,
                    "strength": base.strength,
                    "guidance_scale": base.guidance_scale,
                    "scheduler": base.scheduler,
                    "seed": base.seed,
                    "similarity_threshold": base.similarity_threshold,
                    "latent_feedback": base.latent_feedback,
                },
                "prompt_cache_size": livegen.prompts.cache.max_entries,
            },
            "stock": {
                "load": "AutoPipelineForImage2Image.from_pretrained(model_dir)",
                "class": type(stock).__name__,
                "scheduler": type(stock.scheduler).__name__,
                "call": {
                    "num_inference_steps": STOCK_STEPS,
                    "strength": STRENGTH,
                    "guidance_scale": 0.0,
                    "output_type": "np, then to uint8 inside the timed frame",
                },
                "tiny_vae_variant": "the same pipeline with .vae set to the AutoencoderTiny "
                "livegen loads (its own instance of the same folder)",
            },
            "equal_work": "one UNet pass at t=499 per frame for both: livegen steps=1 at "
            "strength 0.5 (steps = UNet passes, trailing from strength * T); diffusers "
            f"num_inference_steps={STOCK_STEPS} at strength 0.5 runs int(2 * 0.5) = 1 pass of "
            "its trailing schedule [999, 499], at 499. Checked by a UNet hook: "
            "unet_timesteps_first_frame in each loop",
            "timing": "perf_counter around each whole call, input array in, uint8 array out; "
            "runners take turns frame by frame so machine drift hits all alike",
            "other_load_pct": "CPU that other processes used while a frame or round ran, in "
            "percent of one core (machine busy time less this process's)",
            "quiet": {
                "max_other_load_pct": args.max_other_load,
                "wait_s": quiet.max_wait_s,
                "rule": "before each timed frame or round, wait (up to wait_s) for a 1 s window "
                "in which other processes used under max_other_load_pct of a core; a frame or "
                "round during which they used more is rejected (its time kept under "
                "rejected_noisy_s) and the loop makes another, with a new input, up to "
                f"{1 + SPARE_FRAMES}x the frames or 3x the rounds",
            },
            "prompts": "prompt edit: distinct prefixes of one sentence as typed, a new one every "
            "frame; sketch edit: fixed prompt, one new short stroke every frame",
        },
    }

    # (a) and (b): the two edit loops, livegen and stock taking turns each frame.
    livegen_runner = LivegenRunner(
        "livegen",
        livegen_stages(livegen),
        None if args.compile else livegen.unet,  # see livegen_stages
        pipeline=livegen,
        params=base,
        state=livegen.new_state(),
    )

    stock_full = StockRunner(
        "stock_full_vae", stock_stages(stock, full_vae), stock.unet, stock, full_vae
    )
    stock_tiny = StockRunner(
        "stock_tiny_vae", stock_stages(stock, tiny_vae), stock.unet, stock, tiny_vae
    )
    runners = (livegen_runner, stock_full, stock_tiny)
    count = WARMUP_FRAMES + (1 + SPARE_FRAMES) * args.frames

    started = time.perf_counter()
    print(f"(a) prompt-edit loop, {args.size} px")
    sketch = Sketch(args.size, seed=1).pixels()
    inputs = [(prompt, sketch) for prompt in typed_prompts(count)]
    result["prompt_edit"] = edit_loop(runners, inputs, args.frames, WARMUP_FRAMES, livegen, quiet)
    phase_s["prompt_edit"] = time.perf_counter() - started
    write(result, out)

    started = time.perf_counter()
    print(f"(b) sketch-edit loop, {args.size} px")
    livegen_runner.state = livegen.new_state()
    growing = Sketch(args.size, seed=2)
    inputs = [(FIXED_PROMPT, growing.add_stroke()) for _ in range(count)]
    result["sketch_edit"] = edit_loop(runners, inputs, args.frames, WARMUP_FRAMES, livegen, quiet)
    phase_s["sketch_edit"] = time.perf_counter() - started
    result["ratios"] = {
        loop: {stock: ratio(result, loop, stock) for stock in ("stock_full_vae", "stock_tiny_vae")}
        for loop in ("prompt_edit", "sketch_edit")
    }
    write(result, out)

    # The stock pipeline is done with: free its memory before the livegen-only runs.
    del stock, full_vae, tiny_vae, runners, stock_full, stock_tiny
    gc.collect()

    started = time.perf_counter()
    print(f"batched throughput, {args.size} px, {args.rounds} rounds per mode, ABAB")
    result["batched"] = [
        batched_throughput(livegen, base, sessions, args.rounds, args.size, quiet)
        for sessions in session_counts
    ]
    for batch in result["batched"]:
        for mode in ("batched", "one_by_one"):
            run = batch[mode]
            frame_ms = 1000.0 * run["median_round_s"] / batch["sessions"]
            stage_ms = run["stage_mean_ms_per_frame"]
            run["fraction_of_peak"] = flops.fraction_of_peak(flop_report, stage_ms, frame_ms)
    phase_s["batched"] = time.perf_counter() - started
    write(result, out)

    if not args.skip_memory:
        started = time.perf_counter()
        print(f"memory: {args.memory_frames} frames at {MEMORY_SIZE_PX} px, a new prompt each")
        result["memory"] = memory_growth(livegen, base, args.memory_frames, MEMORY_SIZE_PX)
        phase_s["memory"] = time.perf_counter() - started

    result["targets"] = targets(result)
    phase_s["total"] = time.perf_counter() - run_started
    result["phase_s"] = {name: round(s, 1) for name, s in phase_s.items()}
    result["phase_s"]["waiting_for_quiet"] = round(quiet.waited_s, 1)
    result["complete"] = True
    write(result, out)
    print()
    print_report(result)
    print(f"total {phase_s['total']:.0f} s\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
