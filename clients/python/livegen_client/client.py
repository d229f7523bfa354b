"""An asyncio client for the livegen protocol.

It speaks the same messages as the server by reusing :mod:`stream`'s
dataclasses and codec::

    async with await LivegenClient.connect("ws://127.0.0.1:8000/ws") as client:
        await client.update_params(prompt="a watercolor fox")
        await client.send_frame(jpeg_bytes)
        frame = await client.next_frame()
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from stream.codec import decode_server_message, pack
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


class ServerError(Exception):
    """The server refused something; ``code`` is one of :class:`stream.errors.ErrorCode`."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.fatal = error.fatal
        self.frame_id = error.id


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
        max_size: int = 64 << 20,
    ) -> LivegenClient:
        """Open a WebSocket and start a session, or resume ``(session_id, resume_token)``."""
        session_id, resume_token = resume if resume is not None else (None, None)
        websocket = await connect(url, max_size=max_size, compression=None)
        try:
            start = SessionStart(
                session_id=session_id, resume_token=resume_token, params=params or {}
            )
            await websocket.send(pack(start))
            reply = decode_server_message(await websocket.recv(decode=False))
            if isinstance(reply, Error):
                raise ServerError(reply)
            if not isinstance(reply, SessionStarted):
                raise ServerError(
                    Error("unexpected_reply", f"expected session.started, got {reply.TYPE}")
                )
        except BaseException:
            await websocket.close()
            raise
        return cls(url, websocket, reply)

    async def reconnect(self) -> None:
        """Resume this session over a new connection, in place (after a drop)."""
        await self.websocket.close()
        fresh = await LivegenClient.connect(self.url, resume=(self.session_id, self.resume_token))
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
