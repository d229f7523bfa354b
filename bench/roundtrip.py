"""Round-trip latency and throughput of a real livegen server, passthrough pipeline.

Starts ``livegen serve --pipeline passthrough`` on a free loopback port and drives
it from one asyncio process. Each session sends a JPEG frame, waits for its
``frame.out`` and sends the next (a closed loop); latency is the client's
``perf_counter`` from the send to the receipt of the ``frame.out``. Since a
passthrough round trip can go no faster than the server's own decode and encode,
the same frames also go through ``decode_image`` + ``encode_image`` in a tight
loop, without the server, and the 16-session throughput is reported as a share
of that codec-only limit. ``--soak`` instead runs 16 sessions at 512 px for a long
time and samples the server's memory. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from prometheus_client.parser import text_string_to_metric_families
from stats import describe_machine, latency_ms

from livegen_client import LivegenClient
from server.metrics import STAGES
from stream.images import decode_image, encode_image
from stream.limits import Limits

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZES_PX = (256, 512)
SESSION_COUNTS = (1, 4, 16)
FRAMES_PER_SIZE = 4
JPEG_QUALITY = 85
SEED = 0
CODEC_TRIALS = 3
CODEC_TRIAL_S = 1.0
CODEC_WARMUP_S = 0.3
CODEC_THREADS = 2
SOAK_SIZE_PX = 512
SOAK_SESSIONS = 16
SOAK_SAMPLE_S = 10.0
FPS_RATIO_TARGET = 0.6
P50_TARGET_MS = 6.0
P99_TARGET_MS = 15.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MAX_PIXELS = Limits().max_image_pixels
SERVER_ARGS = (
    "--host", "127.0.0.1",
    "--port", "0",
    "--pipeline", "passthrough",
    "--codec-threads", str(CODEC_THREADS),
    # The per-connection message rate limit is policy, not cost: lift it so that
    # it never throttles a closed loop on small frames.
    "--messages-per-s", "1000000",
)  # fmt: skip
LISTENING = re.compile(rb"livegen serving \S+ on http://\S+:(\d+)/")


def make_frames(size_px: int, count: int, seed: int) -> list[bytes]:
    """JPEG q85 frames with gradients, shapes and mild noise, like a webcam or sketch."""
    rng = np.random.default_rng([seed, size_px])
    y, x = np.mgrid[0:size_px, 0:size_px] / size_px
    frames = []
    for _ in range(count):
        low, slope_x, slope_y = rng.uniform(0, 255, 3), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
        gradient = low + 120 * (x[..., None] * slope_x + y[..., None] * slope_y)
        image = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x0, y0 = rng.integers(0, size_px, 2)
            w, h = rng.integers(size_px // 16, size_px // 3, 2)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
        pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
        frames.append(buffer.getvalue())
    return frames


def codec_only(frames: Sequence[bytes], size_px: int) -> dict[str, Any]:
    """Decode + encode frames/s in tight loops on 1 and on ``CODEC_THREADS`` threads.

    Trials alternate between the two so both see the same machine, and the best
    trial is the limit: other load only ever slows a trial down.
    """
    trials: dict[int, list[float]] = {1: [], CODEC_THREADS: []}
    with ThreadPoolExecutor(CODEC_THREADS) as pool:
        for threads in trials:
            _codec_rate(pool, frames, threads, CODEC_WARMUP_S)
        for _ in range(CODEC_TRIALS):
            for threads, rates in trials.items():
                rates.append(_codec_rate(pool, frames, threads, CODEC_TRIAL_S))
    single, multi = trials[1], trials[CODEC_THREADS]
    print(f"  codec only {size_px}px: {max(single)} fps, {CODEC_THREADS} threads {max(multi)}")
    return {
        "size_px": size_px,
        "fps_1_thread": max(single),
        "threads": CODEC_THREADS,
        "fps_threads": max(multi),
        "trials": {"1_thread": single, "threads": multi},
    }


def _codec_rate(
    pool: ThreadPoolExecutor, frames: Sequence[bytes], threads: int, seconds: float
) -> float:
    start = time.perf_counter()
    deadline = start + seconds
    done = sum(pool.map(_codec_loop, [frames] * threads, [deadline] * threads))
    return round(done / (time.perf_counter() - start), 1)


def _codec_loop(frames: Sequence[bytes], deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        pixels = decode_image(frames[done % len(frames)], MAX_PIXELS)
        encode_image(pixels, "jpeg", JPEG_QUALITY)
        done += 1
    return done


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stop_s: float | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))
        return round(kib / 1024, 1)

    def _stat(self) -> list[str]:
        # The fields after the command name, so field 3 of the line is index 0.
        return Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_s(self) -> float:
        stat = self._stat()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def minor_faults(self) -> int:
        # Fresh pages touched: each costs kernel time, so they show where memory churns.
        return int(self._stat()[7])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }


def _wait_for(check: Callable[[], Any], what: str, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.perf_counter() + START_TIMEOUT_S
    while (result := check()) is None:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {what}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"server not {what} after {START_TIMEOUT_S:g} s")
        time.sleep(0.05)
    return result


@contextlib.contextmanager
def livegen_server(
    command: Sequence[str] = ("-m", "server", "serve", *SERVER_ARGS),
) -> Iterator[ServerProcess]:
    """A server (passthrough unless ``command`` says otherwise: the arguments to
    Python) on a free loopback port, ready; SIGTERM (then kill) on exit."""
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *command],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = None
        try:
            match = _wait_for(lambda: LISTENING.search(log_path.read_bytes()), "listening", process)
            server = ServerProcess(process, int(match.group(1)), log_path)
            _wait_for(lambda: server.get("/readyz")[0] == 200 or None, "ready", process)
            yield server
        except BaseException:
            sys.stderr.write(f"server log:\n{log_path.read_text()[-4000:]}\n")
            raise
        finally:
            started = time.perf_counter()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if server is not None:
                server.stop_s = round(time.perf_counter() - started, 3)


async def closed_loop(
    clients: Sequence[LivegenClient],
    frames: Sequence[bytes],
    seconds: float,
    latencies: list[float],
) -> float:
    """Every client sends, awaits its frame.out, sends again, until ``seconds`` pass.

    Appends each round trip's seconds to ``latencies``; returns the wall time until
    the last frame came back.
    """
    start = time.perf_counter()
    end = start + seconds

    async def session(offset: int, client: LivegenClient) -> None:
        frame_id = 0
        while time.perf_counter() < end:
            frame_id += 1
            image = frames[(offset + frame_id) % len(frames)]
            sent = time.perf_counter()
            await client.send_frame(image, frame_id=frame_id)
            out = await client.next_frame()
            latencies.append(time.perf_counter() - sent)
            if out.id != frame_id:
                raise RuntimeError(f"sent frame {frame_id}, got frame.out for {out.id}")

    async with asyncio.TaskGroup() as group:
        for offset, client in enumerate(clients):
            group.create_task(session(offset, client))
    return time.perf_counter() - start


def cpu_seconds(server: ServerProcess) -> dict[str, float]:
    """CPU time used so far by the server, this client and the whole machine."""
    # user nice system idle iowait irq softirq steal; guest time is already in user.
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return {
        "server": server.cpu_s(),
        "client": time.process_time(),
        "machine": busy / os.sysconf("SC_CLK_TCK"),
    }


def server_stages(before: dict[Any, float], after: dict[Any, float]) -> dict[str, Any]:
    """Per-frame means of the server's stage histograms over one case, from /metrics."""

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    stage_ms = {}
    for stage in STAGES:
        count = delta("livegen_stage_seconds_count", stage=stage)
        total = delta("livegen_stage_seconds_sum", stage=stage)
        stage_ms[stage] = round(1000.0 * total / count, 3) if count else None
    batches = delta("livegen_batch_size_count")
    return {
        "stage_mean_ms": stage_ms,
        "mean_batch": round(delta("livegen_batch_size_sum") / batches, 2) if batches else None,
        "dropped": {
            where: delta("livegen_frames_dropped_total", where=where)
            for where in ("input", "output")
        },
    }


