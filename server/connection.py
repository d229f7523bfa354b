"""One WebSocket connection: feeds the protocol object and sends what it says.

A receive loop hands every message to :class:`~stream.protocol.SessionProtocol`
and acts on its events. One sender task writes everything out: control
messages in order, then the newest generated frame. A client that reads slowly
gets its stale frames replaced, never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.errors import CloseCode, InvalidField, InvalidParams, ProtocolError
from stream.events import (
    CloseRequested,
    Event,
    FrameIn,
    ParamsUpdated,
    PeerErrored,
    StartRequested,
)
from stream.inbox import LatestBox
from stream.messages import ServerMessage
from stream.protocol import ConnectionState, SessionProtocol
from stream.session import Session

if TYPE_CHECKING:
    from server.app import LivegenServer

log = logging.getLogger(__name__)


class Connection:
    def __init__(self, app: LivegenServer, websocket: ServerConnection) -> None:
        self.app = app
        self.websocket = websocket
        self.protocol = SessionProtocol(app.config.limits, time.perf_counter())
        self.session: Session | None = None
        self._frames: LatestBox[tuple[bytes, float]] = LatestBox()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        start_deadline = asyncio.get_running_loop().call_later(
            self.app.config.session_start_timeout_s, self._check_started
        )
        try:
            async for data in self.websocket:
                for event in self.protocol.receive(data, time.perf_counter()):
                    self._handle(event)
                self._wake.set()
                if self.protocol.state is ConnectionState.CLOSED:
                    break
        except ConnectionClosed:
            pass
        finally:
            start_deadline.cancel()
            self.app.detach(self)
            if self.protocol.state is ConnectionState.CLOSED:
                # Let the sender flush the error and close with the protocol's code.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sender), self.websocket.close_timeout)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def send_frame(self, data: bytes, received_at: float) -> None:
        """Queue a packed ``frame.out``; one not yet sent is replaced."""
        if self._frames.put((data, received_at)):
            self.app.metrics.frames_dropped.labels("output").inc()
        self._wake.set()

    def send(self, message: ServerMessage) -> None:
        self.protocol.send(message)
        self._wake.set()

    def send_error(self, error: ProtocolError, frame_id: int | None = None) -> None:
        self.protocol.send_error(error, frame_id)
        self.app.metrics.errors.labels(error.code).inc()
        self._wake.set()

    def close(self, code: CloseCode, reason: str) -> None:
        """Close after everything already queued has been sent."""
        self.protocol.close(code, reason)
        self._wake.set()

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
        else:
            assert isinstance(event, CloseRequested) and self.session is not None
            self.app.close_session(self.session)

    def _offer(self, session: Session, frame: FrameIn) -> None:
        if frame.image is None and not self.app.pipeline.text_to_image:
            needs = f"frame needs an 'image': {self.app.pipeline.name} has no text-to-image"
            self.send_error(InvalidField(needs), frame.id)
            return
        if frame.patch and not self._apply_params(frame.patch, frame.id):
            return
        self.app.metrics.frames_in.inc()
        if self.app.draining:
            # The client has been sent session.closing; only frames already in flight finish.
            self.app.metrics.frames_dropped.labels("input").inc()
            return
        if session.offer(frame):
            self.app.metrics.frames_dropped.labels("input").inc()
        self.app.worker.notify(session)

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

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                # Cleared before sending: whatever arrives meanwhile wakes the next pass.
                self._wake.clear()
                for data in self.protocol.data_to_send():
                    await self.websocket.send(data)
                frame = self._frames.take()
                if frame is not None:
                    data, received_at = frame
                    await self.websocket.send(data)
                    self.app.metrics.frames_out.inc()
                    self.app.metrics.stage_seconds.labels("total").observe(
                        time.perf_counter() - received_at
                    )
                if self.protocol.state is ConnectionState.CLOSED and not self._wake.is_set():
                    await self._close_websocket()
                    return

    async def _close_websocket(self) -> None:
        code, reason = self.protocol.close_code, self.protocol.close_reason
        assert code is not None
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            log.info("closing %s with %d: %s", self.websocket.remote_address, code, reason)
        await self.websocket.close(code, reason)
