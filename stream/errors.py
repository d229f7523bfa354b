"""The exceptions livegen raises, and the error codes and close codes they carry.

Every error a peer can cause is a :class:`ProtocolError`. The protocol object
turns it into an ``error`` message (and, when fatal, a close code); it never
escapes into a transport adapter::

    LivegenError
    └── ProtocolError              the peer sent something we refuse
        ├── MalformedMessage       not msgpack, not a map, a text frame
        ├── UnknownMessageType     a ``type`` tag we do not know
        ├── InvalidField           a field missing, wrongly typed or out of range
        │   └── InvalidParams      params the running pipeline cannot serve
        ├── LimitExceeded          a protocol limit broken (lengths, pixels, rate)
        │   ├── MessageTooBig      the whole message is over the byte limit (fatal)
        │   └── ImageTooLarge      an image over the pixel limit
        ├── InvalidImage           image bytes that do not decode
        └── SessionError           start and resume: order, version, unknown session
            ├── UnsupportedVersion the client speaks a protocol we do not (fatal)
            ├── SessionNotFound    resume of an unknown, expired or closed session
            └── ServerBusy         no room for another session (fatal)
"""

from __future__ import annotations

import enum
import reprlib


class ErrorCode(enum.StrEnum):
    """The ``code`` field of an ``error`` message. Stable: clients branch on it."""

    MALFORMED_MESSAGE = "malformed_message"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    INVALID_PARAMS = "invalid_params"
    LIMIT_EXCEEDED = "limit_exceeded"
    MESSAGE_TOO_BIG = "message_too_big"
    IMAGE_TOO_LARGE = "image_too_large"
    RATE_LIMITED = "rate_limited"
    INVALID_IMAGE = "invalid_image"
    NOT_STARTED = "not_started"
    ALREADY_STARTED = "already_started"
    UNSUPPORTED_VERSION = "unsupported_version"
    SESSION_NOT_FOUND = "session_not_found"
    SERVER_BUSY = "server_busy"
    PIPELINE_FAILED = "pipeline_failed"
    WEBRTC_FAILED = "webrtc_failed"


class CloseCode(enum.IntEnum):
    """WebSocket close codes livegen uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    SESSION_TAKEN_OVER = 4001


class LivegenError(Exception):
    """Base class of every livegen error."""


class ProtocolError(LivegenError):
    """The peer sent something livegen refuses.

    ``code`` goes on the wire; ``close_code`` is set when the connection cannot
    go on after this error.
    """

    code: ErrorCode = ErrorCode.MALFORMED_MESSAGE
    close_code: CloseCode | None = None
    # The id of the frame the error is about, when it is about one.
    frame_id: int | None = None

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def fatal(self) -> bool:
        return self.close_code is not None


class MalformedMessage(ProtocolError):
    code = ErrorCode.MALFORMED_MESSAGE


class UnknownMessageType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class InvalidField(ProtocolError):
    code = ErrorCode.INVALID_FIELD


class InvalidParams(InvalidField):
    code = ErrorCode.INVALID_PARAMS


class LimitExceeded(ProtocolError):
    code = ErrorCode.LIMIT_EXCEEDED


class MessageTooBig(LimitExceeded):
    code = ErrorCode.MESSAGE_TOO_BIG
    close_code = CloseCode.MESSAGE_TOO_BIG


class ImageTooLarge(LimitExceeded):
    code = ErrorCode.IMAGE_TOO_LARGE


class InvalidImage(ProtocolError):
    code = ErrorCode.INVALID_IMAGE


class SessionError(ProtocolError):
    code = ErrorCode.NOT_STARTED


class UnsupportedVersion(SessionError):
    code = ErrorCode.UNSUPPORTED_VERSION
    close_code = CloseCode.PROTOCOL_ERROR


class SessionNotFound(SessionError):
    code = ErrorCode.SESSION_NOT_FOUND


class ServerBusy(SessionError):
    code = ErrorCode.SERVER_BUSY
    close_code = CloseCode.TRY_AGAIN_LATER


_PEER_REPR = reprlib.Repr()
_PEER_REPR.maxlevel = 3
_PEER_REPR.maxstring = _PEER_REPR.maxother = 64


def quoted(value: object) -> str:
    """A peer's value as an error message quotes it: short, and safe however deeply it
    nests (the plain repr of a list nested a thousand deep overflows the stack)."""
    return _PEER_REPR.repr(value)
