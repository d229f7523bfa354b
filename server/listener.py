"""The port's one listener: WebSocket handshakes, and HTTP requests that carry a body.

websockets serves the WebSocket handshakes and the GET routes (server/http.py),
but its HTTP parser refuses any request with a body, and WHIP and WHEP
(server/whip.py) are POSTs and PATCHes of SDP. So each accepted connection
first reads the request's head here: a request for a path the body routes
claim is read whole (its body up to a limit) and answered by them, one request
per connection (the answer says ``Connection: close``); any other request is
handed to websockets byte for byte, as if this layer were not there.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, cast

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from server.http import response

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers; websockets' own limits are close


@dataclass(frozen=True, slots=True)
class BodyRequest:
    """One HTTP request (its ``path`` holds the query too) with its body."""

    request: Request
    body: bytes


class BodyRoutes(Protocol):
    """What the listener needs from the routes that read bodies."""

    @property
    def max_body_bytes(self) -> int: ...

    def handles(self, path: str) -> bool: ...

    async def answer(self, request: BodyRequest) -> Response: ...


class _Mode(Enum):
    READING_HEAD = "reading head"
    WEBSOCKETS = "websockets"
    BODY = "body"


class ListenerConnection(ServerConnection):
    """websockets' connection, which first looks at the request's head."""

    def __init__(
        self, protocol: ServerProtocol, server: Server, *, routes: BodyRoutes, **kwargs: Any
    ) -> None:
        super().__init__(protocol, server, **kwargs)
        self._routes = routes
        self._mode = _Mode.READING_HEAD
        self._buffer = bytearray()
        self._head_read: asyncio.Future[None] = self.loop.create_future()
        self._request: tuple[str, str, Headers, int] | None = None
        self._exchange: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._mode is _Mode.WEBSOCKETS:
            super().data_received(data)
            return
        self._buffer += data
        if self._mode is _Mode.READING_HEAD:
            self._read_head()
        if self._mode is _Mode.BODY:
            self._read_body()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._head_read.done():
            self._head_read.set_result(None)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        """websockets' handshake, or this connection's one HTTP exchange.

        websockets' connection handler calls this under its open timeout, then
        closes the socket unless a WebSocket opened: an exchange ends first.
        """
        await self._head_read
        if self._mode is not _Mode.BODY:
            await super().handshake(*args, **kwargs)
            return
        try:
            await asyncio.shield(self.connection_lost_waiter)
        finally:
            if self._exchange is not None and not self._exchange.done():
                self._exchange.cancel()  # the client went away or took too long

    def _read_head(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 and len(self._buffer) <= MAX_HEAD_BYTES:
            return
        line_end = self._buffer.find(b"\r\n")
        request_line = bytes(self._buffer[:line_end]).split(b" ")
        if end < 0 or len(request_line) != 3 or not request_line[1].startswith(b"/"):
            self._hand_over()  # not ours: websockets gives its usual answer
            return
        method, target = (part.decode("latin-1") for part in request_line[:2])
        if not self._routes.handles(target.partition("?")[0]):
            self._hand_over()
            return
        parsed = http.client.parse_headers(io.BytesIO(bytes(self._buffer[line_end + 2 : end + 4])))
        headers = Headers(parsed.items())
        del self._buffer[: end + 4]
        self._mode = _Mode.BODY
        self._head_read.set_result(None)
        length = headers.get("Content-Length", "0").strip()
        if headers.get("Transfer-Encoding"):
            self._answer(_refusal(411, "send the body with a Content-Length, not chunked"))
        elif not (length.isascii() and length.isdigit()):
            self._answer(_refusal(400, f"Content-Length {length!r} is not a number"))
        elif int(length) > self._routes.max_body_bytes:
            limit = self._routes.max_body_bytes
            self._answer(_refusal(413, f"the body is {length} bytes; the limit is {limit}"))
        else:
            self._request = (method, target, headers, int(length))
            if headers.get("Expect", "").lower() == "100-continue" and int(length):
                # curl (OBS's HTTP client) waits for this, up to a second, before the body.
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_body(self) -> None:
        if self._request is None:
            self._buffer.clear()  # answered already; what else comes is not read
            return
        method, target, headers, length = self._request
        if len(self._buffer) < length:
            return
        self._request = None
        body = bytes(self._buffer[:length])
        self._buffer.clear()
        self._exchange = self.loop.create_task(
            self._run(self._routes.answer(BodyRequest(Request(target, headers, method), body)))
        )

    def _hand_over(self) -> None:
        self._mode = _Mode.WEBSOCKETS
        self._head_read.set_result(None)
        buffered, self._buffer = bytes(self._buffer), bytearray()
        super().data_received(buffered)

    def _answer(self, answer: Response) -> None:
        self._request = None
        self._exchange = self.loop.create_task(self._run(_ready(answer)))

    async def _run(self, answering: Awaitable[Response]) -> None:
        try:
            answer = await answering
        except Exception:
            log.exception("answering an HTTP request failed")
            answer = _refusal(500, "the server failed to answer; see its log")
        answer.headers["Connection"] = "close"
        status = f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}\r\n"
        head = status + "".join(
            f"{name}: {value}\r\n" for name, value in answer.headers.raw_items()
        )
        self.transport.write(head.encode("latin-1") + b"\r\n" + answer.body)
        self.transport.close()  # after the write is flushed


async def _ready(answer: Response) -> Response:
    return answer


def _refusal(status: int, reason: str) -> Response:
    return response(status, f"{reason}\n".encode(), "text/plain; charset=utf-8")


def connection_factory(routes: BodyRoutes) -> type[ServerConnection]:
    """What ``serve(create_connection=...)`` takes: websockets calls it like its class."""

    def create(protocol: ServerProtocol, server: Server, **kwargs: Any) -> ServerConnection:
        return ListenerConnection(protocol, server, routes=routes, **kwargs)

    return cast(type[ServerConnection], create)
