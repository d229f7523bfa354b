"""Hostile input over a real socket: each case gets a clear error, and nothing else breaks."""

from __future__ import annotations

import asyncio

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegen_client import LivegenClient
from stream.codec import decode_server_message, pack
from stream.errors import CloseCode, ErrorCode
from stream.messages import Error, SessionStart
from tests.helpers import WAIT_S, encode, make_pixels, ws_url


async def open_raw_session(server):
    websocket = await connect(ws_url(server), max_size=None, compression=None)
    await websocket.send(pack(SessionStart()))
    decode_server_message(await websocket.recv())
    return websocket


async def next_error(websocket) -> Error:
    message = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
    assert isinstance(message, Error), message
    return message


def frame(image: bytes, **fields) -> bytes:
    return msgpack.packb({"type": "frame", "image": image, **fields}, use_bin_type=True)


BAD_MESSAGES = {
    "not msgpack": (b"\xc1\xc1\xc1", ErrorCode.MALFORMED_MESSAGE, "msgpack"),
    "not a map": (msgpack.packb([1, 2]), ErrorCode.MALFORMED_MESSAGE, "map"),
    "no type": (msgpack.packb({"image": b""}), ErrorCode.INVALID_FIELD, "type"),
    "unknown type": (msgpack.packb({"type": "fram"}), ErrorCode.UNKNOWN_TYPE, "fram"),
    "missing image": (msgpack.packb({"type": "frame"}), ErrorCode.INVALID_FIELD, "image"),
    "image as text": (
        msgpack.packb({"type": "frame", "image": "abc"}),
        ErrorCode.INVALID_FIELD,
        "image",
    ),
    "unknown field": (frame(b"x", colour=1), ErrorCode.INVALID_FIELD, "colour"),
    "params not a map": (
        msgpack.packb({"type": "params.update", "params": 3}),
        ErrorCode.INVALID_PARAMS,
        "map",
    ),
    "strength out of range": (
        msgpack.packb({"type": "params.update", "params": {"strength": 2.0}}),
        ErrorCode.INVALID_PARAMS,
        "strength",
    ),
    "steps as text": (
        msgpack.packb({"type": "params.update", "params": {"steps": "4"}}),
        ErrorCode.INVALID_PARAMS,
        "steps",
    ),
    "huge map": (
        msgpack.packb({"type": "params.update", "params": {str(i): i for i in range(1000)}}),
        ErrorCode.LIMIT_EXCEEDED,
        "limit",
    ),
    "image that does not decode": (
        frame(b"\xff\xd8not a jpeg", id=3),
        ErrorCode.INVALID_IMAGE,
        "decode",
    ),
    # Within the pixel limit, but wider than JPEG's 65,500 pixels a side.
    "output too wide for its format": (
        frame(encode(np.zeros((4, 70_000, 3), np.uint8), "PNG"), id=5),
        ErrorCode.INVALID_IMAGE,
        "70000x4 frame cannot be written as jpeg",
    ),
    "image over the pixel limit": (
        frame(encode(make_pixels(1200, 1000, seed=0), "PNG"), id=4),
        ErrorCode.IMAGE_TOO_LARGE,
        "pixels",
    ),
}


@pytest.mark.parametrize("case", BAD_MESSAGES, ids=list(BAD_MESSAGES))
async def test_bad_message_gets_a_clear_error_and_the_session_goes_on(start_server, jpeg, case):
    data, code, word = BAD_MESSAGES[case]
    server = await start_server(max_image_pixels=1_000_000)
    bystander = await LivegenClient.connect(ws_url(server))
    websocket = await open_raw_session(server)

    await websocket.send(data)
    error = await next_error(websocket)
    await websocket.send(frame(jpeg(seed=1), id=99))
    answer = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
    await bystander.send_frame(jpeg(seed=2), frame_id=1)
    bystander_frame = await asyncio.wait_for(bystander.next_frame(), WAIT_S)
    await websocket.close()
    await bystander.close()

    assert error.code == code and word in error.message and not error.fatal
    assert answer.TYPE == "frame.out" and answer.id == 99
    assert bystander_frame.id == 1


async def test_frame_errors_carry_the_frame_id(start_server):
    server = await start_server()
    websocket = await open_raw_session(server)
    await websocket.send(frame(b"garbage", id=12))
    error = await next_error(websocket)
    await websocket.close()

    assert (error.code, error.id) == (ErrorCode.INVALID_IMAGE, 12)


async def test_an_oversize_message_closes_with_1009_and_other_sessions_go_on(start_server, jpeg):
    server = await start_server(max_message_bytes=64 * 1024)
    bystander = await LivegenClient.connect(ws_url(server))
    websocket = await open_raw_session(server)

    await websocket.send(frame(b"\0" * 100_000))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(websocket.recv(), WAIT_S)
    await bystander.send_frame(jpeg(seed=1), frame_id=1)
    answer = await asyncio.wait_for(bystander.next_frame(), WAIT_S)
    await bystander.close()

    assert closed.value.rcvd.code == CloseCode.MESSAGE_TOO_BIG
    assert answer.id == 1


async def test_messages_before_session_start_are_refused(start_server, jpeg):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        await websocket.send(frame(jpeg(seed=1)))
        error = await next_error(websocket)

    assert error.code == ErrorCode.NOT_STARTED and "session.start" in error.message


async def test_text_frames_are_refused(start_server):
    server = await start_server()
    websocket = await open_raw_session(server)
    await websocket.send('{"type": "frame"}')
    error = await next_error(websocket)
    await websocket.close()

    assert error.code == ErrorCode.MALFORMED_MESSAGE and "binary" in error.message


async def test_an_unsupported_protocol_version_closes_the_connection(start_server):
    server = await start_server()
    async with connect(ws_url(server)) as websocket:
        await websocket.send(pack(SessionStart(protocol=99)))
        error = await next_error(websocket)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), WAIT_S)

    assert error.code == ErrorCode.UNSUPPORTED_VERSION and error.fatal
    assert closed.value.rcvd.code == CloseCode.PROTOCOL_ERROR


async def test_a_flood_is_rate_limited_with_an_error(start_server, jpeg):
    server = await start_server(messages_per_s=5, message_burst=3)
    websocket = await open_raw_session(server)
    update = msgpack.packb({"type": "params.update", "params": {"seed": 1}})
    for _ in range(10):
        await websocket.send(update)
    error = await next_error(websocket)
    await websocket.close()

    assert error.code == ErrorCode.RATE_LIMITED
