"""Plain HTTP GET routes served on the WebSocket port.

``/healthz`` (the process is up), ``/readyz`` (the pipeline is warm and the
server is not draining), ``/metrics`` (Prometheus text) and the web client's
files. Static files are read once at start, so no request touches the disk.

The WebSocket handshake is also where a full replica says no: a new connection
(no ``sid`` in its URL, stream/routing.py) to a replica with no room gets 503
and ``Retry-After`` before any WebSocket exists, which a proxy can retry
elsewhere; a resume is never refused for capacity.
"""

from __future__ import annotations

import http
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from stream.routing import requested_sid

if TYPE_CHECKING:
    from server.auth import AuthGate
    from server.fal import FalGate
    from server.static import StaticFile

WEBSOCKET_PATH = "/ws"
TOKEN_PATHS = ("/tokens", "/tokens/")
# What a full or draining replica tells clients to wait before they try again (the
# proxy in front has usually found them room elsewhere by then).
RETRY_AFTER_S = 1


def response(
    status: int, body: bytes, content_type: str, cache_control: str = "no-cache"
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache_control),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def retry_later(message: str) -> Response:
    """503 with ``Retry-After``: the answer a client (or proxy) tries again after."""
    refused = response(503, f"{message}; retry after {RETRY_AFTER_S} s\n".encode(), "text/plain")
    refused.headers["Retry-After"] = str(RETRY_AFTER_S)
    return refused


class Routes:
    def __init__(
        self,
        static_files: dict[str, StaticFile],
        is_ready: Callable[[], bool],
        is_draining: Callable[[], bool],
        admits_new: Callable[[], bool],
        render_metrics: Callable[[], bytes],
        allowed_origins: frozenset[str],
        auth: AuthGate,
        fal: FalGate | None = None,
    ) -> None:
        self._static = static_files
        self._is_ready = is_ready
        self._is_draining = is_draining
        self._admits_new = admits_new
        self._render_metrics = render_metrics
        self._allowed_origins = allowed_origins
        # Who may open a WebSocket (server/auth.py), and POST /tokens/.
        self._auth = auth
        # fal.ai-compatible routes (/{owner}/{alias}/.../realtime).
        self._fal = fal

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request`` hook: None lets a WebSocket handshake go on."""
        path = urlsplit(request.path).path
        fal = self._fal
        if request.headers.get("Upgrade", "").lower() == "websocket":
            fal_route = fal is not None and fal.handles(path)
            if (path == WEBSOCKET_PATH or fal_route) and self._is_draining():
                return retry_later("server is shutting down")
            if path == WEBSOCKET_PATH:
                return (
                    self._check_origin(request)
                    or self._auth.check_livegen(request)
                    or self._admit(request)
                )
            if fal is not None and fal_route:
                return self._check_origin(request) or fal.check(request) or self._admit(request)
            return response(
                404, f"no WebSocket route {path}; use {WEBSOCKET_PATH}\n".encode(), "text/plain"
            )
        if path in TOKEN_PATHS:
            return self._auth.mint(request)
        if fal is not None and (answer := fal.answer(path)) is not None:
            return answer
        if path == WEBSOCKET_PATH:
            # The auth verdict first: a browser cannot see why a handshake was refused,
            # but the pages can ask here (401 or 403 with the reason, or 503 when full).
            return (
                self._auth.check_livegen(request)
                or self._admit(request)
                or response(426, b"connect with a WebSocket client\n", "text/plain")
            )
        if path == "/healthz":
            return response(200, b"ok\n", "text/plain")
        if path == "/readyz":
            if self._is_ready():
                return response(200, b"ready\n", "text/plain")
            return response(503, b"not ready\n", "text/plain")
        if path == "/metrics":
            return response(200, self._render_metrics(), "text/plain; version=0.0.4")
        if path in self._static:
            return self._static[path].answer(request)
        return response(404, b"not found\n", "text/plain")

    def _admit(self, request: Request) -> Response | None:
        """Refuse a new session where there is no room for one; a resume always passes."""
        if requested_sid(request.path) is not None or self._admits_new():
            return None
        return retry_later("server busy: this replica holds its maximum of sessions")

    def _check_origin(self, request: Request) -> Response | None:
        return origin_refusal(request, self._allowed_origins)


def origin_refusal(request: Request, allowed_origins: frozenset[str]) -> Response | None:
    """Refuse browsers on other sites (cross-site WebSocket hijacking, or a page
    starting WHIP sessions on a livegen without auth on loopback).

    Clients that send no Origin (not browsers) and pages livegen served from an
    IP address or localhost are let in; other origins only when allowed by name
    or ``*`` (a deployment under a domain name lists its own origin).
    """
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed_origins or origin in allowed_origins:
        return None
    # Same origin counts only for addresses and localhost: a domain name can be
    # rebound by its owner to this machine, making Origin and Host agree.
    origin_url = urlsplit(origin)
    if origin_url.netloc == request.headers.get("Host") and _not_rebindable(origin_url):
        return None
    refusal = f"origin {origin} is not allowed; start livegen with --allowed-origins {origin}\n"
    return response(403, refusal.encode(), "text/plain")


def _not_rebindable(url: SplitResult) -> bool:
    if url.hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(url.hostname or "")
    except ValueError:
        return False
    return True
