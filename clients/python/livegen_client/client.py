"""An asyncio client for the livegen protocol.

It speaks the same messages as the server by reusing :mod:`stream`'s
dataclasses and codec::

    async with await LivegenClient.connect("ws://127.0.0.1:8000/ws") as client:
        await client.update_params(prompt="a watercolor fox")
        await client.send_frame(jpeg_bytes)
        frame = await client.next_frame()

Behind a proxy in front of many replicas (deploy/), it keeps the routing
contract: a resume connects to ``/ws?sid=<session_id>`` so that it reaches the
replica holding the session, a resume that finds no session (its replica is
gone) starts a fresh one, and a server that is full ("server busy": HTTP 503
with ``Retry-After`` at the handshake, or ``server_busy`` just after it) is
tried again after the time it asks for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from stream.codec import decode_server_message, pack
from stream.errors import ErrorCode
from stream.messages import (
    Error,
    Frame,
    FrameOut,
    ParamsUpdate,
    ServerMessage,
    SessionClose,
    SessionStart,
    SessionStarted,
)
from stream.routing import SID_PARAMETER

log = logging.getLogger("livegen_client")

# How long to wait before another try when the server is full and says nothing
# of when to come back (a ``server_busy`` error has no Retry-After).
DEFAULT_BUSY_RETRY_S = 1.0


class ServerError(Exception):
    """The server refused something; ``code`` is one of :class:`stream.errors.ErrorCode`."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.fatal = error.fatal
        self.frame_id = error.id


def with_sid(url: str, session_id: str) -> str:
    """``url`` with its ``sid`` set to ``session_id``: what a proxy routes a resume by."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != SID_PARAMETER]
    query.append((SID_PARAMETER, session_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _busy_retry_s(refusal: InvalidStatus | ServerError) -> float | None:
    """Seconds to wait before trying a full server again; None for other refusals."""
    if isinstance(refusal, ServerError):
        return DEFAULT_BUSY_RETRY_S if refusal.code == ErrorCode.SERVER_BUSY else None
    if refusal.response.status_code != 503:
        return None
    try:
        return max(0.0, float(refusal.response.headers.get("Retry-After", "")))
    except ValueError:
        return DEFAULT_BUSY_RETRY_S


async def _start(websocket: ClientConnection, start: SessionStart) -> SessionStarted:
    """Send ``start`` and return its ``session.started``; an ``error`` raises ServerError."""
    await websocket.send(pack(start))
    reply = decode_server_message(await websocket.recv(decode=False))
    if isinstance(reply, Error):
        raise ServerError(reply)
    if not isinstance(reply, SessionStarted):
        raise ServerError(Error("unexpected_reply", f"expected session.started, got {reply.TYPE}"))
    return reply


class LivegenClient:
    def __init__(self, url: str, websocket: ClientConnection, started: SessionStarted) -> None:
        self.url = url
        self.websocket = websocket
        self.started = started

    @property
    def session_id(self) -> str:
        return self.started.session_id

    @property
    def resume_token(self) -> str:
        return self.started.resume_token

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        resume: tuple[str, str] | None = None,
        start_fresh_if_gone: bool = False,
        busy_timeout_s: float = 0.0,
        max_size: int = 64 << 20,
    ) -> LivegenClient:
        """Open a WebSocket and start a session, or resume ``(session_id, resume_token)``.

        A resume goes to ``url`` with ``sid=<session_id>`` added. When the session is
        gone (``session_not_found``), ``start_fresh_if_gone`` starts a new one on the
        same connection instead of raising. A full server is tried again, after the
        ``Retry-After`` it gives, for up to ``busy_timeout_s`` (0: raise at once:
        :class:`~websockets.exceptions.InvalidStatus` 503 or ``server_busy``).
        """
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                return await cls._connect_once(url, params, resume, start_fresh_if_gone, max_size)
            except (InvalidStatus, ServerError) as refusal:
                wait_s = _busy_retry_s(refusal)
                if wait_s is None or time.monotonic() + wait_s > deadline:
                    raise
                log.info("server busy; retrying in %g s", wait_s)
                await asyncio.sleep(wait_s)

    @classmethod
    async def _connect_once(
        cls,
        url: str,
        params: dict[str, Any] | None,
        resume: tuple[str, str] | None,
        start_fresh_if_gone: bool,
        max_size: int,
    ) -> LivegenClient:
        session_id, resume_token = resume if resume is not None else (None, None)
        target = url if session_id is None else with_sid(url, session_id)
        websocket = await connect(target, max_size=max_size, compression=None)
        try:
            start = SessionStart(
                session_id=session_id, resume_token=resume_token, params=params or {}
            )
            try:
                reply = await _start(websocket, start)
            except ServerError as error:
                if not (start_fresh_if_gone and error.code == ErrorCode.SESSION_NOT_FOUND):
                    raise
                log.info("session %s is gone (%s); starting a new one", session_id, error)
                reply = await _start(websocket, SessionStart(params=params or {}))
        except BaseException:
            await websocket.close()
            raise
        return cls(url, websocket, reply)

    async def reconnect(self, *, busy_timeout_s: float = 30.0) -> None:
        """Resume this session over a new connection, in place (after a drop).

        When the session is gone (its replica died, or it expired) a new one starts
        with the params the old one had: check ``started.resumed``.
        """
        await self.websocket.close()
        fresh = await LivegenClient.connect(
            self.url,
            params=self.started.params,
            resume=(self.session_id, self.resume_token),
            start_fresh_if_gone=True,
            busy_timeout_s=busy_timeout_s,
        )
        self.websocket, self.started = fresh.websocket, fresh.started

    async def update_params(self, **params: Any) -> None:
        await self.websocket.send(pack(ParamsUpdate(params=params)))

    async def send_frame(
        self,
        image: bytes | None = None,
        *,
        frame_id: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Send an input image; without one, ask for a frame from the params alone."""
        await self.websocket.send(pack(Frame(image=image, id=frame_id, params=params or {})))

    async def recv(self) -> ServerMessage:
        """The next message from the server, whatever its type."""
        return decode_server_message(await self.websocket.recv(decode=False))

    async def next_frame(self) -> FrameOut:
        """The next generated frame; an ``error`` from the server raises :class:`ServerError`."""
        while True:
            message = await self.recv()
            if isinstance(message, FrameOut):
                return message
            if isinstance(message, Error):
                raise ServerError(message)

    async def close(self, *, end_session: bool = True) -> None:
        """Close the connection; ``end_session=False`` keeps the session for a resume."""
        if end_session:
            await self.websocket.send(pack(SessionClose()))
        await self.websocket.close()

    async def __aenter__(self) -> LivegenClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
