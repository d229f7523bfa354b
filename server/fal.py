"""fal.ai-compatible realtime routes: the handshake gate and the fal connection.

:class:`FalGate` answers at the handshake, before any WebSocket exists: is the
path a fal route this server serves, is ``max_buffering`` valid, and does the
client hold an API key (``Authorization: Key``) or a current token for this
app (``fal_jwt_token``)? A refusal is a plain HTTP 400/401/403/404, which is
all a WebSocket client can see. It also mints tokens at ``POST /tokens/``.

:class:`FalConnection` is one accepted fal connection, and one livegen session
made with the server's own session machinery and inference worker. Each fal
input carries its own params, so inputs go to the session one at a time: the
session's params are set for an input only once the one before it has its
result. Inputs that arrive meanwhile wait in a buffer of ``max_buffering``
(fal's query parameter, 1 by default: latest wins); a full buffer drops its
oldest input.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from server.config import ServerConfig
from server.http import WEBSOCKET_PATH, response
from server.tokens import DEFAULT_TTL_S, TokenError, TokenScopeError, TokenVerifier, mint_token
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
    import numpy as np

    from server.app import LivegenServer

log = logging.getLogger(__name__)

TOKEN_PATHS = ("/tokens", "/tokens/")
# What POST /tokens/ answers while auth is off and there are no keys to sign with.
AUTH_OFF_TOKEN = "livegen-auth-off"


def is_fal_request(websocket: ServerConnection) -> bool:
    """True for a connection the gate let in on a fal route (every other one is /ws)."""
    request = websocket.request
    return request is not None and urlsplit(request.path).path != WEBSOCKET_PATH


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FalGate:
    """Who may open which fal route, decided at the handshake; and the token endpoint.

    ``apps`` lists the app ids served (``*`` for any). With ``auth`` off every
    client may connect (the default only on loopback, without API keys); with
    it on, a client needs an API key or a token signed by one, scoped to the app.
    """

    def __init__(
        self,
        apps: Sequence[str],
        verifier: TokenVerifier,
        *,
        auth: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.apps = tuple(apps)
        self.verifier = verifier
        self.auth = auth
        self._clock = clock

    @classmethod
    def from_config(cls, config: ServerConfig) -> FalGate:
        keys = [key.strip() for key in config.api_keys.split(",") if key.strip()]
        apps = [app.strip() for app in config.fal_apps.split(",") if app.strip()]
        if config.fal_auth == "auto":
            auth = bool(keys) or not _is_loopback(config.host)
        else:
            auth = config.fal_auth == "on"
        log.info("fal routes: apps %s, auth %s", ",".join(apps) or "none", "on" if auth else "off")
        if auth and not keys:
            log.warning("fal routes need auth but no --api-keys are set: every client is refused")
        return cls(apps, TokenVerifier(keys, config.token_max_ttl_s), auth=auth)

    def handles(self, path: str) -> bool:
        return parse_route(path) is not None

    def check(self, request: Request) -> Response | None:
        """The answer to a WebSocket handshake on a fal route: None lets it go on."""
        url = urlsplit(request.path)
        route = parse_route(url.path)
        assert route is not None  # Routes calls this for fal routes only
        if not any(route.matches(app) for app in self.apps):
            served = ", ".join(self.apps) or "none"
            return _text(404, f"no fal app {route.path} here; this server serves: {served}")
        try:
            query = parse_query(url.query)
        except ValueError as exc:
            return _text(400, str(exc))
        if not self.auth:
            return None
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        credential = credential.strip()
        if scheme and (scheme.lower() != "key" or not credential):
            return _unauthorized("use 'Authorization: Key <API key or token>'")
        if credential and self.verifier.is_api_key(credential):
            return None
        token = credential or query.token
        if token is None:
            return _unauthorized(
                "this server needs a token (fal_jwt_token in the query) or an API key "
                "(Authorization: Key ...)"
            )
        try:
            grant = self.verifier.verify(token, self._clock())
            if not any(route.matches(app) for app in grant.apps):
                raise TokenScopeError(f"the token is for {', '.join(grant.apps)}, not {route.path}")
        except TokenError as exc:
            log.info("fal handshake for %s refused: %s", route.path, exc)
            return _unauthorized(str(exc)) if exc.status == 401 else _text(exc.status, str(exc))
        return None

    def answer(self, request: Request, path: str) -> Response | None:
        """A plain HTTP request on the fal paths: the token endpoint, or 426 on a route."""
        if path in TOKEN_PATHS:
            return self._mint(request)
        if self.handles(path):
            return _text(426, "connect with a WebSocket client (fal's realtime clients do)")
        return None

    def _mint(self, request: Request) -> Response:
        """``POST /tokens/?allowed_apps=APP&token_expiration=S`` with ``Authorization: Key``.

        fal's REST API takes the same two fields as a JSON body; websockets' HTTP
        parser reads no request bodies, so here they go in the query string. The
        answer is fal's: the token as a JSON string.
        """
        # websockets before 15 passes only GET requests to process_request.
        method = getattr(request, "method", "GET")
        if method != "POST":
            refused = _json(405, {"detail": "mint tokens with POST"})
            refused.headers["Allow"] = "POST"
            return refused
        if not self.verifier and not self.auth:
            # Any token connects; answering one lets fal's default token fetch work unchanged.
            return _json(200, AUTH_OFF_TOKEN)
        if not self.verifier:
            return _json(404, {"detail": "this server has no --api-keys, so it mints no tokens"})
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "key" or not self.verifier.is_api_key(key.strip()):
            return _json(401, {"detail": "minting needs 'Authorization: Key <API key>'"})
        query = parse_qs(urlsplit(request.path).query)
        apps = [app for value in query.get("allowed_apps", []) for app in value.split(",")]
        expiration = query.get("token_expiration", [str(DEFAULT_TTL_S)])[-1]
        max_ttl_s = self.verifier.max_ttl_s
        if not (expiration.isascii() and expiration.isdigit()) or not (
            0 < int(expiration) <= max_ttl_s
        ):
            detail = f"token_expiration must be whole seconds from 1 to {max_ttl_s:g}"
            return _json(400, {"detail": detail})
        try:
            token = mint_token(key.strip(), apps, int(expiration), now=self._clock())
        except ValueError as exc:
            return _json(400, {"detail": f"{exc} (allowed_apps=...)"})
        return _json(200, token)


def _text(status: int, message: str) -> Response:
    return response(status, f"{message}\n".encode(), "text/plain; charset=utf-8")


def _json(status: int, body: object) -> Response:
    answer = response(status, json.dumps(body).encode(), "application/json")
    answer.headers["Cache-Control"] = "no-store"  # tokens and refusals are never reused
    return answer


def _unauthorized(message: str) -> Response:
    refused = _text(401, message)
    refused.headers["WWW-Authenticate"] = 'Key realm="livegen"'
    return refused


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
                self.app.close_session(self.session)

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

    def send_video(self, pixels: np.ndarray, received_at: float) -> None:
        """Never called: a fal session has no WebRTC call."""

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