async def sample_memory(
    server: ServerProcess, loop: asyncio.Task[float], latencies: list[float], every_s: float
) -> list[dict[str, float]]:
    """Server RSS, throughput and latency every ``every_s`` until ``loop`` finishes."""
    start = time.perf_counter()
    samples = [{"t_s": 0.0, "rss_mib": server.rss_mib()}]
    seen = 0
    while True:
        next_at = start + every_s * len(samples)
        await asyncio.wait({loop}, timeout=max(0.0, next_at - time.perf_counter()))
        if loop.done():
            return samples
        window, seen = latencies[seen:], len(latencies)
        sample = {"t_s": round(time.perf_counter() - start, 1), "rss_mib": server.rss_mib()}
        if window:
            stats = latency_ms(window)
            sample.update(
                fps=round(len(window) / every_s, 1), p50_ms=stats["p50"], p99_ms=stats["p99"]
            )
        samples.append(sample)


async def run_case(
    server: ServerProcess,
    frames: Sequence[bytes],
    size_px: int,
    sessions: int,
    warmup_s: float,
    duration_s: float,
    sample_s: float | None = None,
) -> dict[str, Any]:
    rss_start = server.rss_mib()
    clients = [await LivegenClient.connect(server.ws_url) for _ in range(sessions)]
    try:
        await closed_loop(clients, frames, warmup_s, [])
        metrics_before = await asyncio.to_thread(server.metrics)
        cpu_before, faults_before = cpu_seconds(server), server.minor_faults()
        latencies: list[float] = []
        loop = asyncio.create_task(closed_loop(clients, frames, duration_s, latencies))
        samples = await sample_memory(server, loop, latencies, sample_s) if sample_s else None
        elapsed = await loop
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(server).items()}
        faults = server.minor_faults() - faults_before
        rss_end = server.rss_mib()
        metrics_after = await asyncio.to_thread(server.metrics)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    case: dict[str, Any] = {
        "size_px": size_px,
        "sessions": sessions,
        "frames": len(latencies),
        "seconds": round(elapsed, 3),
        "fps": round(len(latencies) / elapsed, 1),
        "latency_ms": latency_ms(latencies),
        "server_rss_mib": {"start": rss_start, "end": rss_end},
        # Percent of one core. Server and client share this machine's cores; what the
        # machine spent beyond the two is other load, the noise in these numbers.
        "cpu_pct": {name: round(100 * seconds / elapsed, 1) for name, seconds in cpu.items()},
        "server_minor_faults_per_frame": round(faults / len(latencies), 1),
        "server": server_stages(metrics_before, metrics_after),
    }
    if samples is not None:
        rss = [s["rss_mib"] for s in samples] + [rss_start, rss_end]
        case["server_rss_mib"]["max"] = max(rss)
        case["rss_samples"] = samples
    return case


