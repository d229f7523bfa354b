"""A real aiortc peer for tests and benchmarks: synthetic video out, frames back.

The outgoing track draws a moving square on a gradient and writes the frame's
number into a strip of black and white blocks at the top, big enough to survive
VP8. Whatever comes back through a pipeline that keeps that strip can be matched
to the frame it came from, which measures glass-to-glass latency.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from livegen_client import LivegenClient
from stream.codec import pack
from stream.messages import WebRTCAnswer, WebRTCOffer

MARKER_BITS = 16
MARKER_BLOCK = 16  # pixels per bit, square
CLOCK_RATE = 90_000


def draw_frame(number: int, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) frame: gradient, a square that moves, the number on top."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], -1)
    frame = frame.astype(np.uint8)
    side = height // 4
    left = (number * 7) % (width - side)
    frame[height // 2 : height // 2 + side, left : left + side] = (240, 60, 30)
    for bit in range(MARKER_BITS):
        on = (number >> bit) & 1
        frame[:MARKER_BLOCK, bit * MARKER_BLOCK : (bit + 1) * MARKER_BLOCK] = 255 if on else 0
    return frame


def read_marker(frame: np.ndarray) -> int:
    """The number :func:`draw_frame` wrote, read from the middle of each block."""
    middle = MARKER_BLOCK // 2
    number = 0
    for bit in range(MARKER_BITS):
        x = bit * MARKER_BLOCK + middle
        if frame[middle - 2 : middle + 2, x - 2 : x + 2].mean() > 127:
            number |= 1 << bit
    return number


class MarkedTrack(MediaStreamTrack):
    """Numbered synthetic frames at ``fps``; remembers when each was sent."""

    kind = "video"

    def __init__(self, width: int = 256, height: int = 256, fps: float = 30.0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.sent_at: dict[int, float] = {}
        self._count = 0
        self._started: float | None = None

    async def recv(self) -> VideoFrame:
        if self._started is None:
            self._started = time.perf_counter()
        due = self._started + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        number = self._count % (1 << MARKER_BITS)
        frame = VideoFrame.from_ndarray(draw_frame(number, self.width, self.height), format="rgb24")
        frame.pts = round(self._count * CLOCK_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, CLOCK_RATE)
        self.sent_at[number] = time.perf_counter()
        self._count += 1
        return frame


@dataclass
class Received:
    """Frames that came back: the latest pixels, and latency per matched frame."""

    latest: np.ndarray | None = None
    count: int = 0
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (received at, s)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class Peer:
    """An aiortc peer connection that reads the video livegen sends it.

    Frames that come back are matched, by the number they carry, to the frames
    ``track`` sent (this peer's own, or another's that feeds the same session).
    """

    def __init__(self, track: MarkedTrack) -> None:
        self.track = track
        self.pc = RTCPeerConnection()
        self.received = Received()
        self._reader: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._reader = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        received = self.received
        try:
            while True:
                frame = await track.recv()
                pixels = frame.to_ndarray(format="rgb24")
                now = time.perf_counter()
                sent = self.track.sent_at.get(read_marker(pixels))
                if sent is not None:
                    received.latencies_s.append((now, now - sent))
                received.latest, received.count = pixels, received.count + 1
                received.arrived.set()
        except MediaStreamError:
            return

    async def frames(self, count: int, timeout_s: float) -> np.ndarray:
        """Wait until ``count`` more frames have come back; the latest."""
        target = self.received.count + count
        async with asyncio.timeout(timeout_s):
            while self.received.count < target:
                self.received.arrived.clear()
                await self.received.arrived.wait()
        assert self.received.latest is not None
        return self.received.latest

    async def until(self, condition: Callable[[np.ndarray], bool], timeout_s: float) -> np.ndarray:
        """Wait for a frame that meets ``condition``."""
        async with asyncio.timeout(timeout_s):
            while True:
                frame = await self.frames(1, timeout_s)
                if condition(frame):
                    return frame

    async def hang_up(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


class Caller(Peer):
    """One call to a livegen session: ``await Caller.start(client)``, then ``hang_up``."""

    def __init__(self, client: LivegenClient, track: MarkedTrack) -> None:
        super().__init__(track)
        self.client = client

    @classmethod
    async def start(cls, client: LivegenClient, track: MarkedTrack | None = None) -> Caller:
        caller = cls(client, track or MarkedTrack())
        caller.pc.addTrack(caller.track)
        await caller.pc.setLocalDescription(await caller.pc.createOffer())
        description = caller.pc.localDescription
        await client.websocket.send(pack(WebRTCOffer(sdp=description.sdp)))
        answer = await client.recv()
        assert isinstance(answer, WebRTCAnswer), answer
        await caller.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        return caller
