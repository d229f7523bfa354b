"""The error tree: each class carries its wire code, and only some close the connection."""

from __future__ import annotations

import pytest

from stream.errors import (
    CloseCode,
    ErrorCode,
    ImageTooLarge,
    InvalidField,
    InvalidImage,
    InvalidParams,
    LimitExceeded,
    LivegenError,
    MalformedMessage,
    MessageTooBig,
    ProtocolError,
    ServerBusy,
    SessionError,
    SessionNotFound,
    UnknownMessageType,
    UnsupportedVersion,
)


@pytest.mark.parametrize(
    ("error", "parent", "code", "close_code"),
    [
        (MalformedMessage, ProtocolError, ErrorCode.MALFORMED_MESSAGE, None),
        (UnknownMessageType, ProtocolError, ErrorCode.UNKNOWN_TYPE, None),
        (InvalidField, ProtocolError, ErrorCode.INVALID_FIELD, None),
        (InvalidParams, InvalidField, ErrorCode.INVALID_PARAMS, None),
        (LimitExceeded, ProtocolError, ErrorCode.LIMIT_EXCEEDED, None),
        (MessageTooBig, LimitExceeded, ErrorCode.MESSAGE_TOO_BIG, CloseCode.MESSAGE_TOO_BIG),
        (ImageTooLarge, LimitExceeded, ErrorCode.IMAGE_TOO_LARGE, None),
        (InvalidImage, ProtocolError, ErrorCode.INVALID_IMAGE, None),
        (SessionError, ProtocolError, ErrorCode.NOT_STARTED, None),
        (UnsupportedVersion, SessionError, ErrorCode.UNSUPPORTED_VERSION, CloseCode.PROTOCOL_ERROR),
        (SessionNotFound, SessionError, ErrorCode.SESSION_NOT_FOUND, None),
        (ServerBusy, SessionError, ErrorCode.SERVER_BUSY, CloseCode.TRY_AGAIN_LATER),
    ],
)
def test_error_carries_its_code_and_close_code(
    error: type[ProtocolError], parent: type[ProtocolError], code: ErrorCode, close_code: CloseCode
) -> None:
    instance = error("what went wrong")
    assert issubclass(error, parent) and isinstance(instance, LivegenError)
    assert (instance.code, instance.close_code) == (code, close_code)
    assert instance.fatal is (close_code is not None)
    assert str(instance) == "what went wrong"


def test_code_given_at_raise_overrides_the_class_code_for_that_instance_only() -> None:
    error = LimitExceeded("slow down", code=ErrorCode.RATE_LIMITED)
    assert error.code == ErrorCode.RATE_LIMITED
    assert LimitExceeded("other").code == ErrorCode.LIMIT_EXCEEDED


def test_codes_are_plain_strings_and_close_codes_plain_ints_on_the_wire() -> None:
    assert ErrorCode.RATE_LIMITED == "rate_limited"
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.SESSION_TAKEN_OVER == 4001
