"""SessionProtocol: feed it bytes, check the events and the bytes it queues."""

from __future__ import annotations

import msgpack
import pytest

from stream import PROTOCOL_VERSION
from stream.codec import decode_server_message
from stream.errors import (
    CloseCode,
    ErrorCode,
    InvalidImage,
    MessageTooBig,
    ProtocolError,
    SessionError,
    UnsupportedVersion,
)
from stream.events import (
    CloseRequested,
    Event,
    FrameIn,
    ParamsUpdated,
    PeerErrored,
    SignalReceived,
    StartRequested,
)
from stream.limits import Limits
from stream.messages import (
    Error,
    ServerMessage,
    SessionStarted,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
)
from stream.protocol import MAX_PENDING_MESSAGES, ConnectionState, SessionProtocol

START = msgpack.packb({"type": "session.start"})
FRAME = msgpack.packb({"type": "frame", "image": b"jpeg"})
STARTED = SessionStarted(
    session_id="s1", resume_token="t1", resumed=False, pipeline="passthrough", params={}, limits={}
)


def sent(protocol: SessionProtocol) -> list[ServerMessage]:
    return [decode_server_message(data) for data in protocol.data_to_send()]


def open_protocol(limits: Limits | None = None) -> SessionProtocol:
    protocol = SessionProtocol(limits or Limits(), now=0.0)
    protocol.receive(START, now=0.0)
    protocol.accept(STARTED)
    protocol.data_to_send()
    return protocol


def assert_refused(
    protocol: SessionProtocol, events: list[Event], code: ErrorCode, fatal: bool = False
) -> Error:
    """One PeerErrored event and one matching error message, nothing else."""
    [event] = events
    assert isinstance(event, PeerErrored)
    assert event.error.code == code
    [message] = sent(protocol)
    assert message == Error(code=code, message=str(event.error), fatal=fatal)
    assert isinstance(message, Error)
    return message


def test_session_start_requests_a_new_session_and_sends_nothing() -> None:
    protocol = SessionProtocol(Limits(), now=0.0)
    events = protocol.receive(
        msgpack.packb({"type": "session.start", "params": {"prompt": "a cat"}}), now=0.0
    )
    assert events == [StartRequested(params={"prompt": "a cat"})]
    assert protocol.state is ConnectionState.AWAITING_START
    assert protocol.data_to_send() == []


def test_session_start_with_id_and_token_requests_a_resume() -> None:
    protocol = SessionProtocol(Limits(), now=0.0)
    wire = {"type": "session.start", "session_id": "s1", "resume_token": "t1"}
    events = protocol.receive(msgpack.packb(wire), now=0.0)
    assert events == [StartRequested(params={}, session_id="s1", resume_token="t1")]


def test_accept_opens_the_connection_and_sends_session_started() -> None:
    protocol = SessionProtocol(Limits(), now=0.0)
    protocol.receive(START, now=0.0)
    protocol.accept(STARTED)
    assert protocol.state is ConnectionState.OPEN
    assert sent(protocol) == [STARTED]
    assert protocol.data_to_send() == []


def test_params_update_yields_the_checked_patch() -> None:
    protocol = open_protocol()
    wire = {"type": "params.update", "params": {"strength": 1, "prompt": "a dog"}}
    events = protocol.receive(msgpack.packb(wire), now=1.0)
    assert events == [ParamsUpdated(patch={"strength": 1.0, "prompt": "a dog"})]
    assert isinstance(events[0].patch["strength"], float)
    assert sent(protocol) == []


def test_frame_yields_frame_in_stamped_with_the_receive_time() -> None:
    protocol = open_protocol()
    wire = {"type": "frame", "image": b"jpeg", "id": 7, "params": {"seed": 3}}
    events = protocol.receive(msgpack.packb(wire), now=2.5)
    assert events == [FrameIn(image=b"jpeg", id=7, patch={"seed": 3}, received_at=2.5)]
    assert sent(protocol) == []


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"type": "webrtc.offer", "sdp": "v=0"}, WebRTCOffer(sdp="v=0")),
        (
            {"type": "webrtc.candidate", "candidate": "candidate:1", "sdp_mline_index": 0},
            WebRTCCandidate(candidate="candidate:1", sdp_mline_index=0),
        ),
        ({"type": "webrtc.close"}, WebRTCClose()),
    ],
)
def test_webrtc_signalling_goes_to_the_transport(
    wire: dict[str, object], message: WebRTCOffer | WebRTCCandidate | WebRTCClose
) -> None:
    protocol = open_protocol()
    assert protocol.receive(msgpack.packb(wire), now=1.0) == [SignalReceived(message)]
    assert sent(protocol) == []


