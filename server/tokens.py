"""Short-lived, app-scoped access tokens, signed with an API key.

An app's backend holds an API key (one of the server's ``--api-keys``) and
mints tokens for its clients: :func:`mint_token` here, ``livegen token`` on the
command line, or ``POST /tokens/`` on the server. A token names the apps it
may connect to (``livegen`` for ``/ws``, fal app ids for fal's routes) and when
it expires; the server checks both at the WebSocket handshake (server/auth.py),
so a browser never holds the key itself.

A token is a JSON Web Token (RFC 7519) signed with HS256, made with the
standard library alone: clients only carry it (fal's in ``fal_jwt_token``),
and the JWT shape lets any language mint or inspect one. The header's ``kid``
names the API key (a hash of it, never the key); the signing secret is derived
from the key, so removing a key from the server revokes every token it
signed. Claims: ``apps`` (app ids, aliases or ``*``), ``iat`` and ``exp``
(Unix seconds).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL_S = 120  # what fal's clients ask for
# Clocks of the minting backend and of the server may disagree by this much.
CLOCK_SKEW_S = 60
# Far above any real token (a few hundred bytes); bounds the work of parsing one.
MAX_TOKEN_CHARS = 4096
_KEY_ID_CONTEXT = b"livegen token key id\x00"
_SIGNING_CONTEXT = b"livegen token signing key v1"
_HEADER_FIELDS = ("alg", "kid", "typ")


class TokenError(Exception):
    """A token or key the server refuses; ``status`` is the HTTP answer (401 or 403)."""

    status = 401


class TokenScopeError(TokenError):
    """A valid token for other apps than the one asked for."""

    status = 403


@dataclass(frozen=True, slots=True)
class Token:
    apps: tuple[str, ...]
    issued_at: int
    expires_at: int
    key_id: str


def key_id(api_key: str) -> str:
    """A public name for ``api_key``: 16 hex digits of a hash, safe to put in a token."""
    return hashlib.sha256(_KEY_ID_CONTEXT + api_key.encode()).hexdigest()[:16]


def _signing_secret(api_key: str) -> bytes:
    # Derived rather than the key itself, so a token's MAC is never keyed by the raw key.
    return hmac.new(api_key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def mint_token(
    api_key: str, apps: Sequence[str], ttl_s: float = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A token for ``apps`` (fal app ids like ``fal-ai/fast-lcm-diffusion``, aliases, or
    ``*``), valid for ``ttl_s`` seconds from ``now`` (Unix time; default: the clock)."""
    if not api_key:
        raise ValueError("an API key is needed to mint a token")
    names = [app.strip().strip("/") for app in apps]
    if not names or not all(names):
        raise ValueError("a token needs at least one app, and app names cannot be empty")
    if not ttl_s > 0:
        raise ValueError(f"a token's lifetime must be positive, got {ttl_s}")
    issued_at = int(time.time() if now is None else now)
    header = {"alg": "HS256", "kid": key_id(api_key), "typ": "JWT"}
    claims = {"apps": names, "exp": issued_at + max(1, round(ttl_s)), "iat": issued_at}
    signed = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    signature = hmac.new(_signing_secret(api_key), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(signature)}"


class TokenVerifier:
    """Checks API keys and tokens against the server's keys.

    ``max_ttl_s`` caps a token's whole lifetime (``exp - iat``), so a backend that
    mints one for a year gets it refused rather than a token that never expires.
    """

    def __init__(self, api_keys: Iterable[str], max_ttl_s: float) -> None:
        keys = tuple(api_keys)
        self._secrets = {key_id(key): _signing_secret(key) for key in keys}
        self._keys = [key.encode() for key in keys]
        self.max_ttl_s = max_ttl_s

    def __bool__(self) -> bool:
        return bool(self._keys)

    def is_api_key(self, value: str) -> bool:
        # Every key is compared, in constant time, so timing tells nothing about which.
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(key, value.encode())
        return found

    def verify(self, token: str, now: float) -> Token:
        """The token's claims, if it is well formed, signed by a known key and current."""
        signed, signature, claims = _split(token)
        secret = self._secrets.get(claims["kid"])
        expected = b"" if secret is None else hmac.new(secret, signed, hashlib.sha256).digest()
        if secret is None or not hmac.compare_digest(expected, signature):
            raise TokenError("token signature does not verify (wrong or revoked API key)")
        issued_at, expires_at = claims["iat"], claims["exp"]
        if now >= expires_at:
            raise TokenError(f"token expired {now - expires_at:.0f} s ago; mint a new one")
        if issued_at > now + CLOCK_SKEW_S:
            raise TokenError("token is issued in the future; check the minting machine's clock")
        if expires_at - issued_at > self.max_ttl_s:
            raise TokenError(
                f"token lives {expires_at - issued_at} s; this server accepts at most "
                f"{self.max_ttl_s:g} s (--token-max-ttl-s)"
            )
        return Token(tuple(claims["apps"]), issued_at, expires_at, claims["kid"])


def _split(token: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """Parse a compact JWT into the signed part, the signature and its checked fields."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token is over {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a JWT (three dot-separated parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, binascii.Error):  # bad base64, bad UTF-8 or bad JSON
        raise TokenError("token is not a JWT (a part does not decode)") from None
    # Only HS256: a token must never choose its own algorithm ("none", RS256 with our key...).
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("token must be an HS256 JWT")
    kid = header.get("kid")
    if not isinstance(claims, dict) or not isinstance(kid, str):
        raise TokenError("token has no key id ('kid')")
    apps, issued_at, expires_at = claims.get("apps"), claims.get("iat"), claims.get("exp")
    if not (isinstance(apps, list) and apps and all(isinstance(app, str) for app in apps)):
        raise TokenError("token has no 'apps' list")
    if not all(type(value) is int for value in (issued_at, expires_at)):
        raise TokenError("token needs integer 'iat' and 'exp'")
    fields = {"kid": kid, "apps": apps, "iat": issued_at, "exp": expires_at}
    return f"{parts[0]}.{parts[1]}".encode(), signature, fields


def add_token_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``livegen token``: print a token minted from ``LIVEGEN_API_KEY``."""
    parser = commands.add_parser(
        "token",
        help="mint a short-lived token for clients (/ws?token=, fal_jwt_token) from an API key",
        description="Print a token that lets a client connect to the given apps: "
        "livegen for /ws and the bundled pages, fal app ids for fal's routes. "
        "The API key comes from LIVEGEN_API_KEY (or --api-key, which other users "
        "of this machine can see in the process list).",
    )
    parser.add_argument(
        "--app",
        dest="apps",
        action="append",
        required=True,
        help="app the token is for: livegen, or a fal app id like fal-ai/fast-lcm-diffusion "
        "(repeat for more; * for all)",
    )
    parser.add_argument(
        "--ttl-s", type=float, default=DEFAULT_TTL_S, help="lifetime in seconds (default 120)"
    )
    parser.add_argument("--api-key", help="the API key (default: LIVEGEN_API_KEY)")


def token_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    api_key = args.api_key or environ.get("LIVEGEN_API_KEY", "")
    if not api_key:
        print(
            "livegen token: set LIVEGEN_API_KEY to one of the server's --api-keys", file=sys.stderr
        )
        return 2
    try:
        print(mint_token(api_key, args.apps, args.ttl_s))
    except ValueError as exc:
        print(f"livegen token: {exc}", file=sys.stderr)
        return 2
    return 0
