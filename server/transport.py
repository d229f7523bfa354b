"""One WebSocket's two loops: messages in to the connection, messages out to the peer.

Both kinds of connection, livegen's own (:mod:`server.connection`) and fal's
(:mod:`server.fal`), talk through a :class:`Transport`. The receive loop hands
each message to the connection until the peer goes or the protocol object
closes. The sender task writes what the protocol object has queued, in order,
then the newest output: a client that reads slowly gets its stale outputs
replaced, never queued. Once the protocol is closed and nothing more is queued,
the sender closes the WebSocket with the protocol's code. A connection supplies
only what differs: how it reads a message, and how an output is packed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, Self, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.errors import CloseCode
from stream.inbox import LatestBox
from stream.protocol import ConnectionState

if TYPE_CHECKING:
    from server.metrics import Metrics

log = logging.getLogger(__name__)

Output = TypeVar("Output")


class WireProtocol(Protocol):
    """What the transport reads of a protocol object: its queued messages and its close."""

    @property
    def state(self) -> ConnectionState: ...

    @property
    def close_code(self) -> CloseCode | None: ...

    @property
    def close_reason(self) -> str: ...

    def data_to_send(self) -> Sequence[bytes | str]: ...


class Transport(Generic[Output]):
    """A connection's WebSocket; its sender runs while the ``async with`` block does.

    On leaving the block after the protocol closed, the sender first gets to
    send what is queued (an error, say) and the close, for at most the
    WebSocket's close timeout.
    """

    def __init__(
        self,
        websocket: ServerConnection,
        protocol: WireProtocol,
        metrics: Metrics,
        pack: Callable[[Output], bytes],
    ) -> None:
        self._websocket = websocket
        self._protocol = protocol
        self._metrics = metrics
        self._pack = pack
        self._outputs: LatestBox[tuple[Output, float]] = LatestBox()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._sender = asyncio.create_task(self._send_loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        sender = self._sender
        assert sender is not None
        if self._protocol.state is ConnectionState.CLOSED:
            # What the peer still sends is read and dropped meanwhile: websockets stops
            # reading while received messages wait unread, and the close handshake needs
            # the peer's reply to be read.
            discard = asyncio.create_task(self._discard_incoming())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(sender), self._websocket.close_timeout)
            discard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await discard
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    async def receive(self, handle: Callable[[bytes | str], None]) -> None:
        """Hand each message to ``handle`` until the peer goes or the protocol closes."""
        with contextlib.suppress(ConnectionClosed):
            async for data in self._websocket:
                handle(data)
                self._wake.set()
                if self._protocol.state is ConnectionState.CLOSED:
                    break
                # The sender's turn before the next message: replies to a burst leave as
                # they are made, so only a peer whose socket does not drain lets them pile
                # up (and, past the protocol's bound, gets closed).
                await asyncio.sleep(0)

    async def _discard_incoming(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self._websocket:
                pass

    def wake(self) -> None:
        """The protocol object has queued a message or closed: send or close."""
        self._wake.set()

    def put(self, output: Output, received_at: float) -> None:
        """Send ``output`` next; one not yet sent is replaced, and counted as dropped."""
        if self._outputs.put((output, received_at)):
            self._metrics.frames_dropped.labels("output").inc()
        self._wake.set()

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                # Cleared before sending: whatever arrives meanwhile wakes the next pass.
                self._wake.clear()
                for data in self._protocol.data_to_send():
                    await self._websocket.send(data)
                taken = self._outputs.take()
                if taken is not None:
                    output, received_at = taken
                    # Packed only now: an output replaced before it could leave is never packed.
                    await self._websocket.send(self._pack(output))
                    self._metrics.frames_out.inc()
                    self._metrics.stage_seconds.labels("total").observe(
                        time.perf_counter() - received_at
                    )
                if self._protocol.state is ConnectionState.CLOSED and not self._wake.is_set():
                    await self._close_websocket()
                    return

    async def _close_websocket(self) -> None:
        code, reason = self._protocol.close_code, self._protocol.close_reason
        assert code is not None
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            log.info("closing %s with %d: %s", self._websocket.remote_address, code, reason)
        await self._websocket.close(code, reason)
