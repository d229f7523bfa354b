"""Cold start and round trips of a real livegen server with a model on its device.

Starts ``livegen serve --pipeline sd-turbo`` on the SD-Turbo architecture with
random weights and TAESD (bench/pipeline.py builds the folders once; nothing is
downloaded) on a free loopback port, on ``--device``. Records, from the moment
the process is spawned: when it answers ``/readyz`` (imports, load, warm-up and,
with ``--compile``, compilation) and when the first generated frame comes back.
Then closed-loop round trips, JPEG in and out through the real WebSocket path,
for 1 session and for ``--sessions`` at once, with p50/p95/p99. ``--starts 2``
starts the server twice in a row: with ``--compile``, what torch's compile
caches on disk save the second start. bench/gpu.sh runs it on a GPU; on a CPU,
``--quick`` runs it on tiny models in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import roundtrip
from pipeline import DEFAULT_MODELS_DIR, ensure_models
from roundtrip import SERVER_ARGS, closed_loop, livegen_server, make_frames, run_event_loop
from stats import describe_machine, latency_ms

from livegen_client import LivegenClient

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZE_PX = 512
QUICK_SIZE_PX = 64
SECONDS = 10.0
WARMUP_S = 2.0
SESSIONS = 16
FRAMES = 4
PROMPT = "a watercolour of a lighthouse"
START_TIMEOUT_S = 600.0


async def first_frame(url: str, frame: bytes, size_px: int) -> float:
    """Seconds from connecting to the first generated frame."""
    started = time.perf_counter()
    client = await LivegenClient.connect(
        url, params={"prompt": PROMPT, "width": size_px, "height": size_px}
    )
    try:
        await client.send_frame(frame, frame_id=1)
        await client.next_frame()
    finally:
        await client.close()
    return time.perf_counter() - started


async def round_trips(
    url: str, frames: Sequence[bytes], size_px: int, sessions: int, seconds: float
) -> dict[str, Any]:
    params = {"prompt": PROMPT, "width": size_px, "height": size_px}
    clients = [await LivegenClient.connect(url, params=params) for _ in range(sessions)]
    try:
        await closed_loop(clients, frames, WARMUP_S, [])
        latencies: list[float] = []
        wall_s = await closed_loop(clients, frames, seconds, latencies)
    finally:
        for client in clients:
            await client.close()
    return {
        "sessions": sessions,
        "frames": len(latencies),
        "fps": round(len(latencies) / wall_s, 2),
        "latency_ms": latency_ms(latencies),
    }


def one_start(
    args: argparse.Namespace, model: Path, tiny_vae: Path, measure: bool
) -> dict[str, Any]:
    size_px = QUICK_SIZE_PX if args.quick else args.size
    frames = make_frames(size_px, FRAMES, seed=0)
    server_args = [*SERVER_ARGS]
    server_args[server_args.index("passthrough")] = "sd-turbo"
    server_args += ["--model", str(model), "--tiny-vae", str(tiny_vae), "--device", args.device]
    if args.compile:
        server_args.append("--compile")
    spawned = time.perf_counter()
    with livegen_server(("-m", "server", "serve", *server_args)) as server:
        ready_s = time.perf_counter() - spawned
        first_s = run_event_loop(first_frame(server.ws_url, frames[0], size_px))
        result: dict[str, Any] = {
            "ready_s": round(ready_s, 2),
            "first_frame_s": round(time.perf_counter() - spawned, 2),
            "first_frame_after_ready_s": round(first_s, 3),
        }
        if measure:
            seconds = 2.0 if args.quick else args.seconds
            result["cases"] = [
                run_event_loop(round_trips(server.ws_url, frames, size_px, count, seconds))
                for count in sorted({1, args.sessions})
            ]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="the server's --device: cuda, cpu")
    parser.add_argument("--size", type=int, default=SIZE_PX, help="frame side in px")
    parser.add_argument("--compile", action="store_true", help="the server's --compile")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="the batched case")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured seconds a case")
    parser.add_argument("--starts", type=int, default=1, help="start the server this many times")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT_S,
        help="seconds a start may take to be ready (a first --compile on a CPU takes minutes)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny models at 64 px, 2 s cases")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default bench/results/model_roundtrip.json)"
    )
    args = parser.parse_args(argv)
    # roundtrip.py's limit is for a passthrough server; a model loads, warms up, compiles.
    roundtrip.START_TIMEOUT_S = args.start_timeout
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, tiny_vae = ensure_models(args.models_dir, "tiny" if args.quick else "full")
    starts = [
        one_start(args, model, tiny_vae, measure=index == args.starts - 1)
        for index in range(args.starts)
    ]
    result = {
        "benchmark": "model_roundtrip",
        "machine": describe_machine(["torch", "triton", "diffusers", "websockets"]),
        "settings": {
            "model": "SD-Turbo architecture, random weights, TAESD (bench/pipeline.py)",
            "model_size": "tiny" if args.quick else "full",
            "device": args.device,
            "compile": args.compile,
            "size_px": QUICK_SIZE_PX if args.quick else args.size,
            "prompt": PROMPT,
            "timing": "ready_s and first_frame_s from the spawn of `python -m server serve`; "
            "round trips: closed loop per session, JPEG in, frame.out back",
        },
        "starts": starts,
    }
    if len(starts) > 1:
        result["second_start_speedup"] = round(
            starts[0]["first_frame_s"] / starts[-1]["first_frame_s"], 2
        )
    out = args.out or RESULTS_DIR / "model_roundtrip.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for index, start in enumerate(starts):
        print(
            f"start {index + 1}: ready {start['ready_s']} s, first frame {start['first_frame_s']} s"
        )
    for case in starts[-1]["cases"]:
        print(f"{case['sessions']} sessions: {case['fps']} fps, p50 {case['latency_ms']['p50']} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
