"""The README tells the truth: a client written from its protocol section alone
(plain websockets and msgpack, no livegen imports), and its Python examples as written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import WAIT_S, ShadingPipeline, encode, wait_until, ws_url


async def exchange(websocket, message: dict | bytes) -> dict:
    """Send a message (a map, or bytes sent as they are) and read the next one."""
    if isinstance(message, dict):
        message = msgpack.packb(message, use_bin_type=True)
    await websocket.send(message)
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


# The protocol section's finer points, each as a client reads them.


async def start_session(websocket, **fields) -> dict:
    started = await exchange(websocket, {"type": "session.start", **fields})
    assert started["type"] == "session.started", started
    return started


async def test_limits_say_the_nesting_depth_and_the_rate_is_a_float(start_server):
    server = await start_server(messages_per_s=500)
    async with connect(ws_url(server)) as websocket:
        limits = (await start_session(websocket))["limits"]
        # The message's map is level 1 and params level 2: 1022 arrays in a param reach 1024.
        nested = [await exchange(websocket, nest_in_params(depth)) for depth in (1022, 1023)]

    assert limits["max_nesting_depth"] == 1024
    assert limits["messages_per_s"] == 500.0 and isinstance(limits["messages_per_s"], float)
    decoded, refused = nested
    assert decoded["code"] == "invalid_params"  # it decoded: a list is no prompt
    assert refused["code"] == "limit_exceeded" and "1024" in refused["message"]
    assert refused["fatal"] is False


def nest_in_params(depth: int) -> bytes:
    """A params.update whose prompt is ``depth`` arrays, one in the other, around nil."""
    head = msgpack.packb({"type": "params.update", "params": {"prompt": None}})
    return head[:-1] + b"\x91" * depth + b"\xc0"  # the nil at the end, wrapped


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"params": {}}, "invalid_field"),
        ({"type": None}, "invalid_field"),
        ({"type": 3}, "unknown_type"),
        ({"type": ["frame"]}, "unknown_type"),
        ({"type": "frame.in"}, "unknown_type"),
    ],
    ids=["missing", "nil", "int", "list", "unknown"],
)
async def test_a_missing_type_is_an_invalid_field_and_a_wrong_one_an_unknown_type(
    start_server, message, code
):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        error = await exchange(websocket, message)
    assert (error["type"], error["code"], error["fatal"]) == ("error", code, False)


async def test_frames_refused_on_arrival_take_no_number_and_their_errors_no_id(start_server, jpeg):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        await start_session(websocket)
        answers = [
            await exchange(websocket, message)
            for message in (
                {"type": "frame", "image": jpeg(seed=1)},
                {"type": "frame", "image": jpeg(seed=2), "params": {"steps": 0}},
                {"type": "frame"},  # passthrough needs an image
                {"type": "frame", "image": b"not an image"},
                {"type": "frame", "image": jpeg(seed=3)},
                {"type": "frame", "image": jpeg(seed=4), "id": 77, "params": {"steps": 0}},
            )
        ]

    first, bad_params, no_image, broken, taken, own_id = answers
    assert (first["type"], first["id"]) == ("frame.out", 1)
    # Refused on arrival: not taken in, no number, so the error has no id.
    assert bad_params["code"] == "invalid_params" and "id" not in bad_params
    assert no_image["code"] == "invalid_field" and "id" not in no_image
    # Taken in, then failed: it kept its number, and its error says which.
    assert (broken["code"], broken["id"]) == ("invalid_image", 2)
    assert (taken["type"], taken["id"]) == ("frame.out", 3)
    # A frame sent with an id is named by it, taken in or not.
    assert (own_id["code"], own_id["id"]) == ("invalid_params", 77)


async def test_params_sent_with_a_frame_stay_for_later_frames_and_rerun_nothing(start_server, jpeg):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        await start_session(websocket)
        with_params = await exchange(
            websocket,
            {"type": "frame", "image": jpeg(seed=1), "id": 1, "params": {"output_format": "png"}},
        )
        # Had the params rerun frame 1, its second frame.out would come before this error,
        # or (replaced in the input box by frame 2) count in frame 2's dropped.
        error = await exchange(websocket, {"type": "params.update", "params": {"steps": 0}})
        later = await exchange(websocket, {"type": "frame", "image": jpeg(seed=2), "id": 2})

    assert (with_params["id"], with_params["content_type"]) == (1, "image/png")
    assert error["code"] == "invalid_params"
    assert (later["id"], later["content_type"], later["dropped"]) == (2, "image/png", 0)


async def test_a_session_outlives_a_fatal_close_and_resumes(start_server):
    server = await start_server(max_message_bytes=1 << 16)
    async with connect(ws_url(server)) as websocket:
        started = await start_session(websocket, params={"prompt": "kept"})
        await websocket.send(msgpack.packb({"type": "frame", "image": b"x" * (1 << 16)}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), WAIT_S)
    async with connect(ws_url(server)) as websocket:
        resumed = await start_session(
            websocket, session_id=started["session_id"], resume_token=started["resume_token"]
        )

    assert closed.value.rcvd.code == 1009
    assert resumed["resumed"] is True and resumed["params"]["prompt"] == "kept"


async def test_a_client_that_stops_reading_is_closed_with_1008_and_its_session_kept(
    start_server,
):
    # A burst far above the default, so that only the socket can be what stops the replies.
    server = await start_server(message_burst=10_000, messages_per_s=1e6)
    outputs_replaced = server.metrics.frames_dropped.labels("output")._value.get
    # Noise PNGs are big: a few fill the socket's buffers once the client stops reading.
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    image = encode(noise, "PNG")
    websocket = await connect(ws_url(server), max_size=None, max_queue=1, compression=None)
    started = await start_session(websocket, params={"output_format": "png"})
    (session,) = server.sessions
    for frame_id in range(1, 41):
        await websocket.send(msgpack.packb({"type": "frame", "image": image, "id": frame_id}))
        await wait_until(lambda: session.frames_in == frame_id)  # noqa: B023 - awaited here
        assert await asyncio.to_thread(server.worker.wait_idle, WAIT_S)
        if outputs_replaced():
            break  # the socket is full: a frame.out had to be replaced before it left
    assert outputs_replaced()

    # Refusals pile up now, each a message to send; the 257th waiting one closes.
    (connection,) = server.connections
    refused = server.metrics.errors.labels("invalid_field")._value.get
    sent = 0
    while connection.protocol.close_code is None and sent < 100_000:
        for _ in range(500):
            await websocket.send(msgpack.packb({"type": "frame"}))  # passthrough needs an image
        sent += 500
        await wait_until(
            lambda: refused() == sent or connection.protocol.close_code is not None  # noqa: B023 - awaited here
        )
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S)))
    async with connect(ws_url(server)) as again:
        resumed = await start_session(
            again, session_id=started["session_id"], resume_token=started["resume_token"]
        )

    assert closed.value.rcvd.code == 1008 and "unread" in closed.value.rcvd.reason
    errors = [message for message in received if message["type"] == "error"]
    assert len(errors) >= 256 and {error["code"] for error in errors} == {"invalid_field"}
    # dropped counts inputs only: every input ran, only outputs were replaced.
    assert {message["dropped"] for message in received if message["type"] == "frame.out"} == {0}
    assert resumed["resumed"] is True


async def test_a_client_that_reads_is_never_closed_for_a_burst_of_refusals(start_server):
    server = await start_server(message_burst=10_000, messages_per_s=1e6)
    async with connect(ws_url(server)) as websocket:
        await start_session(websocket)
        for _ in range(1000):  # websockets sends them in few writes: one burst to the server
            await websocket.send(msgpack.packb({"type": "frame"}))
        errors = [
            msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S)) for _ in range(1000)
        ]
        # Still open: a ping is answered (it raises ConnectionClosed on a closed connection).
        await asyncio.wait_for(await websocket.ping(), WAIT_S)

    assert [error["code"] for error in errors] == ["invalid_field"] * 1000


@pytest.mark.parametrize(("code", "echoed"), [(None, 1005), (1000, 1000), (4321, 4321)])
async def test_a_client_close_is_echoed_with_its_own_code_or_none(start_server, code, echoed):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        await start_session(websocket)
        # websockets' close(None) sends a close frame without a code, as browsers' close() does.
        await websocket.close(code)

    assert websocket.protocol.close_rcvd.code == echoed
