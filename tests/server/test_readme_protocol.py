"""A client written from the README alone: plain websockets and msgpack, no livegen imports.

If this test breaks, the README's protocol section no longer tells the truth.
"""

from __future__ import annotations

import asyncio

import msgpack
from websockets.asyncio.client import connect

from tests.helpers import WAIT_S, ws_url


async def exchange(websocket, message: dict) -> dict:
    await websocket.send(msgpack.packb(message, use_bin_type=True))
    return msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))


async def test_the_readme_session_in_four_messages(start_server, jpeg):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        started = await exchange(
            websocket, {"type": "session.start", "protocol": 1, "params": {"prompt": "a fox"}}
        )
        out = await exchange(websocket, {"type": "frame", "image": jpeg(seed=1), "id": 1})
        again = await exchange(websocket, {"type": "params.update", "params": {"prompt": "an owl"}})
        error = await exchange(websocket, {"type": "params.update", "params": {"steps": 0}})

    assert started["type"] == "session.started" and started["params"]["prompt"] == "a fox"
    assert {"session_id", "resume_token", "resumed", "pipeline", "limits", "protocol"} <= set(
        started
    )
    assert out["type"] == "frame.out" and out["id"] == 1 and out["content_type"] == "image/jpeg"
    assert isinstance(out["image"], bytes) and out["image"].startswith(b"\xff\xd8")
    assert {"width", "height", "timings", "dropped"} <= set(out)
    assert again["type"] == "frame.out" and again["id"] == 1
    assert error == {
        "type": "error",
        "code": "invalid_params",
        "message": error["message"],
        "fatal": False,
    }
    assert "steps" in error["message"]


async def test_the_readme_resume(start_server):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        started = await exchange(websocket, {"type": "session.start"})
    async with connect(ws_url(server)) as websocket:
        resumed = await exchange(
            websocket,
            {
                "type": "session.start",
                "session_id": started["session_id"],
                "resume_token": started["resume_token"],
            },
        )

    assert resumed["type"] == "session.started" and resumed["resumed"] is True
    assert resumed["session_id"] == started["session_id"]
