"""The per-connection protocol object: bytes in, events and bytes out.

One :class:`SessionProtocol` lives as long as one connection. The transport
feeds every received message to :meth:`~SessionProtocol.receive` and sends
whatever :meth:`~SessionProtocol.data_to_send` returns. Peer errors never raise
out of ``receive``: they are queued as ``error`` messages and, when fatal, set
:attr:`~SessionProtocol.close_code` for the transport to close with.
"""

from __future__ import annotations

import enum

from stream import PROTOCOL_VERSION
from stream.codec import decode_client_message, pack
from stream.errors import (
    CloseCode,
    ErrorCode,
    LimitExceeded,
    MalformedMessage,
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
from stream.limits import Limits, TokenBucket
from stream.messages import (
    ClientMessage,
    Error,
    Frame,
    ParamsUpdate,
    ServerMessage,
    SessionClose,
    SessionStart,
    SessionStarted,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
)

# Messages queued for a peer that does not read them; past this the connection closes.
MAX_PENDING_MESSAGES = 256
# A flood gets one rate_limited error per interval, not one per dropped message.
RATE_NOTICE_INTERVAL_S = 1.0


class ConnectionState(enum.Enum):
    AWAITING_START = enum.auto()
    OPEN = enum.auto()
    CLOSED = enum.auto()


class PeerProtocol:
    """What every protocol object keeps for its peer, whatever its messages.

    The connection's state and close; the frames queued for the peer, bounded
    (a peer that stops reading is closed, never buffered for); and the message
    rate limit, whose error the peer hears at most once an interval.
    """

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.state = ConnectionState.AWAITING_START
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._rate = TokenBucket(limits.messages_per_s, limits.message_burst, now)
        self._next_rate_notice = now
        self._outgoing: list[bytes | str] = []

    def _within_rate(self, now: float, what: str) -> bool:
        """Whether a message at ``now`` may pass; False drops it unannounced.

        Raises ``rate_limited`` for the first message dropped in each interval.
        """
        if self._rate.take(now):
            return True
        if now < self._next_rate_notice:
            return False
        self._next_rate_notice = now + RATE_NOTICE_INTERVAL_S
        raise LimitExceeded(
            f"more than {self.limits.messages_per_s:g} messages a second: {what} are "
            f"dropped, with this notice at most every {RATE_NOTICE_INTERVAL_S:g} s",
            code=ErrorCode.RATE_LIMITED,
        )

    def _queue(self, frame: bytes | str) -> None:
        if len(self._outgoing) >= MAX_PENDING_MESSAGES:
            # The peer has stopped reading: holding more would be an unbounded queue.
            self.close(CloseCode.POLICY_VIOLATION, "too many unread messages; read what is sent")
            return
        self._outgoing.append(frame)

    def close(self, code: CloseCode, reason: str) -> None:
        """Mark the connection closed; the first code given is the one that counts."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self.close_code = code
        # A close reason must fit in a control frame (123 bytes of UTF-8).
        self.close_reason = reason.encode()[:123].decode(errors="ignore")

    def data_to_send(self) -> list[bytes | str]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing


class SessionProtocol(PeerProtocol):
    def receive(self, data: bytes | str, now: float) -> list[Event]:
        """Parse one WebSocket message received at ``now``."""
        if self.state is ConnectionState.CLOSED:
            return []
        try:
            if not self._within_rate(now, "messages"):
                return []
            if isinstance(data, str):
                raise MalformedMessage(
                    "text frames are not part of the protocol; send binary msgpack"
                )
            return [self._event(decode_client_message(data, self.limits), now)]
        except ProtocolError as error:
            self.send_error(error, error.frame_id)
            return [PeerErrored(error)]

    def _event(self, message: ClientMessage, now: float) -> Event:
        if isinstance(message, SessionStart):
            if self.state is ConnectionState.OPEN:
                raise SessionError(
                    "this connection already has a session", code=ErrorCode.ALREADY_STARTED
                )
            if message.protocol != PROTOCOL_VERSION:
                raise UnsupportedVersion(
                    f"protocol version {message.protocol} is not supported; "
                    f"this server speaks {PROTOCOL_VERSION}"
                )
            return StartRequested(message.params, message.session_id, message.resume_token)
        if self.state is not ConnectionState.OPEN:
            raise SessionError(f"send session.start before {message.TYPE}")
        if isinstance(message, ParamsUpdate):
            return ParamsUpdated(message.params)
        if isinstance(message, Frame):
            return FrameIn(message.image, message.id, message.params, now)
        if isinstance(message, WebRTCOffer | WebRTCCandidate | WebRTCClose):
            return SignalReceived(message)
        assert isinstance(message, SessionClose)
        self.close(CloseCode.NORMAL, "session closed by the client")
        return CloseRequested()

    def accept(self, started: SessionStarted) -> None:
        """The transport found or made the session: the connection is open."""
        self.state = ConnectionState.OPEN
        self.send(started)

    def send(self, message: ServerMessage) -> None:
        self._queue(pack(message))

    def send_error(self, error: ProtocolError, frame_id: int | None = None) -> None:
        """Tell the peer about ``error``; a fatal one also closes the connection."""
        self.send(Error(code=error.code, message=str(error), fatal=error.fatal, id=frame_id))
        if error.close_code is not None:
            self.close(error.close_code, str(error))