def test_session_close_requests_close_with_the_normal_code() -> None:
    protocol = open_protocol()
    events = protocol.receive(msgpack.packb({"type": "session.close"}), now=1.0)
    assert events == [CloseRequested()]
    assert protocol.state is ConnectionState.CLOSED
    assert protocol.close_code == CloseCode.NORMAL
    assert protocol.close_reason == "session closed by the client"
    assert sent(protocol) == []


def test_receive_after_close_returns_nothing_and_sends_nothing() -> None:
    protocol = open_protocol()
    protocol.receive(msgpack.packb({"type": "session.close"}), now=1.0)
    assert protocol.receive(FRAME, now=1.1) == []
    assert protocol.receive(b"\xc1", now=1.2) == []
    assert protocol.data_to_send() == []


@pytest.mark.parametrize(
    "wire",
    [
        {"type": "frame", "image": b"x"},
        {"type": "params.update", "params": {}},
        {"type": "session.close"},
    ],
    ids=lambda wire: wire["type"],
)
def test_message_before_start_is_refused_with_not_started(wire: dict[str, object]) -> None:
    protocol = SessionProtocol(Limits(), now=0.0)
    events = protocol.receive(msgpack.packb(wire), now=0.0)
    message = assert_refused(protocol, events, ErrorCode.NOT_STARTED)
    assert message.message == f"send session.start before {wire['type']}"
    assert protocol.state is ConnectionState.AWAITING_START


def test_second_session_start_is_refused_with_already_started() -> None:
    protocol = open_protocol()
    events = protocol.receive(START, now=1.0)
    assert_refused(protocol, events, ErrorCode.ALREADY_STARTED)
    assert isinstance(events[0].error, SessionError)
    assert protocol.state is ConnectionState.OPEN
    assert protocol.close_code is None


def test_unsupported_protocol_version_is_fatal_with_protocol_error() -> None:
    protocol = SessionProtocol(Limits(), now=0.0)
    events = protocol.receive(msgpack.packb({"type": "session.start", "protocol": 99}), now=0.0)
    message = assert_refused(protocol, events, ErrorCode.UNSUPPORTED_VERSION, fatal=True)
    assert isinstance(events[0].error, UnsupportedVersion)
    assert "99" in message.message and str(PROTOCOL_VERSION) in message.message
    assert protocol.state is ConnectionState.CLOSED
    assert protocol.close_code == CloseCode.PROTOCOL_ERROR


def test_text_frame_is_refused_as_malformed_without_closing() -> None:
    protocol = open_protocol()
    events = protocol.receive('{"type": "frame"}', now=1.0)
    message = assert_refused(protocol, events, ErrorCode.MALFORMED_MESSAGE)
    assert "text frames" in message.message
    assert protocol.state is ConnectionState.OPEN


@pytest.mark.parametrize(
    ("data", "code", "mention"),
    [
        (b"\xc1", ErrorCode.MALFORMED_MESSAGE, "not valid msgpack"),
        (msgpack.packb([1, 2]), ErrorCode.MALFORMED_MESSAGE, "list"),
        (msgpack.packb({"image": b"x"}), ErrorCode.INVALID_FIELD, "'type'"),
        (msgpack.packb({"type": "frame.in"}), ErrorCode.UNKNOWN_TYPE, "'frame.in'"),
        (msgpack.packb({"type": "frame", "image": b"x", "x": 1}), ErrorCode.INVALID_FIELD, "'x'"),
        (msgpack.packb({"type": "frame", "image": "x"}), ErrorCode.INVALID_FIELD, "'image'"),
        (
            msgpack.packb({"type": "params.update", "params": {"steps": 0}}),
            ErrorCode.INVALID_PARAMS,
            "'steps'",
        ),
        (
            msgpack.packb({"type": "params.update", "params": {"prompt": "x" * 101}}),
            ErrorCode.LIMIT_EXCEEDED,
            "max_str_len",
        ),
    ],
)
def test_bad_message_is_refused_and_the_connection_stays_open(
    data: bytes, code: ErrorCode, mention: str
) -> None:
    protocol = open_protocol(Limits(max_str_len=100))
    events = protocol.receive(data, now=1.0)
    message = assert_refused(protocol, events, code)
    assert mention in message.message
    assert protocol.state is ConnectionState.OPEN
    assert protocol.receive(FRAME, now=1.1)[0] == FrameIn(b"jpeg", None, {}, 1.1)


