"""msgpack encoding of livegen messages, with the protocol limits enforced.

Decoding client messages is strict: unknown types, unknown fields, wrong types
and broken limits all raise a :class:`~stream.errors.ProtocolError` that names
what was wrong. Decoding server messages (the client side) is lenient about
fields it does not know, so that an older client keeps working with a newer server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack

from stream import PROTOCOL_VERSION
from stream.errors import (
    InvalidField,
    LimitExceeded,
    MalformedMessage,
    MessageTooBig,
    ProtocolError,
    UnknownMessageType,
    quoted,
)
from stream.limits import MAX_NESTING_DEPTH, Limits
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
from stream.params import parse_params_patch

MAX_FRAME_ID = 2**63 - 1


def pack(message: ClientMessage | ServerMessage) -> bytes:
    data: bytes = msgpack.packb(message.to_wire(), use_bin_type=True)
    return data


def unpack_map(data: bytes, limits: Limits) -> dict[str, Any]:
    """Unpack one msgpack map, refusing anything over ``limits``."""
    if len(data) > limits.max_message_bytes:
        raise MessageTooBig(
            f"message is {len(data)} bytes; the limit is {limits.max_message_bytes}"
        )
    try:
        wire = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except msgpack.StackError:
        raise LimitExceeded(
            f"message nests maps and arrays more than {MAX_NESTING_DEPTH} deep "
            "(its own map counts as one)"
        ) from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        if "exceeds max_" in str(exc):
            raise LimitExceeded(f"message breaks a protocol limit: {exc}") from None
        detail = str(exc) or type(exc).__name__
        raise MalformedMessage(f"message is not valid msgpack: {detail}") from None
    if not isinstance(wire, dict):
        raise MalformedMessage(f"message must be a msgpack map, got {type(wire).__name__}")
    return wire


def decode_client_message(data: bytes, limits: Limits) -> ClientMessage:
    wire = unpack_map(data, limits)
    kind = wire.pop("type", None)
    if kind is None:
        raise InvalidField("message has no 'type' field")
    parser = _CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        known = ", ".join(_CLIENT_PARSERS)
        raise UnknownMessageType(f"unknown message type {quoted(kind)}; known types: {known}")
    return parser(_Fields(kind, wire))


class _Fields:
    """Reads the fields of one client message, checking names and types."""

    def __init__(self, kind: str, wire: dict[str, Any]) -> None:
        self._kind = kind
        self._wire = wire

    def take(self, name: str, kind: type, *, required: bool = False) -> Any:
        """The field ``name``, checked to be a ``kind``; None when absent and not required."""
        value = self._wire.pop(name, None)
        if value is None:
            if required:
                raise InvalidField(f"{self._kind} needs the field {name!r}")
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidField(
                f"{self._kind} field {name!r} must be {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def params(self, *, required: bool = False) -> dict[str, Any]:
        raw = self._wire.pop("params", None)
        if raw is None and not required:
            return {}
        if raw is None:
            raise InvalidField(f"{self._kind} needs the field 'params'")
        return parse_params_patch(raw)

    def done(self) -> None:
        if self._wire:
            names = ", ".join(quoted(name) for name in self._wire)
            raise InvalidField(f"{self._kind} has unknown fields: {names}")


def _session_start(f: _Fields) -> SessionStart:
    protocol = f.take("protocol", int)
    session_id = f.take("session_id", str)
    resume_token = f.take("resume_token", str)
    if (session_id is None) is not (resume_token is None):
        raise InvalidField("session.start needs both 'session_id' and 'resume_token' to resume")
    message = SessionStart(
        protocol=PROTOCOL_VERSION if protocol is None else protocol,
        session_id=session_id,
        resume_token=resume_token,
        params=f.params(),
    )
    f.done()
    return message


def _params_update(f: _Fields) -> ParamsUpdate:
    message = ParamsUpdate(params=f.params(required=True))
    f.done()
    return message


def _frame(f: _Fields) -> Frame:
    frame_id = f.take("id", int)
    if frame_id is not None and not 0 <= frame_id <= MAX_FRAME_ID:
        raise InvalidField(f"frame field 'id' must be in [0, 2**63 - 1], got {frame_id}")
    try:
        image = f.take("image", bytes)
        message = Frame(image=image, id=frame_id, params=f.params())
        f.done()
    except ProtocolError as error:
        error.frame_id = frame_id  # so the client knows which frame was refused
        raise
    return message


def _session_close(f: _Fields) -> SessionClose:
    f.done()
    return SessionClose()


def _webrtc_offer(f: _Fields) -> WebRTCOffer:
    message = WebRTCOffer(sdp=f.take("sdp", str, required=True))
    f.done()
    return message


def _webrtc_candidate(f: _Fields) -> WebRTCCandidate:
    message = WebRTCCandidate(
        candidate=f.take("candidate", str, required=True),
        sdp_mid=f.take("sdp_mid", str),
        sdp_mline_index=f.take("sdp_mline_index", int),
    )
    f.done()
    return message


def _webrtc_close(f: _Fields) -> WebRTCClose:
    f.done()
    return WebRTCClose()


_CLIENT_PARSERS: dict[str, Callable[[_Fields], ClientMessage]] = {
    SessionStart.TYPE: _session_start,
    ParamsUpdate.TYPE: _params_update,
    Frame.TYPE: _frame,
    SessionClose.TYPE: _session_close,
    WebRTCOffer.TYPE: _webrtc_offer,
    WebRTCCandidate.TYPE: _webrtc_candidate,
    WebRTCClose.TYPE: _webrtc_close,
}

_SERVER_TYPES: dict[str, type[ServerMessage]] = {
    cls.TYPE: cls for cls in (SessionStarted, FrameOut, Error, SessionClosing, WebRTCAnswer)
}


def decode_server_message(data: bytes) -> ServerMessage:
    """Decode a message from the server, ignoring fields this version does not know."""
    try:
        wire = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"server message is not valid msgpack: {exc}") from None
    if not isinstance(wire, dict):
        raise MalformedMessage(f"server message must be a map, got {type(wire).__name__}")
    kind = wire.get("type")
    cls = _SERVER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownMessageType(f"unknown server message type {quoted(kind)}")
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{name: value for name, value in wire.items() if name in names})
    except TypeError as exc:
        raise InvalidField(f"server message {cls.TYPE} is missing fields: {exc}") from None
