"""What the HAProxy entry adds: round trips and throughput direct vs through the entry.

Starts ``livegen serve --pipeline passthrough`` replicas and Debian's HAProxy with
the config deploy/haproxy/render.py renders (the same harness as tests/scaleout),
all on loopback. Round trips: one session direct to the replica and one through
the entry send a frame and wait for its ``frame.out``, taking turns, so both see
the same machine at the same moment; the added latency is the difference of
their percentiles. Frames of about 28 KB and 500 KB. Throughput: 16 closed-loop
sessions at 512 px, direct then through the entry. Then the overflow answer
(every replica full: how long a new connection waits for its 503, the queue
timeout, and what it says), and resumes: 100 sessions dropped and resumed on a
fixed replica set, then a replica added and the entry reloaded under those live
sockets (how many drop), then all resumed again (how many find their owner).
Writes bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from stats import describe_machine, latency_ms
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' cluster harness

from livegen_client import LivegenClient  # noqa: E402
from tests.scaleout.cluster import QUEUE_TIMEOUT_S, Cluster  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.json"


def noisy_jpeg(side_px: int, quality: int, seed: int) -> bytes:
    """A JPEG of noise over a gradient: its size barely depends on the encoder's luck."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side_px, 0:side_px]
    base = np.stack([x * 255 // side_px, y * 255 // side_px, np.full_like(x, 128)], -1)
    pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


async def round_trip(client: LivegenClient, image: bytes) -> float:
    started = time.perf_counter()
    await client.send_frame(image)
    await client.next_frame()
    return time.perf_counter() - started


async def interleaved(cluster: Cluster, image: bytes, count: int) -> dict[str, Any]:
    direct = await LivegenClient.connect(cluster.replicas[0].url)
    entry = await LivegenClient.connect(cluster.url)
    for _ in range(20):  # warm both paths
        await round_trip(direct, image)
        await round_trip(entry, image)
    times: dict[str, list[float]] = {"direct": [], "entry": []}
    for _ in range(count):
        times["direct"].append(await round_trip(direct, image))
        times["entry"].append(await round_trip(entry, image))
    await direct.close()
    await entry.close()
    stats = {path: latency_ms(values) for path, values in times.items()}
    added = {p: round(stats["entry"][p] - stats["direct"][p], 3) for p in ("p50", "p95", "p99")}
    return {"frame_bytes": len(image), "round_trips": count, **stats, "added_ms": added}


async def throughput(url: str, image: bytes, sessions: int, seconds: float) -> dict[str, Any]:
    clients = [await LivegenClient.connect(url) for _ in range(sessions)]
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def loop(client: LivegenClient) -> None:
        while time.perf_counter() < deadline:
            latencies.append(await round_trip(client, image))

    started = time.perf_counter()
    await asyncio.gather(*(loop(client) for client in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return {"fps": round(len(latencies) / elapsed, 1), **latency_ms(latencies)}


async def overflow(cluster: Cluster, capacity: int) -> dict[str, Any]:
    held = [await LivegenClient.connect(cluster.url) for _ in range(capacity)]
    started = time.perf_counter()
    try:
        await connect(cluster.url)
        answer: dict[str, Any] = {"refused": False}
    except InvalidStatus as refused:
        answer = {
            "refused": True,
            "status": refused.response.status_code,
            "retry_after": refused.response.headers.get("Retry-After"),
        }
    answer["seconds"] = round(time.perf_counter() - started, 3)
    answer["queue_timeout_s"] = QUEUE_TIMEOUT_S
    for client in held:
        await client.close()
    return answer


def owner(client: LivegenClient) -> str:
    return client.session_id.partition(".")[0]


async def drop_and_resume(clients: list[LivegenClient]) -> dict[str, Any]:
    owners = [owner(client) for client in clients]
    for client in clients:
        await client.websocket.close()
    started = time.perf_counter()
    await asyncio.gather(*(client.reconnect() for client in clients))
    elapsed = time.perf_counter() - started
    on_owner = sum(
        client.started.resumed and owner(client) == was
        for client, was in zip(clients, owners, strict=True)
    )
    return {"sessions": len(clients), "on_owner": on_owner, "seconds": round(elapsed, 3)}


async def resumes(cluster: Cluster, image: bytes, count: int) -> dict[str, Any]:
    clients = list(
        await asyncio.gather(*(LivegenClient.connect(cluster.url) for _ in range(count)))
    )
    fixed = await drop_and_resume(clients)
    await asyncio.to_thread(cluster.start_replicas, 1)
    await asyncio.to_thread(cluster.reload_entry)
    dropped = 0
    for client in clients:  # every live socket, carried by the old worker, still answers
        try:
            await asyncio.wait_for(round_trip(client, image), 10.0)
        except (ConnectionClosed, TimeoutError):
            dropped += 1
    scaled = await drop_and_resume(clients)
    for client in clients:
        await client.close()
    return {
        "fixed_replica_set": fixed,
        "reload_with_live_sockets": {"sockets": count, "dropped": dropped},
        "after_scale_out": scaled,
    }


async def run(round_trips: int, seconds: float) -> dict[str, Any]:
    sessions = 16
    with tempfile.TemporaryDirectory() as work:
        cluster = Cluster(Path(work), max_sessions=64)
        try:
            cluster.start_replicas(2)
            cluster.start_entry()
            frames = {"28KB": noisy_jpeg(226, 90, 1), "500KB": noisy_jpeg(975, 90, 2)}
            trips = {
                name: await interleaved(cluster, image, round_trips)
                for name, image in frames.items()
            }
            image_512 = noisy_jpeg(512, 85, 3)
            rates = {
                "direct": await throughput(cluster.replicas[0].url, image_512, sessions, seconds),
                "entry": await throughput(cluster.url, image_512, sessions, seconds),
            }
            full = await overflow(cluster, 2 * cluster.max_sessions)
            moves = await resumes(cluster, frames["28KB"], 100)
        finally:
            cluster.stop()
    return {
        "round_trips": trips,
        "sessions_16_at_512px": {"frame_bytes": len(image_512), "seconds": seconds, **rates},
        "overflow": full,
        "resumes": moves,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=1000, help="per path and frame size")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.round_trips, args.seconds))
    result["machine"] = describe_machine(["websockets", "livegen"])
    result["settings"] = {"round_trips": args.round_trips, "seconds": args.seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
