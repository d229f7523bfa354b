"""``livegen serve --pipeline passthrough`` listens without importing torch or aiortc.

A command imports what it needs when it needs it: passthrough has no model, so
it needs neither torch nor diffusers (seconds to import), and aiortc (with PyAV
and OpenSSL's bindings) loads with the first WebRTC offer. The real CLI runs in
a subprocess under ``-X importtime``, which writes each module as it is imported,
in order with what the server prints: what comes before "livegen serving" was
imported before the server listened.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import msgpack
from websockets.asyncio.client import connect

from tests.helpers import WAIT_S

PROCESS_WAIT_S = 60.0
HEAVY = ("torch", "diffusers", "transformers", "aiortc", "av")
_IMPORTED = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")


def top_level(lines: list[str]) -> set[str]:
    """The top-level packages ``-X importtime`` lines name."""
    return {match[1].split(".")[0] for line in lines if (match := _IMPORTED.match(line))}


async def test_passthrough_listens_without_torch_and_loads_aiortc_with_the_first_offer(jpeg):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "server",
        "serve",
        "--pipeline",
        "passthrough",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    before_listening: list[str] = []
    try:
        async with asyncio.timeout(PROCESS_WAIT_S):
            while not (line := (await process.stdout.readline()).decode()).startswith(
                "livegen serving"
            ):
                assert line, "\n".join(before_listening[-20:])  # the server exited
                before_listening.append(line)
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert port is not None, line
        async with connect(f"ws://127.0.0.1:{port[1]}/ws") as websocket:
            await websocket.send(msgpack.packb({"type": "session.start"}))
            started = msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))
            await websocket.send(msgpack.packb({"type": "frame", "image": jpeg(seed=1)}))
            frame = msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))
            await websocket.send(msgpack.packb({"type": "webrtc.offer", "sdp": "not sdp"}))
            refused = msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), PROCESS_WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert started["type"] == "session.started" and frame["type"] == "frame.out"
    assert refused["code"] == "invalid_field" and "not an SDP" in refused["message"]
    assert top_level(before_listening).isdisjoint(HEAVY)
    # Serving a frame needs no torch either; the offer brought aiortc, and only it.
    after = top_level(rest.decode().splitlines()) - top_level(before_listening)
    assert "aiortc" in after and after.isdisjoint({"torch", "diffusers", "transformers"})
    assert process.returncode == 0
