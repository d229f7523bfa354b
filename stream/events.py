"""Events the protocol object hands to its transport adapter.

The adapter acts on them (find a session, queue a frame, ...); anything the peer
must be told is already queued as bytes by the time an event comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.errors import ProtocolError
from stream.messages import Signal


@dataclass(frozen=True, slots=True)
class StartRequested:
    """The peer asked for a new session, or to resume ``session_id``."""

    params: dict[str, Any]
    session_id: str | None = None
    resume_token: str | None = None


@dataclass(frozen=True, slots=True)
class ParamsUpdated:
    patch: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FrameIn:
    """An input image, still encoded, or None for a text-only request.

    ``received_at`` is on the caller's clock. A video frame has no bytes but a
    ``video`` converter to RGB pixels, called off the event loop and only if the
    frame is used (a frame replaced in the input box is never converted).
    """

    image: bytes | None
    id: int | None
    patch: dict[str, Any]
    received_at: float
    video: Callable[[], np.ndarray] | None = None


@dataclass(frozen=True, slots=True)
class CloseRequested:
    pass


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """WebRTC signalling for the transport's peer connection."""

    message: Signal


@dataclass(frozen=True, slots=True)
class PeerErrored:
    """The peer broke the protocol; an ``error`` message is already queued."""

    error: ProtocolError


Event = StartRequested | ParamsUpdated | FrameIn | CloseRequested | PeerErrored | SignalReceived
