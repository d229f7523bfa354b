"""One WebSocket connection: feeds the protocol object and sends what it says.

Each message its :class:`~server.transport.Transport` receives goes to
:class:`~stream.protocol.SessionProtocol`, and the connection acts on the
events that come out. The transport writes everything out: control messages in
order, then the newest generated frame (which comes packed); a client that
reads slowly gets its stale frames replaced, never queued. WebRTC signalling
starts and ends the connection's :class:`~server.webrtc.Call`; it never
outlives the connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection

from server.transport import Transport
from server.webrtc_options import load_webrtc
from stream.errors import (
    CloseCode,
    ErrorCode,
    InvalidField,
    InvalidParams,
    ProtocolError,
    SessionNotFound,
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
from stream.messages import (
    ServerMessage,
    Signal,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
)
from stream.protocol import ConnectionState, SessionProtocol
from stream.routing import requested_sid
from stream.session import Session

if TYPE_CHECKING:
    from server.app import LivegenServer
    from server.webrtc import Call


class Connection:
    def __init__(self, app: LivegenServer, websocket: ServerConnection) -> None:
        self.app = app
        self.websocket = websocket
        self.protocol = SessionProtocol(app.config.limits, time.perf_counter())
        self.session: Session | None = None
        # The session the URL names (/ws?sid=...): where a proxy sent this resume.
        self.sid = requested_sid(websocket.request.path) if websocket.request else None
        self._transport: Transport[bytes] = Transport(
            websocket, self.protocol, app.metrics, lambda packed: packed
        )
        self.call: Call | None = None
        # Signalling runs in order, one message at a time, off the receive loop.
        self._signalling = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # Peer connections being closed: a close outlives the task that began it.
        self._closing: set[asyncio.Future[None]] = set()

    async def run(self) -> None:
        async with self._transport:
            start_deadline = asyncio.get_running_loop().call_later(
                self.app.config.session_start_timeout_s, self._check_started
            )
            try:
                await self._transport.receive(self._receive)
            finally:
                start_deadline.cancel()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._hang_up()
                await asyncio.gather(*self._closing, return_exceptions=True)
                self.app.detach(self)

    def send_frame(self, data: bytes, received_at: float) -> None:
        """Queue a packed ``frame.out``; one not yet sent is replaced."""
        self._transport.put(data, received_at)

    def send(self, message: ServerMessage) -> None:
        self.protocol.send(message)
        self._transport.wake()

    def send_error(self, error: ProtocolError, frame_id: int | None = None) -> None:
        self.protocol.send_error(error, frame_id)
        self.app.metrics.errors.labels(error.code).inc()
        self._transport.wake()

    def close(self, code: CloseCode, reason: str) -> None:
        """Close after everything already queued has been sent."""
        self.protocol.close(code, reason)
        self._transport.wake()

    def _receive(self, data: bytes | str) -> None:
        for event in self.protocol.receive(data, time.perf_counter()):
            self._handle(event)

    def _check_started(self) -> None:
        """An idle connection without a session only holds resources: close it."""
        if self.protocol.state is ConnectionState.AWAITING_START:
            timeout = self.app.config.session_start_timeout_s
            self.close(CloseCode.POLICY_VIOLATION, f"no session started within {timeout:g} s")

    def _handle(self, event: Event) -> None:
        if isinstance(event, PeerErrored):
            self.app.metrics.errors.labels(event.error.code).inc()
        elif isinstance(event, StartRequested):
            try:
                self._check_sid(event)
                self.session = self.app.open_session(self, event)
            except ProtocolError as error:
                self.send_error(error)
        elif isinstance(event, ParamsUpdated):
            assert self.session is not None
            text_only = self.app.pipeline.text_to_image
            if self._apply_params(event.patch) and self.session.rerun(
                time.perf_counter(), text_only=text_only
            ):
                self.app.worker.notify(self.session)
        elif isinstance(event, FrameIn):
            assert self.session is not None
            self._offer(self.session, event)
        elif isinstance(event, SignalReceived):
            self._spawn(self._signal(event.message))
        else:
            assert isinstance(event, CloseRequested) and self.session is not None
            self.app.close_session(self.session, "closed by the client (session.close)")

    def _check_sid(self, request: StartRequested) -> None:
        """A resume must name the session its URL named: that is what it was routed by."""
        if self.sid is not None and request.session_id not in (None, self.sid):
            raise SessionNotFound(
                f"session.start resumes {request.session_id!r} but the URL's sid is "
                f"{self.sid!r}; resume with the same session id in both"
            )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _signal(self, message: Signal) -> None:
        async with self._signalling:
            if isinstance(message, WebRTCOffer):
                await self._call(message.sdp)
            elif isinstance(message, WebRTCCandidate):
                await self._add_candidate(message)
            else:
                await self._hang_up()

    async def _call(self, sdp: str) -> None:
        """Answer an offer; a new offer replaces the call in progress."""
        await self._hang_up()
        session = self.session
        assert session is not None
        await load_webrtc()  # aiortc loads with the first call, not at start
        from server.webrtc import Call

        call = Call(self.app.webrtc, lambda frame: self._offer(session, frame), self._call_ended)
        try:
            answer = await call.answer(sdp)
        except Exception as exc:  # aiortc refuses a bad offer with many exception types
            await call.close()
            self.send_error(InvalidField(f"webrtc.offer refused: {_reason(exc)}"))
            return
        self.call = call
        self.app.outlets.add(session.id, call.output)
        self.send(WebRTCAnswer(sdp=answer))

    async def _add_candidate(self, message: WebRTCCandidate) -> None:
        if self.call is None:
            self.send_error(InvalidField("send webrtc.offer before webrtc.candidate"))
            return
        try:
            await self.call.add_candidate(
                message.candidate, message.sdp_mid, message.sdp_mline_index
            )
        except Exception as exc:  # a malformed candidate line
            self.send_error(InvalidField(f"webrtc.candidate refused: {_reason(exc)}"))

    async def _hang_up(self) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        if self.session is not None:
            self.app.outlets.discard(self.session.id, call.output)
        # Shielded: a webrtc.close followed at once by the socket closing cancels the
        # signalling task mid-close, which would leave the peer connection's sockets open.
        closing = asyncio.ensure_future(call.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)
        session = self.session
        # A camera frame still waiting has nowhere to go; a session resumed
        # elsewhere may have a call of its own there by now, so only when here.
        if session is not None and self.app.attached.get(session.id) in (self, None):
            session.inbox.take_if(lambda frame: frame.video is not None)

    def _call_ended(self, call: Call, reason: str | None) -> None:
        """The peer connection failed or the peer closed it: free the call."""
        if call is not self.call:
            return  # already hung up or replaced
        if reason is not None:
            self.send_error(ProtocolError(reason, code=ErrorCode.WEBRTC_FAILED))
        self._spawn(self._signal(WebRTCClose()))

    def _offer(self, session: Session, frame: FrameIn) -> None:
        if frame.image is None and frame.video is None and not self.app.pipeline.text_to_image:
            needs = f"frame needs an 'image': {self.app.pipeline.name} has no text-to-image"
            self.send_error(InvalidField(needs), frame.id)
            return
        if frame.patch and not self._apply_params(frame.patch, frame.id):
            return
        self.app.offer(session, frame)

    def _apply_params(self, patch: dict[str, object], frame_id: int | None = None) -> bool:
        assert self.session is not None
        params = self.session.params.updated(patch)
        try:
            self.app.pipeline.check_params(params)
        except ValueError as exc:
            self.send_error(InvalidParams(str(exc)), frame_id)
            return False
        self.session.params = params
        return True


def _reason(exc: Exception) -> str:
    """An exception's words, or its type where it has none (an empty assert in a parser)."""
    return str(exc) or type(exc).__name__