def test_oversize_message_is_fatal_with_close_code_1009() -> None:
    protocol = open_protocol(Limits(max_message_bytes=100))
    data = msgpack.packb({"type": "frame", "image": b"x" * 100})
    events = protocol.receive(data, now=1.0)
    message = assert_refused(protocol, events, ErrorCode.MESSAGE_TOO_BIG, fatal=True)
    assert isinstance(events[0].error, MessageTooBig)
    assert f"{len(data)} bytes" in message.message
    assert protocol.state is ConnectionState.CLOSED
    assert protocol.close_code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert protocol.receive(FRAME, now=1.1) == []


def test_messages_beyond_the_burst_are_rate_limited_until_tokens_refill() -> None:
    protocol = open_protocol(Limits(messages_per_s=10.0, message_burst=3))
    # session.start took the first of the 3 tokens at t=0.
    for _ in range(2):
        assert isinstance(protocol.receive(FRAME, now=0.0)[0], FrameIn)
    events = protocol.receive(FRAME, now=0.0)
    message = assert_refused(protocol, events, ErrorCode.RATE_LIMITED)
    assert message.message.startswith("more than 10 messages a second: messages are dropped")
    assert protocol.state is ConnectionState.OPEN
    assert isinstance(protocol.receive(FRAME, now=0.1)[0], FrameIn)


def test_a_flood_gets_one_rate_limited_notice_a_second_not_one_per_message() -> None:
    protocol = open_protocol(Limits(messages_per_s=1.0, message_burst=1))
    notices = []
    for tick in range(30):  # 100 ms apart: ten messages a second against one allowed
        protocol.receive(FRAME, now=0.1 * (tick + 1))
        notices += [m for m in sent(protocol) if isinstance(m, Error)]

    # A notice at 0.1 s, 1.1 s and 2.1 s; the allowed messages at 1.0, 2.0 and 3.0 s.
    assert [notice.code for notice in notices] == [ErrorCode.RATE_LIMITED] * 3
    assert protocol.state is ConnectionState.OPEN


def test_errors_in_a_frame_message_carry_its_id() -> None:
    protocol = open_protocol()
    data = msgpack.packb({"type": "frame", "id": 5, "image": b"x", "params": {"quality": 0}})
    [event] = protocol.receive(data, now=1.0)
    [message] = sent(protocol)

    assert isinstance(event, PeerErrored)
    assert (message.code, message.id) == (ErrorCode.INVALID_PARAMS, 5)
    assert "quality" in message.message


def test_send_error_carries_the_frame_id_and_a_fatal_one_closes() -> None:
    protocol = open_protocol()
    protocol.send_error(ProtocolError("bad", code=ErrorCode.PIPELINE_FAILED), frame_id=9)
    assert protocol.state is ConnectionState.OPEN
    protocol.send_error(MessageTooBig("huge"))
    assert sent(protocol) == [
        Error(code="pipeline_failed", message="bad", fatal=False, id=9),
        Error(code="message_too_big", message="huge", fatal=True),
    ]
    assert (protocol.close_code, protocol.close_reason) == (CloseCode.MESSAGE_TOO_BIG, "huge")


def test_close_reason_is_cut_to_123_bytes_without_splitting_a_character() -> None:
    protocol = open_protocol()
    protocol.close(CloseCode.GOING_AWAY, "x" * 200)
    assert protocol.close_reason == "x" * 123
    # Two bytes a character: the 62nd would end at byte 124, so it goes whole.
    protocol = open_protocol()
    protocol.close(CloseCode.GOING_AWAY, "é" * 100)
    assert protocol.close_reason == "é" * 61


def test_a_peer_that_never_reads_is_closed_instead_of_queued_for() -> None:
    protocol = open_protocol()
    protocol.data_to_send()
    for _ in range(MAX_PENDING_MESSAGES + 10):
        protocol.send_error(InvalidImage("broken"))

    protocol.send_error(MessageTooBig("a later fatal error does not change the close code"))

    assert len(protocol.data_to_send()) == MAX_PENDING_MESSAGES
    assert protocol.state is ConnectionState.CLOSED
    assert protocol.close_code == CloseCode.POLICY_VIOLATION