def machine_info() -> dict[str, Any]:
    info = describe_machine(("websockets", "msgpack", "pillow", "numpy", "uvloop"))
    info["uvloop"] = importlib.util.find_spec("uvloop") is not None
    return info


def run_event_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """uvloop where it is installed, as the server does, else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def targets(codec: list[dict[str, Any]], cases: list[dict[str, Any]]) -> dict[str, Any]:
    codec_by_size = {c["size_px"]: c for c in codec}
    ratios = {}
    for case in cases:
        if case["sessions"] == 16:
            limit = codec_by_size[case["size_px"]]
            ratio = case["fps"] / limit["fps_1_thread"]
            ratios[str(case["size_px"])] = {
                "fps": case["fps"],
                "codec_fps_1_thread": limit["fps_1_thread"],
                "ratio": round(ratio, 3),
                "pass": ratio >= FPS_RATIO_TARGET,
                # Not the target, for context: the server has this many codec threads.
                "ratio_to_codec_threads": round(case["fps"] / limit["fps_threads"], 3),
            }
    single = next(c for c in cases if c["sessions"] == 1 and c["size_px"] == 512)["latency_ms"]
    return {
        "fps_ratio_16_sessions": {"target": FPS_RATIO_TARGET, "sizes": ratios},
        "latency_1_session_512": {
            "p50_ms": single["p50"],
            "p50_target_ms": P50_TARGET_MS,
            "p50_pass": single["p50"] <= P50_TARGET_MS,
            "p99_ms": single["p99"],
            "p99_target_ms": P99_TARGET_MS,
            "p99_pass": single["p99"] <= P99_TARGET_MS,
        },
    }


def print_cases(cases: Sequence[dict[str, Any]]) -> None:
    print(
        f"{'size':>5} {'sess':>4} {'frames':>7} {'fps':>7} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'mean':>7} {'max':>7}  {'rss MiB':>13}  {'cpu% srv/cli/all':>16} {'flt/fr':>6}  "
        "server stage means ms (queue/decode/infer/encode/total)"
    )
    for c in cases:
        lat, rss, cpu = c["latency_ms"], c["server_rss_mib"], c["cpu_pct"]
        stages = c["server"]["stage_mean_ms"]
        stage_text = "/".join("-" if stages[s] is None else f"{stages[s]:.2f}" for s in STAGES)
        print(
            f"{c['size_px']:>5} {c['sessions']:>4} {c['frames']:>7} {c['fps']:>7.1f} "
            f"{lat['p50']:>7.2f} {lat['p95']:>7.2f} {lat['p99']:>7.2f} {lat['mean']:>7.2f} "
            f"{lat['max']:>7.2f}  {rss['start']:>6.0f}>{rss['end']:<6.0f}  "
            f"{cpu['server']:>5.0f}/{cpu['client']:>3.0f}/{cpu['machine']:<5.0f} "
            f"{c['server_minor_faults_per_frame']:>6.0f}  {stage_text}"
        )


def print_report(result: dict[str, Any]) -> None:
    if "soak" in result:
        soak = result["soak"]
        print_cases([soak])
        print(f"{'t s':>6} {'rss MiB':>8} {'fps':>7} {'p50 ms':>7} {'p99 ms':>7}")
        for s in soak["rss_samples"]:
            keys = ("fps", "p50_ms", "p99_ms")
            window = (f"{s[k]:>7.1f}" if k in s else f"{'-':>7}" for k in keys)
            print(f"{s['t_s']:>6.0f} {s['rss_mib']:>8.1f} {' '.join(window)}")
        rss = soak["server_rss_mib"]
        print(f"server RSS MiB: start {rss['start']}, end {rss['end']}, max {rss['max']}")
        return
    print(f"{'size':>5} {'codec-only fps, 1 thread':>25} {f'{CODEC_THREADS} threads':>10}")
    for c in result["codec_only"]:
        print(f"{c['size_px']:>5} {c['fps_1_thread']:>25.1f} {c['fps_threads']:>10.1f}")
    print()
    print_cases(result["cases"])
    print()
    goals = result["targets"]
    for size, r in goals["fps_ratio_16_sessions"]["sizes"].items():
        print(
            f"16 sessions {size}px: {r['fps']} fps / codec {r['codec_fps_1_thread']} = "
            f"{r['ratio']} (target >= {FPS_RATIO_TARGET}): {'PASS' if r['pass'] else 'FAIL'}; "
            f"vs codec on {CODEC_THREADS} threads {r['ratio_to_codec_threads']}"
        )
    single = goals["latency_1_session_512"]
    for p in ("p50", "p99"):
        print(
            f"1 session 512px {p} {single[f'{p}_ms']} ms (target <= {single[f'{p}_target_ms']}):"
            f" {'PASS' if single[f'{p}_pass'] else 'FAIL'}"
        )


async def run_all(
    server: ServerProcess, frames: dict[int, list[bytes]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    cases = []
    for size_px in SIZES_PX:
        for sessions in SESSION_COUNTS:
            case = await run_case(
                server, frames[size_px], size_px, sessions, args.warmup, args.duration
            )
            print(
                f"  {size_px}px x {sessions}: {case['fps']} fps, p50 {case['latency_ms']['p50']} ms"
            )
            cases.append(case)
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds per case")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s cases, 0.5 s warmup")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help=f"only run {SOAK_SESSIONS} sessions at "
        f"{SOAK_SIZE_PX} px this long, sampling server RSS every {SOAK_SAMPLE_S:g} s",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON path (default bench/results/roundtrip.json, or roundtrip-soak.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2.0, 0.5
    out = args.out or RESULTS_DIR / ("roundtrip-soak.json" if args.soak else "roundtrip.json")

    sizes = (SOAK_SIZE_PX,) if args.soak else SIZES_PX
    frames = {size: make_frames(size, FRAMES_PER_SIZE, SEED) for size in sizes}
    result: dict[str, Any] = {
        "benchmark": "soak" if args.soak else "roundtrip",
        "machine": machine_info(),
        "settings": {
            "duration_s": args.soak or args.duration,
            "warmup_s": args.warmup,
            "sizes_px": list(sizes),
            "sessions": [SOAK_SESSIONS] if args.soak else list(SESSION_COUNTS),
            "frames_per_size": FRAMES_PER_SIZE,
            "frame_bytes": {size: [len(f) for f in frames[size]] for size in sizes},
            "jpeg_quality": JPEG_QUALITY,
            "seed": SEED,
            "server_args": list(SERVER_ARGS),
            "client": "LivegenClient, one asyncio process, closed loop per session",
        },
    }
    if not args.soak:
        result["settings"]["codec_trials_s"] = [CODEC_TRIAL_S] * CODEC_TRIALS
        result["codec_only"] = [codec_only(frames[size], size) for size in SIZES_PX]

    with livegen_server() as server:
        if args.soak:
            result["soak"] = run_event_loop(
                run_case(server, frames[SOAK_SIZE_PX], SOAK_SIZE_PX, SOAK_SESSIONS, args.warmup,
                         args.soak, sample_s=SOAK_SAMPLE_S)
            )  # fmt: skip
        else:
            result["cases"] = run_event_loop(run_all(server, frames, args))
            result["targets"] = targets(result["codec_only"], result["cases"])
    result["server_exit"] = {"returncode": server.process.returncode, "stop_s": server.stop_s}

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_report(result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
