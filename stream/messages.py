"""The livegen message set: one dataclass per ``type`` tag.

Every WebSocket message is one binary frame holding one msgpack map with a
``type`` tag. The web client (``clients/web/``) mirrors these tags one for one.

Client to server: ``session.start``, ``params.update``, ``frame``, ``session.close``,
and the WebRTC signalling ``webrtc.offer``, ``webrtc.candidate``, ``webrtc.close``.
Server to client: ``session.started``, ``frame.out``, ``error``, ``session.closing``,
``webrtc.answer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from stream import PROTOCOL_VERSION


class _Message:
    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map for this message; fields that are ``None`` are left out."""
        wire: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                wire[f.name] = value
        return wire


# Client to server.


@dataclass(frozen=True, slots=True)
class SessionStart(_Message):
    """Open a new session, or resume one with its id and resume token."""

    TYPE: ClassVar[str] = "session.start"
    protocol: int = PROTOCOL_VERSION
    session_id: str | None = None
    resume_token: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParamsUpdate(_Message):
    """Change some params; they apply to the next frame generated."""

    TYPE: ClassVar[str] = "params.update"
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Frame(_Message):
    """An input image (JPEG, WebP or PNG bytes), with optional params to apply first.

    Without an image it asks for a frame generated from the params alone
    (text-to-image), when the pipeline can do that.
    """

    TYPE: ClassVar[str] = "frame"
    image: bytes | None = None
    id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionClose(_Message):
    """End the session now; its state is freed without a grace period."""

    TYPE: ClassVar[str] = "session.close"


@dataclass(frozen=True, slots=True)
class WebRTCOffer(_Message):
    """An SDP offer: the client's camera track in, a generated track back."""

    TYPE: ClassVar[str] = "webrtc.offer"
    sdp: str


@dataclass(frozen=True, slots=True)
class WebRTCCandidate(_Message):
    """A trickled ICE candidate, as the browser's RTCIceCandidate names its parts."""

    TYPE: ClassVar[str] = "webrtc.candidate"
    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True, slots=True)
class WebRTCClose(_Message):
    """Hang up the call; the session goes on over the WebSocket."""

    TYPE: ClassVar[str] = "webrtc.close"


ClientMessage = (
    SessionStart | ParamsUpdate | Frame | SessionClose | WebRTCOffer | WebRTCCandidate | WebRTCClose
)
Signal = WebRTCOffer | WebRTCCandidate | WebRTCClose


# Server to client.


@dataclass(frozen=True, slots=True)
class SessionStarted(_Message):
    TYPE: ClassVar[str] = "session.started"
    session_id: str
    resume_token: str
    resumed: bool
    pipeline: str
    params: dict[str, Any]
    limits: dict[str, Any]
    protocol: int = PROTOCOL_VERSION
    # STUN/TURN servers for a WebRTC call, as RTCPeerConnection takes them.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    # What the pipeline makes of params, so a client can grey out the controls
    # that change nothing: the params its frames never depend on, and whether a
    # frame needs an input image (no text to image). Older servers send neither.
    ignored_params: list[str] = field(default_factory=list)
    needs_image: bool = False
    # The conditioning the server has loaded, by the param that picks it:
    # {"controlnet": [names], "t2i_adapter": [names]} (both picked with the
    # ``controlnet`` param). A client shows no control the server cannot serve.
    controls: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrameOut(_Message):
    """A generated frame. ``id`` is the id of the input it answers."""

    TYPE: ClassVar[str] = "frame.out"
    image: bytes
    content_type: str
    id: int
    width: int
    height: int
    timings: dict[str, float]
    dropped: int


@dataclass(frozen=True, slots=True)
class Error(_Message):
    """Something the client sent was refused. ``fatal`` means a close follows."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    fatal: bool = False
    id: int | None = None


@dataclass(frozen=True, slots=True)
class SessionClosing(_Message):
    """The server is about to close this connection (``reason``: ``shutdown``)."""

    TYPE: ClassVar[str] = "session.closing"
    reason: str


@dataclass(frozen=True, slots=True)
class WebRTCAnswer(_Message):
    """The SDP answer to ``webrtc.offer``; it carries all the server's ICE candidates."""

    TYPE: ClassVar[str] = "webrtc.answer"
    sdp: str


ServerMessage = SessionStarted | FrameOut | Error | SessionClosing | WebRTCAnswer
