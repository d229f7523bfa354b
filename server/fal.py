"""fal.ai-compatible realtime routes: the handshake gate and the fal connection.

:class:`FalGate` answers at the handshake, before any WebSocket exists: is the
path a fal route this server serves, is ``max_buffering`` valid, and does the
client hold an API key (``Authorization: Key``) or a current token for this
app (``fal_jwt_token``; server/auth.py checks)? A refusal is a plain HTTP
400/401/403/404, which is all a WebSocket client can see.

:class:`FalConnection` is one accepted fal connection, and one livegen session
made with the server's own session machinery and inference worker. Each fal
input carries its own params, so inputs go to the session one at a time: the
session's params are set for an input only once the one before it has its
result. Inputs that arrive meanwhile wait in a buffer of ``max_buffering``
(fal's query parameter, 1 by default: latest wins); a full buffer drops its
oldest input.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from server.auth import AuthGate, text_response
from server.config import ServerConfig
from server.http import WEBSOCKET_PATH
from server.transport import Transport
from stream.codec import decode_server_message
from stream.errors import CloseCode, InvalidField, InvalidParams, ProtocolError
from stream.events import FrameIn, StartRequested
from stream.fal import (
    FalInput,
    FalProtocol,
    FalRequest,
    FalRoute,
    pack_result,
    parse_query,
    parse_route,
    resolve_params,
)
from stream.messages import FrameOut, ServerMessage
from stream.params import MAX_SEED, Params
from stream.session import Session

if TYPE_CHECKING:
    from server.app import LivegenServer

log = logging.getLogger(__name__)


def is_fal_request(websocket: ServerConnection) -> bool:
    """True for a connection the gate let in on a fal route (every other one is /ws)."""
    request = websocket.request
    return request is not None and urlsplit(request.path).path != WEBSOCKET_PATH


class FalGate:
    """Which fal routes this server serves and with what query, decided at the handshake.

    ``apps`` lists the app ids served (``*`` for any); who may open one is the
    :class:`~server.auth.AuthGate`'s to say, for the route's app.
    """

    def __init__(self, apps: Sequence[str], auth: AuthGate) -> None:
        self.apps = tuple(apps)
        self.auth = auth

    @classmethod
    def from_config(cls, config: ServerConfig, auth: AuthGate) -> FalGate:
        apps = [app.strip() for app in config.fal_apps.split(",") if app.strip()]
        log.info("fal routes: apps %s", ",".join(apps) or "none")
        return cls(apps, auth)

    def handles(self, path: str) -> bool:
        return parse_route(path) is not None

    def check(self, request: Request) -> Response | None:
        """The answer to a WebSocket handshake on a fal route: None lets it go on."""
        url = urlsplit(request.path)
        route = parse_route(url.path)
        assert route is not None  # Routes calls this for fal routes only
        if not any(route.matches(app) for app in self.apps):
            served = ", ".join(self.apps) or "none"
            return text_response(404, f"no fal app {route.path} here; this server serves: {served}")
        try:
            query = parse_query(url.query)
        except ValueError as exc:
            return text_response(400, str(exc))
        return self.auth.check(request, route.path, route.matches, query.token, "fal_jwt_token")

    def answer(self, path: str) -> Response | None:
        """A plain HTTP request on a fal route: 426, it takes a WebSocket."""
        if self.handles(path):
            return text_response(426, "connect with a WebSocket client (fal's realtime clients do)")
        return None


@dataclass(frozen=True, slots=True)
class _Input:
    """A checked fal input waiting for, or holding, the session."""

    frame: FrameIn
    params: Params
    request: FalRequest


class FalConnection:
    """One fal realtime connection: its own livegen session, fed one input at a time."""

    def __init__(self, app: LivegenServer, websocket: ServerConnection) -> None:
        request = websocket.request
        assert request is not None  # the handshake is over
        url = urlsplit(request.path)
        route = parse_route(url.path)
        assert route is not None  # FalGate let only fal routes through
        self.route: FalRoute = route
        self.max_buffering = parse_query(url.query).max_buffering
        self.app = app
        self.websocket = websocket
        self.protocol = FalProtocol(app.config.limits, time.perf_counter())
        self.session: Session | None = None
        self._waiting: deque[_Input] = deque()
        self._running: _Input | None = None
        self._frame_ids = itertools.count(1)
        self._transport: Transport[tuple[FrameOut, FalRequest]] = Transport(
            websocket, self.protocol, app.metrics, lambda result: pack_result(*result)
        )

    async def run(self) -> None:
        async with self._transport:
            try:
                self.session = self.app.open_session(self, StartRequested(params={}))
            except ProtocolError as error:
                self.send_error(error)
                self.close(CloseCode.INTERNAL_ERROR, str(error))  # no-op after a fatal error
                return
            log.info("session %s is fal app %s", self.session.id, self.route.path)
            try:
                await self._transport.receive(self._receive)
            finally:
                # fal clients never resume: free the session now, not after a grace period.
                why = "ended by the drain" if self.app.draining else "ended with its connection"
                self.app.close_session(self.session, why)

    def _receive(self, data: bytes | str) -> None:
        fal_input = self.protocol.receive(data, time.perf_counter())
        if fal_input is not None:
            self._accept(fal_input)

    def _accept(self, fal_input: FalInput) -> None:
        """Check an input's params now, so a bad one is refused at once, then queue it."""
        pipeline, metrics = self.app.pipeline, self.app.metrics
        seed = secrets.randbelow(MAX_SEED + 1)  # fal draws a seed when none is given
        params = resolve_params(pipeline.default_params, fal_input, seed)
        try:
            pipeline.check_params(params)
        except ValueError as exc:
            reason, asked = str(exc), fal_input.num_inference_steps
            if asked is not None and "step" in reason:
                # The client never said "steps": name the mapping that made them.
                reason += (
                    f" (num_inference_steps {asked} at strength {params.strength:g} "
                    f"is {params.steps} UNet passes)"
                )
            self._refuse(InvalidParams(reason), fal_input.request_id)
            return
        if fal_input.image is None and not pipeline.text_to_image:
            needs = f"{pipeline.name} has no text-to-image: send an image in image_url"
            self._refuse(InvalidField(needs), fal_input.request_id)
            return
        metrics.frames_in.inc()
        if self.app.draining:
            # The client has been told the server is closing; only inputs in flight finish.
            metrics.frames_dropped.labels("input").inc()
            return
        if len(self._waiting) >= self.max_buffering:
            self._waiting.popleft()  # fal's buffer drops its oldest input
            metrics.frames_dropped.labels("input").inc()
        frame = FrameIn(fal_input.image, next(self._frame_ids), {}, time.perf_counter())
        self._waiting.append(_Input(frame, params, fal_input.request(params)))
        self._feed()

    def _feed(self) -> None:
        """Hand the session the oldest waiting input, once the one before it is done.

        One at a time because the inference thread reads the session's params
        when it runs a frame: they must be this input's until its result is in.
        """
        if self._running is not None or not self._waiting or self.session is None:
            return
        item = self._waiting.popleft()
        self.session.params = item.params
        self.session.offer(item.frame)
        self._running = item
        self.app.worker.notify(self.session)

    def _finish(self, frame_id: int) -> FalRequest | None:
        """The request of the running input ``frame_id``, now done; None if it is not running."""
        running = self._running
        if running is None or running.frame.id != frame_id:
            return None
        self._running = None
        self._feed()
        return running.request

    # What the server calls on any connection it holds (see LivegenServer._deliver, drain).

    def send_frame(self, data: bytes, received_at: float) -> None:
        """Keep a generated frame (a packed ``frame.out``) for the sender, as a fal result."""
        frame = decode_server_message(data)
        assert isinstance(frame, FrameOut)
        request = self._finish(frame.id)
        if request is None:
            return
        self._transport.put((frame, request), received_at)

    def send(self, message: ServerMessage) -> None:
        self.protocol.send(message)
        self._transport.wake()

    def send_error(self, error: ProtocolError, frame_id: int | None = None) -> None:
        request = None if frame_id is None else self._finish(frame_id)
        self._refuse(error, None if request is None else request.request_id)

    def close(self, code: CloseCode, reason: str) -> None:
        self.protocol.close(code, reason)
        self._transport.wake()

    def _refuse(self, error: ProtocolError, request_id: str | None) -> None:
        self.protocol.send_error(error, request_id)
        self.app.metrics.errors.labels(error.code).inc()
        self._transport.wake()
