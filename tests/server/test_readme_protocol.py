"""The README tells the truth: a client written from its protocol section alone
(plain websockets and msgpack, no livegen imports), and its Python examples as written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
from websockets.asyncio.client import connect

from tests.helpers import WAIT_S, ShadingPipeline, ws_url


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


async def test_the_readme_python_example_runs_as_written(start_server, jpeg, tmp_path, monkeypatch):
    server = await start_server()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## The Python client", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sketch.jpg").write_bytes(jpeg(seed=3))
    monkeypatch.chdir(tmp_path)

    code = example.replace("ws://127.0.0.1:8000/ws", ws_url(server))
    await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {"__name__": "readme"})

    assert (tmp_path / "out.jpg").read_bytes().startswith(b"\xff\xd8")
    assert (tmp_path / "owl.jpg").read_bytes().startswith(b"\xff\xd8")


@pytest.mark.slow
async def test_the_readme_webrtc_example_runs_as_written(start_server, capsys):
    server = await start_server(ShadingPipeline())
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("## WebRTC", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]

    code = example.replace("ws://127.0.0.1:8000/ws", ws_url(server))
    await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {"__name__": "readme"})

    restyled = int(capsys.readouterr().out.split()[0])
    assert restyled > 10
