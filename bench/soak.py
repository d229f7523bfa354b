"""A long mixed soak of a real livegen server: do its resources stay flat?

A server runs a tiny random-weight SD-Turbo-architecture model (built from the
published configs as tests/models.py does, saved and loaded through the real
loading code) in its own process. This process keeps, for ``--minutes``:

- 8 livegen WebSocket sessions, each a closed loop of frames (send, await the
  ``frame.out``); now and then one edits its params, ends and starts afresh, drops
  its socket and resumes, or sends something the server must refuse;
- 2 WebRTC calls (aiortc peers, as tests/rtc.py), each hung up and called again;
- 2 fal-style connections (``/fal-ai/fast-turbo-diffusion/realtime``, inputs
  without a ``type``), each reconnecting now and then.

Every ``--sample-s`` it reads the server process's resident memory, threads and
open file descriptors (from /proc) and its event loop's tasks (``/metrics``).
The second half of the samples is compared with the first: a resource is flat
when the second half's median is within the stated tolerance of the first's.
Errors are counted and split: expected ones are those the soak provokes on
purpose (a refused param, a resume of a session it ended); anything else is
unexpected. ``--calls N`` instead measures the server's memory over N short
WebRTC calls one after another (the question of whether calls leak). JSON to
bench/results/soak.json (or ``--out``); see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from roundtrip import ServerProcess, livegen_server, machine_info, make_frames, run_event_loop
from stats import latency_ms
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegen_client import LivegenClient, ServerError
from stream.codec import pack
from stream.errors import ErrorCode
from stream.messages import WebRTCClose

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/ holds the aiortc test peer and the model builder

from tests.rtc import Caller, MarkedTrack  # noqa: E402

RESULTS = REPO / "bench" / "results" / "soak.json"
WEBSOCKET_SESSIONS = 8
WEBRTC_CALLS = 2
FAL_CONNECTIONS = 2
SIZE_PX = 64  # the frames the model makes; small, so 12 clients share 2 CPU cores
CAMERA_PX = 256  # what the WebRTC peers send (16 marker blocks of 16 px)
CAMERA_FPS = 10.0
FAL_APP = "fal-ai/fast-turbo-diffusion"
GRACE_S = 5.0  # the server's resume grace period: short, so detached sessions expire often
FRAME_TIMEOUT_S = 60.0
SEED = 0
# Flat: the second half's median within this of the first half's (relative, absolute).
TOLERANCE = {"rss_mib": (0.02, 8.0), "threads": (0.10, 4), "fds": (0.10, 8), "tasks": (0.10, 8)}
# What the clients provoke on purpose, by error code.
EXPECTED_CODES = {ErrorCode.INVALID_PARAMS.value, ErrorCode.SESSION_NOT_FOUND.value}


@dataclass
class Tally:
    """What happened, counted: round trips, actions, errors expected and not."""

    round_trips_s: dict[str, list[float]] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def round_trip(self, kind: str, seconds: float) -> None:
        self.round_trips_s.setdefault(kind, []).append(seconds)

    def fault(self, where: str, error: BaseException) -> None:
        """An error nothing provoked."""
        self.unexpected[f"{where}: {type(error).__name__}"] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {type(error).__name__}: {error}"[:300])


@dataclass(frozen=True)
class Plan:
    deadline: float
    frames: Sequence[bytes]
    rng: random.Random


async def websocket_session(server: ServerProcess, plan: Plan, tally: Tally, index: int) -> None:
    """A closed loop of frames; every few seconds, one of the things real clients do."""
    params = {"width": SIZE_PX, "height": SIZE_PX, "steps": 1, "prompt": f"soak {index}"}
    client = await LivegenClient.connect(server.ws_url, params=params)
    frame_id = 0
    next_action = time.perf_counter() + plan.rng.uniform(3, 10)
    while time.perf_counter() < plan.deadline:
        frame_id += 1
        sent = time.perf_counter()
        await client.send_frame(plan.frames[frame_id % len(plan.frames)], frame_id=frame_id)
        await asyncio.wait_for(frame_out(client, frame_id), FRAME_TIMEOUT_S)
        tally.round_trip("websocket", time.perf_counter() - sent)
        if time.perf_counter() < next_action:
            continue
        next_action = time.perf_counter() + plan.rng.uniform(3, 10)
        action = plan.rng.choice(("edit", "restart", "resume", "refused", "stale"))
        tally.actions[f"websocket {action}"] += 1
        if action == "edit":
            await client.update_params(prompt=f"soak {index} {frame_id}", seed=frame_id)
        elif action == "restart":  # end the session, start a new one
            await client.close()
            client = await LivegenClient.connect(server.ws_url, params=params)
        elif action == "resume":  # drop the socket, come back to the same session
            await client.websocket.close()
            await client.reconnect()
            if not client.started.resumed:
                raise RuntimeError("a resume within the grace period started a new session")
        elif action == "refused":  # a param the model cannot serve: invalid_params
            await client.update_params(steps=99)
            await expect_error(client, ErrorCode.INVALID_PARAMS, tally)
        else:  # resume a session this client ended: session_not_found
            ended = (client.session_id, client.resume_token)
            await client.close()
            try:
                client = await LivegenClient.connect(server.ws_url, params=params, resume=ended)
            except ServerError as error:
                if error.code != ErrorCode.SESSION_NOT_FOUND:
                    raise
                tally.expected[error.code] += 1
            else:
                raise RuntimeError("an ended session was resumed")
            client = await LivegenClient.connect(server.ws_url, params=params)
    await client.close()


async def frame_out(client: LivegenClient, frame_id: int) -> None:
    """Wait for ``frame_id``'s output; an edit's rerun of the frame before may come first."""
    while (out := await client.next_frame()).id != frame_id:
        if out.id > frame_id:
            raise RuntimeError(f"sent frame {frame_id}, got frame.out {out.id}")


async def expect_error(client: LivegenClient, code: ErrorCode, tally: Tally) -> None:
    try:
        await asyncio.wait_for(client.next_frame(), FRAME_TIMEOUT_S)
    except ServerError as error:
        if error.code != code:
            raise
        tally.expected[error.code] += 1
        return
    raise RuntimeError(f"expected {code}, got a frame")


async def webrtc_calls(server: ServerProcess, plan: Plan, tally: Tally) -> None:
    """Calls of 5 to 20 s, hung up in turn by webrtc.close and by dropping the socket."""
    params = {"width": SIZE_PX, "height": SIZE_PX, "steps": 1, "prompt": "a call"}
    number = 0
    while time.perf_counter() < plan.deadline:
        number += 1
        client = await LivegenClient.connect(server.ws_url, params=params)
        dialled = time.perf_counter()
        caller = await Caller.start(client, MarkedTrack(CAMERA_PX, CAMERA_PX, CAMERA_FPS))
        try:
            await caller.frames(1, FRAME_TIMEOUT_S)
            tally.round_trip("webrtc_first_frame", time.perf_counter() - dialled)
            hold_s = min(plan.rng.uniform(5, 20), max(0.0, plan.deadline - time.perf_counter()))
            before = caller.received.count
            await asyncio.sleep(hold_s)
            tally.actions["webrtc frames received"] += caller.received.count - before
            tally.actions["webrtc calls"] += 1
            if number % 2:
                await client.websocket.send(pack(WebRTCClose()))
        finally:
            await caller.hang_up()
            await client.close()


async def fal_connection(server: ServerProcess, plan: Plan, tally: Tally, index: int) -> None:
    """fal's framing: an input map without a type, a result map back; reconnects now and then."""
    url = f"ws://127.0.0.1:{server.port}/{FAL_APP}/realtime"
    size = {"width": SIZE_PX, "height": SIZE_PX}
    count = 0
    while time.perf_counter() < plan.deadline:
        tally.actions["fal connections"] += 1
        async with connect(url, compression=None) as websocket:
            reconnect_at = time.perf_counter() + plan.rng.uniform(10, 40)
            while time.perf_counter() < min(reconnect_at, plan.deadline):
                count += 1
                fal_input = {
                    "prompt": f"fal {index}",
                    "image_url": plan.frames[count % len(plan.frames)],
                    "image_size": size,
                    "num_inference_steps": 1,
                    "seed": count,
                    "request_id": str(count),
                }
                sent = time.perf_counter()
                await websocket.send(msgpack.packb(fal_input, use_bin_type=True))
                reply = await asyncio.wait_for(websocket.recv(), FRAME_TIMEOUT_S)
                if isinstance(reply, str):  # an x-fal-error
                    raise RuntimeError(f"fal error: {reply[:200]}")
                result = msgpack.unpackb(reply)
                if result.get("request_id") != str(count):
                    raise RuntimeError(f"fal result for {result.get('request_id')}, sent {count}")
                tally.round_trip("fal", time.perf_counter() - sent)


