"""The msgpack codec: strict on client messages, lenient on server ones, limits enforced."""

from __future__ import annotations

import msgpack
import pytest

from stream import PROTOCOL_VERSION
from stream.codec import (
    MAX_FRAME_ID,
    decode_client_message,
    decode_server_message,
    pack,
    unpack_map,
)
from stream.errors import (
    CloseCode,
    ErrorCode,
    InvalidField,
    InvalidParams,
    LimitExceeded,
    MalformedMessage,
    MessageTooBig,
    ProtocolError,
    UnknownMessageType,
)
from stream.limits import Limits
from stream.messages import (
    ClientMessage,
    Error,
    Frame,
    FrameOut,
    ParamsUpdate,
    ServerMessage,
    SessionClose,
    SessionClosing,
    SessionStart,
    SessionStarted,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
)

LIMITS = Limits()


@pytest.mark.parametrize(
    "message",
    [
        SessionStart(),
        SessionStart(session_id="s1", resume_token="t1", params={"prompt": "a cat", "seed": 7}),
        ParamsUpdate(params={"strength": 0.25, "output_format": "png"}),
        Frame(image=b"\xff\xd8jpeg"),
        Frame(image=b"", id=MAX_FRAME_ID, params={"steps": 4}),
        Frame(params={"prompt": "a text-to-image request has no image"}),
        SessionClose(),
        WebRTCOffer(sdp="v=0\r\n"),
        WebRTCCandidate(candidate="candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdp_mid="0"),
        WebRTCCandidate(candidate="", sdp_mline_index=0),
        WebRTCClose(),
    ],
    ids=repr,
)
def test_client_message_round_trips(message: ClientMessage) -> None:
    assert decode_client_message(pack(message), LIMITS) == message


def test_pack_leaves_out_fields_that_are_none_and_keeps_bytes_as_bin() -> None:
    wire = msgpack.unpackb(pack(Frame(image=b"\x00\xff")), raw=True)
    assert wire == {b"type": b"frame", b"image": b"\x00\xff", b"params": {}}


def test_session_start_without_protocol_gets_the_current_version() -> None:
    message = decode_client_message(msgpack.packb({"type": "session.start"}), LIMITS)
    assert message == SessionStart(protocol=PROTOCOL_VERSION)


def test_params_are_checked_and_ints_for_floats_normalised() -> None:
    data = msgpack.packb({"type": "frame", "image": b"x", "params": {"guidance_scale": 2}})
    message = decode_client_message(data, LIMITS)
    assert isinstance(message, Frame)
    assert message.params == {"guidance_scale": 2.0}
    assert isinstance(message.params["guidance_scale"], float)


@pytest.mark.parametrize(
    ("data", "error", "mention"),
    [
        (b"\xc1", MalformedMessage, "not valid msgpack"),
        (b"", MalformedMessage, "incomplete input"),
        (b"\x81\xa4ty", MalformedMessage, "incomplete input"),
        (msgpack.packb({"type": "session.close"}) + b"\x00", MalformedMessage, "extra data"),
        (b"\x81\xa4type\xa2\xff\xfe", MalformedMessage, "utf-8"),
        (msgpack.packb({1: "session.close"}), MalformedMessage, "map key"),
        (msgpack.packb([1, 2]), MalformedMessage, "got list"),
        (msgpack.packb("session.close"), MalformedMessage, "got str"),
        (msgpack.packb({"image": b"x"}), InvalidField, "'type'"),
        (msgpack.packb({"type": None}), InvalidField, "'type'"),
        (msgpack.packb({"type": "frame.in"}), UnknownMessageType, "'frame.in'"),
        (msgpack.packb({"type": 3}), UnknownMessageType, "3"),
        (msgpack.packb({"type": "session.close", "reason": "x"}), InvalidField, "'reason'"),
        (msgpack.packb({"type": "frame", "image": "jpeg"}), InvalidField, "must be bytes, got str"),
        (
            msgpack.packb({"type": "webrtc.offer"}),
            InvalidField,
            "webrtc.offer needs the field 'sdp'",
        ),
        (msgpack.packb({"type": "webrtc.candidate", "candidate": 1}), InvalidField, "got int"),
        (msgpack.packb({"type": "frame", "image": b"", "id": True}), InvalidField, "got bool"),
        (msgpack.packb({"type": "frame", "image": b"", "id": 1.0}), InvalidField, "'id'"),
        (msgpack.packb({"type": "frame", "image": b"", "id": -1}), InvalidField, "got -1"),
        (msgpack.packb({"type": "frame", "image": b"", "id": 2**63}), InvalidField, "'id'"),
        (msgpack.packb({"type": "frame", "image": b"", "params": []}), InvalidParams, "map"),
        (msgpack.packb({"type": "session.start", "protocol": "1"}), InvalidField, "'protocol'"),
        (msgpack.packb({"type": "session.start", "session_id": "s"}), InvalidField, "resume"),
        (msgpack.packb({"type": "session.start", "resume_token": "t"}), InvalidField, "resume"),
        (msgpack.packb({"type": "params.update"}), InvalidField, "'params'"),
        (msgpack.packb({"type": "params.update", "params": {"steps": 0}}), InvalidParams, "steps"),
    ],
)
def test_bad_client_message_is_refused_naming_what_is_wrong(
    data: bytes, error: type[ProtocolError], mention: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(data, LIMITS)
    assert type(caught.value) is error
    assert caught.value.code == error.code
    assert not caught.value.fatal
    assert mention in str(caught.value)


@pytest.mark.parametrize(
    ("wire", "limit"),
    [
        ({"prompt": "x" * 17}, "max_str_len"),
        ({"items": list(range(5))}, "max_array_len"),
        ({str(i): i for i in range(5)}, "max_map_len"),
        ({"image": msgpack.ExtType(1, b"x")}, "max_ext_len"),
    ],
    ids=["str", "array", "map", "ext"],
)
def test_length_over_a_limit_is_refused_with_limit_exceeded(wire: object, limit: str) -> None:
    limits = Limits(max_str_len=16, max_array_len=4, max_map_len=4)
    with pytest.raises(LimitExceeded) as caught:
        unpack_map(msgpack.packb(wire), limits)
    assert type(caught.value) is LimitExceeded
    assert caught.value.code == ErrorCode.LIMIT_EXCEEDED
    assert limit in str(caught.value)


def test_lengths_at_the_limits_are_accepted() -> None:
    limits = Limits(max_str_len=16, max_array_len=4, max_map_len=4)
    wire = {"prompt": "x" * 16, "items": [1, 2, 3, 4]}
    assert unpack_map(msgpack.packb(wire), limits) == wire


def test_message_over_the_byte_limit_is_fatal_with_message_too_big() -> None:
    data = msgpack.packb({"type": "frame", "image": b"x" * 100})
    assert unpack_map(data, Limits(max_message_bytes=len(data)))["image"] == b"x" * 100
    with pytest.raises(MessageTooBig) as caught:
        unpack_map(data, Limits(max_message_bytes=len(data) - 1))
    assert caught.value.code == ErrorCode.MESSAGE_TOO_BIG
    assert caught.value.fatal
    assert caught.value.close_code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert f"{len(data)} bytes; the limit is {len(data) - 1}" in str(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        SessionStarted(
            session_id="s1",
            resume_token="t1",
            resumed=True,
            pipeline="passthrough",
            params={"seed": 1},
            limits=LIMITS.to_wire(),
        ),
        FrameOut(
            image=b"\x89PNG",
            content_type="image/png",
            id=4,
            width=64,
            height=32,
            timings={"total": 0.01},
            dropped=2,
        ),
        Error(code=ErrorCode.INVALID_FIELD, message="bad", fatal=True, id=3),
        SessionClosing(reason="shutdown"),
        WebRTCAnswer(sdp="v=0\r\n"),
    ],
    ids=lambda message: message.TYPE,
)
def test_server_message_round_trips(message: ServerMessage) -> None:
    assert decode_server_message(pack(message)) == message


def test_server_message_fields_this_version_does_not_know_are_ignored() -> None:
    data = msgpack.packb({"type": "session.closing", "reason": "shutdown", "after_s": 5})
    assert decode_server_message(data) == SessionClosing(reason="shutdown")


@pytest.mark.parametrize(
    ("data", "error", "mention"),
    [
        (b"\xc1", MalformedMessage, "not valid msgpack"),
        (msgpack.packb([1]), MalformedMessage, "got list"),
        (msgpack.packb({"reason": "x"}), UnknownMessageType, "None"),
        (msgpack.packb({"type": "frame"}), UnknownMessageType, "'frame'"),
        (msgpack.packb({"type": ["error"]}), UnknownMessageType, "['error']"),
        (msgpack.packb({"type": "error", "code": "x"}), InvalidField, "message"),
    ],
)
def test_bad_server_message_raises_a_protocol_error(
    data: bytes, error: type[ProtocolError], mention: str
) -> None:
    with pytest.raises(error) as caught:
        decode_server_message(data)
    assert mention in str(caught.value)
