"""Graceful shutdown: tell sessions, finish in-flight frames, close, exit."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livegen_client import LivegenClient
from stream.errors import CloseCode
from stream.messages import FrameOut, SessionClosing
from tests.helpers import WAIT_S, GatedPipeline, get, http_url, ws_url


async def test_drain_finishes_the_in_flight_frame_then_closes_going_away(start_server, jpeg):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    client = await LivegenClient.connect(ws_url(server))
    await client.send_frame(jpeg(seed=1), frame_id=3)
    assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)

    drain = asyncio.create_task(server.drain())
    closing = await asyncio.wait_for(client.recv(), WAIT_S)
    readiness = await get(http_url(server, "/readyz"))
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(server))
    pipeline.gate.set()
    finished = await asyncio.wait_for(client.recv(), WAIT_S)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), WAIT_S)
    await asyncio.wait_for(drain, WAIT_S)

    assert isinstance(closing, SessionClosing) and closing.reason == "shutdown"
    assert readiness[0] == 503
    assert refused.value.response.status_code == 503
    assert isinstance(finished, FrameOut) and finished.id == 3
    assert closed.value.rcvd.code == CloseCode.GOING_AWAY


@pytest.mark.slow
async def test_livegen_serve_exits_cleanly_on_sigterm(jpeg):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        port = await asyncio.wait_for(read_port(process.stdout), WAIT_S)
        client = await LivegenClient.connect(f"ws://127.0.0.1:{port}/ws")
        await client.send_frame(jpeg(seed=1), frame_id=1)
        frame = await asyncio.wait_for(client.next_frame(), WAIT_S)
        process.send_signal(signal.SIGTERM)
        closing = await asyncio.wait_for(client.recv(), WAIT_S)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), WAIT_S)
        output, _ = await asyncio.wait_for(process.communicate(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert frame.id == 1
    assert isinstance(closing, SessionClosing)
    assert closed.value.rcvd.code == CloseCode.GOING_AWAY
    assert process.returncode == 0, output.decode()
    assert b"draining" in output


async def read_port(output: asyncio.StreamReader) -> int:
    """Read the server's output until it says where it listens."""
    while line := await output.readline():
        match = re.search(rb"serving \S+ on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("the server exited before it listened")
