"""Who may open a WebSocket, decided at the handshake; and the token endpoint.

Auth covers every WebSocket route: livegen's own ``/ws``, whose app name is
``livegen``, and fal's realtime routes, named by their app ids. With it on, a
client shows one of the server's API keys or a current token signed by one and
scoped to the app (server/tokens.py): in an ``Authorization: Key ...`` header, or
in the query (``token`` on ``/ws``, since browsers cannot set headers on a
WebSocket; ``fal_jwt_token`` on fal routes, as fal's clients send it). A refusal
is a plain HTTP 401 or 403, which is all a WebSocket client can see.

``--auth auto`` turns it on unless the server is bound to loopback without API
keys (../shared/DESIGN.md: off by default only on loopback); the configuration
refuses auth without keys, which would let no client in. Tokens are minted by an
app's backend with :func:`server.tokens.mint_token`, ``livegen token``, or
``POST /tokens/`` here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request, Response

from server.config import ServerConfig
from server.http import WEBSOCKET_PATH, response
from server.tokens import DEFAULT_TTL_S, TokenError, TokenScopeError, TokenVerifier, mint_token

log = logging.getLogger(__name__)

LIVEGEN_APP = "livegen"  # what a token names to open /ws
# What POST /tokens/ answers while auth is off and there are no keys to sign with.
AUTH_OFF_TOKEN = "livegen-auth-off"


class AuthGate:
    """The server's API keys, whether clients must show one, and the token endpoint."""

    def __init__(
        self, verifier: TokenVerifier, *, enabled: bool, clock: Callable[[], float] = time.time
    ) -> None:
        self.verifier = verifier
        self.enabled = enabled
        self._clock = clock

    @classmethod
    def from_config(cls, config: ServerConfig) -> AuthGate:
        log.info("auth on WebSocket routes: %s", "on" if config.auth_enabled else "off")
        return cls(
            TokenVerifier(config.api_key_list, config.token_max_ttl_s), enabled=config.auth_enabled
        )

    def check_livegen(self, request: Request) -> Response | None:
        """The answer to a handshake on /ws: None lets it go on."""
        token = parse_qs(urlsplit(request.path).query).get("token", [None])[-1]
        return self.check(request, WEBSOCKET_PATH, _opens_livegen, token, "token")

    def check_media(self, request: Request, route: str) -> Response | None:
        """The answer to a WHIP or WHEP request: None lets it go on.

        As for /ws, an API key or a token for livegen, in the bearer scheme the
        WHIP specification (RFC 9725) and its clients (OBS, GStreamer) use;
        ``Key`` is taken too.
        """
        return self.check(request, route, _opens_livegen, None, None, ("Bearer", "Key"))

    def check(
        self,
        request: Request,
        route: str,
        grants: Callable[[str], bool],
        query_token: str | None,
        query_name: str | None,
        scheme_names: tuple[str, ...] = ("Key",),
    ) -> Response | None:
        """The answer to a request for ``route``: None lets it go on.

        ``grants`` says whether a token's app entry covers the route; the token
        comes from the ``Authorization`` header (under one of ``scheme_names``,
        the first the one to suggest) or else from the query, where it is called
        ``query_name`` (None: the route takes no token in its query).
        """
        if not self.enabled:
            return None
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        credential = credential.strip()
        suggested = scheme_names[0]
        if scheme and (scheme.lower() not in map(str.lower, scheme_names) or not credential):
            return _unauthorized(f"use 'Authorization: {suggested} <API key or token>'", suggested)
        if credential and self.verifier.is_api_key(credential):
            return None
        token = credential or query_token
        if token is None:
            where = f"a token ({query_name} in the query)" if query_name else "a token"
            return _unauthorized(
                f"this server needs {where} or an API key (Authorization: {suggested} ...)",
                suggested,
            )
        try:
            grant = self.verifier.verify(token, self._clock())
            if not any(grants(app) for app in grant.apps):
                raise TokenScopeError(f"the token is for {', '.join(grant.apps)}, not {route}")
        except TokenError as exc:
            log.info("handshake for %s refused: %s", route, exc)
            if exc.status == 401:
                return _unauthorized(str(exc), suggested)
            return text_response(exc.status, str(exc))
        return None

    def mint(self, request: Request) -> Response:
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
        if not self.verifier:
            # No keys, so auth is off (the configuration refuses it on without keys): any
            # token connects, and answering one lets fal's default token fetch work unchanged.
            return _json(200, AUTH_OFF_TOKEN)
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


def _opens_livegen(app: str) -> bool:
    return app.strip().strip("/") in ("*", LIVEGEN_APP)


def text_response(status: int, message: str) -> Response:
    return response(status, f"{message}\n".encode(), "text/plain; charset=utf-8")


def _json(status: int, body: object) -> Response:
    # Tokens and refusals are never reused. (Setting the header on the Response would
    # add a second Cache-Control beside response()'s.)
    return response(status, json.dumps(body).encode(), "application/json", "no-store")


def _unauthorized(message: str, scheme: str = "Key") -> Response:
    refused = text_response(401, message)
    refused.headers["WWW-Authenticate"] = f'{scheme} realm="livegen"'
    return refused