async def keep_running(name: str, work: Callable[[], Any], plan: Plan, tally: Tally) -> None:
    """Run ``work`` until the deadline; an error is counted, and the client starts over."""
    while time.perf_counter() < plan.deadline:
        try:
            await work()
        except (ConnectionClosed, ServerError, RuntimeError, TimeoutError, OSError) as error:
            tally.fault(name, error)
            await asyncio.sleep(1.0)


def read_resources(server: ServerProcess) -> dict[str, float]:
    pid = server.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    metrics = server.metrics()
    return {
        "rss_mib": server.rss_mib(),
        "threads": int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1)),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "tasks": metrics[("livegen_event_loop_tasks", ())],
    }


async def sample(server: ServerProcess, plan: Plan, every_s: float, start: float) -> list[dict]:
    samples = []
    while time.perf_counter() < plan.deadline:
        resources = await asyncio.to_thread(read_resources, server)
        samples.append({"t_s": round(time.perf_counter() - start, 1), **resources})
        await asyncio.sleep(min(every_s, max(0.0, plan.deadline - time.perf_counter())))
    return samples


def flatness(samples: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Each resource's first-half and second-half medians, and whether it stayed flat."""
    half = len(samples) // 2
    verdicts: dict[str, Any] = {}
    if half == 0:
        return verdicts  # too short a run to have halves
    for name, (relative, absolute) in TOLERANCE.items():
        first = statistics.median(s[name] for s in samples[:half])
        second = statistics.median(s[name] for s in samples[half:])
        limit = first * (1 + relative) + absolute
        verdicts[name] = {
            "first_half_median": first,
            "second_half_median": second,
            "max": max(s[name] for s in samples),
            "allowed_second_half_median": round(limit, 1),
            "flat": second <= limit,
        }
    return verdicts


def server_log_problems(server: ServerProcess) -> dict[str, Any]:
    """ERROR lines and tracebacks in the server's log so far, with the first few."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("Traceback")]
    return {"count": len(errors), "examples": [line[:300] for line in errors[:10]]}


def server_errors(server: ServerProcess) -> dict[str, float]:
    return {
        dict(labels)["code"]: value
        for (name, labels), value in server.metrics().items()
        if name == "livegen_errors_total" and value
    }


async def mixed_soak(
    server: ServerProcess, minutes: float, sample_s: float, grace_s: float
) -> dict[str, Any]:
    start = time.perf_counter()
    plan = Plan(start + minutes * 60, make_frames(SIZE_PX, 4, SEED), random.Random(SEED))
    tally = Tally()
    workers = [
        *(
            keep_running(
                "websocket", lambda i=i: websocket_session(server, plan, tally, i), plan, tally
            )
            for i in range(WEBSOCKET_SESSIONS)
        ),
        *(
            keep_running("webrtc", lambda: webrtc_calls(server, plan, tally), plan, tally)
            for _ in range(WEBRTC_CALLS)
        ),
        *(
            keep_running("fal", lambda i=i: fal_connection(server, plan, tally, i), plan, tally)
            for i in range(FAL_CONNECTIONS)
        ),
    ]
    sampling = asyncio.create_task(sample(server, plan, sample_s, start))
    await asyncio.gather(*workers)
    samples = await sampling
    # After the clients leave and detached sessions expire, the server should be idle.
    await asyncio.sleep(grace_s + 2)
    idle = await asyncio.to_thread(read_resources, server)
    errors = await asyncio.to_thread(server_errors, server)
    log_problems = await asyncio.to_thread(server_log_problems, server)
    expected_on_server = {code: n for code, n in errors.items() if code in EXPECTED_CODES}
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "round_trip_ms": {
            k: latency_ms(v) | {"count": len(v)} for k, v in tally.round_trips_s.items()
        },
        "actions": dict(tally.actions),
        "errors": {
            "expected_by_clients": dict(tally.expected),
            "unexpected_by_clients": dict(tally.unexpected),
            "unexpected_examples": tally.examples,
            "server_sent_by_code": errors,
            "server_sent_unexpected": {
                code: n for code, n in errors.items() if code not in expected_on_server
            },
            "server_log_errors": log_problems,
        },
        "samples": samples,
        "flat": flatness(samples),
        "idle_after": idle,
    }


async def call_churn(server: ServerProcess, calls: int, grace_s: float) -> dict[str, Any]:
    """``calls`` WebRTC calls one after another, each until 15 frames came back; the
    server's resident memory after each, and once more after it has sat idle."""
    rss = [{"calls": 0, "rss_mib": server.rss_mib()}]
    setup_s = []
    for number in range(1, calls + 1):
        async with await LivegenClient.connect(server.ws_url) as client:
            dialled = time.perf_counter()
            caller = await Caller.start(client, MarkedTrack(CAMERA_PX, CAMERA_PX, 30.0))
            try:
                await caller.frames(15, FRAME_TIMEOUT_S)
                setup_s.append(time.perf_counter() - dialled)
                await client.websocket.send(pack(WebRTCClose()))
            finally:
                await caller.hang_up()
        rss.append({"calls": number, "rss_mib": server.rss_mib()})
    await asyncio.sleep(grace_s + 2)
    tenth = max(1, calls // 10)
    return {
        "calls": calls,
        "call_ms": latency_ms(setup_s),
        "rss_mib": rss,
        "idle_after_rss_mib": server.rss_mib(),
        # Growth per call over the first and the last tenth: a leak keeps its slope.
        "growth_kib_per_call": {
            "first_tenth": round((rss[tenth]["rss_mib"] - rss[0]["rss_mib"]) * 1024 / tenth, 1),
            "last_tenth": round(
                (rss[-1]["rss_mib"] - rss[-1 - tenth]["rss_mib"]) * 1024 / tenth, 1
            ),
        },
    }


def build_model(folder: Path) -> Path:
    """A tiny random-weight SD-Turbo, saved with save_pretrained (tests/models.py)."""
    from tests.models import save_model

    return save_model(folder / "sd-turbo", family="sd-turbo")


def server_command(model: Path | None, grace_s: float) -> list[str]:
    command = ["-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--session-grace-s", str(grace_s), "--messages-per-s", "1000000"]
    if model is None:
        return [*command, "--pipeline", "passthrough"]
    return [*command, "--pipeline", "sd-turbo", "--model", str(model), "--device", "cpu"]


def main(argv: Sequence[str] | None = None) -> int:
    # The test peer looks for its frame-number strip in what comes back; the model's
    # 64 px frames have none, and numpy warns about the empty slices it reads.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument(
        "--sample-s", type=float, help="seconds between samples (default: a 60th of the run)"
    )
    parser.add_argument(
        "--calls",
        type=int,
        help="instead of the soak: this many WebRTC calls in a row on a passthrough server, "
        "with the server's memory after each",
    )
    parser.add_argument(
        "--passthrough",
        action="store_true",
        help="serve the passthrough pipeline instead of the tiny model (transport only; "
        "what tests/bench/test_soak.py runs for a few seconds)",
    )
    parser.add_argument(
        "--grace-s", type=float, default=GRACE_S, help="the server's --session-grace-s"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON path")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"benchmark": "soak", "machine": machine_info()}
    with tempfile.TemporaryDirectory() as folder:
        model = None if args.calls or args.passthrough else build_model(Path(folder))
        command = server_command(model, args.grace_s)
        result["settings"] = {"server_args": command[3:]}
        with livegen_server(command) as server:
            if args.calls:
                result["benchmark"] = "webrtc-calls"
                result["webrtc_calls"] = run_event_loop(
                    call_churn(server, args.calls, args.grace_s)
                )
            else:
                sample_s = args.sample_s or max(1.0, args.minutes)
                result["settings"] |= {
                    "minutes": args.minutes,
                    "sample_s": sample_s,
                    "websocket_sessions": WEBSOCKET_SESSIONS,
                    "webrtc_calls": WEBRTC_CALLS,
                    "fal_connections": FAL_CONNECTIONS,
                    "size_px": SIZE_PX,
                    "camera": f"{CAMERA_PX} px at {CAMERA_FPS:g} fps",
                    "session_grace_s": args.grace_s,
                    "tolerance": {
                        k: {"relative": r, "absolute": a} for k, (r, a) in TOLERANCE.items()
                    },
                    "model": "passthrough"
                    if model is None
                    else "tiny random-weight SD-Turbo architecture (tests/models.py), CPU",
                }
                result["soak"] = run_event_loop(
                    mixed_soak(server, args.minutes, sample_s, args.grace_s)
                )
        result["server_exit"] = {"returncode": server.process.returncode, "stop_s": server.stop_s}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: v
                for k, v in result.get("soak", result.get("webrtc_calls", {})).items()
                if k not in ("samples", "rss_mib")
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0 if passed(result) else 1


def passed(result: dict[str, Any]) -> bool:
    """The soak's verdict: flat resources and no unexpected error (always true for --calls)."""
    soak = result.get("soak")
    if soak is None:
        return True
    errors = soak["errors"]
    flat = all(v["flat"] for v in soak["flat"].values())
    return (
        flat
        and not errors["unexpected_by_clients"]
        and not errors["server_sent_unexpected"]
        and not errors["server_log_errors"]["count"]
    )


if __name__ == "__main__":
    sys.exit(main())
