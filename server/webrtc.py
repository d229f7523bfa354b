"""WebRTC calls: a session's camera comes in over RTP, its generated frames go back.

Signalling travels over the session's WebSocket (``webrtc.offer``, ``.answer``,
``.candidate``, ``.close``), so WebRTC needs no second HTTP API. Incoming video
is drained without pause into the session's latest-wins input box: a model
slower than the camera drops frames, never queues them, and a frame is
converted to RGB only if the worker takes it, on a codec thread. Outgoing, a
track sends the newest generated frame each time there is one, so the video
runs at the model's real rate; aiortc encodes it on its executor threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtp import RtpPacket
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp
from av import VideoFrame

from server.webrtc_options import WebRTCOptions
from stream.events import FrameIn
from stream.inbox import LatestBox

log = logging.getLogger(__name__)


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, but a video frame leaves once its last packet is in.

    The sender marks a frame's last packet (the RTP marker bit). aiortc's own
    buffer ignores it and waits for the first packet of the next frame, which
    holds every received frame back by one frame interval: 33 ms at 30 fps.
    """

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._is_video:
            return super()._remove_frame(sequence_number)
        assert self._origin is not None
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a gap: the frame is not complete yet
            if packets and packet.timestamp != packets[0].timestamp:
                break  # the next frame began, so this one is whole (its marker was lost)
            packets.append(packet)
            if packet.marker:
                break
        else:
            return None
        frame = JitterFrame(
            data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
            timestamp=packets[0].timestamp,
        )
        self.remove(len(packets))
        return frame


def configure_aiortc(bitrate_bps: int, host_addresses: Sequence[str] | None) -> None:
    """Set what aiortc and aioice only read from module globals, before each call.

    aiortc starts every video encoder at a fixed bitrate (500 kbit/s for VP8),
    far too low for full-frame generated video; its receivers hold each frame
    back until the next one starts (see :class:`MarkerJitterBuffer`); and aioice
    offers every interface but loopback as a host candidate. ``host_addresses``
    None keeps aioice's choice; a list limits candidates to those addresses.
    """
    import aioice.ice
    import aiortc.rtcrtpreceiver
    from aiortc.codecs import h264, vpx

    aiortc.rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer  # type: ignore[attr-defined]

    vpx.DEFAULT_BITRATE = bitrate_bps
    vpx.MAX_BITRATE = max(vpx.MAX_BITRATE, bitrate_bps)
    h264.DEFAULT_BITRATE = bitrate_bps
    h264.MAX_BITRATE = max(h264.MAX_BITRATE, bitrate_bps)
    if host_addresses is not None:
        addresses = list(host_addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
            a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)
        ]


class NoVideoError(ValueError):
    """An offer that is SDP but has no video this call can use."""


class GeneratedTrack(MediaStreamTrack):
    """Sends the newest generated frame when there is a new one; never queues."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frames: LatestBox[np.ndarray] = LatestBox()
        self._new_frame = asyncio.Event()
        self._started = time.perf_counter()
        self._last_pts = -1

    def put(self, pixels: np.ndarray) -> None:
        """A new (height, width, 3) uint8 frame; one not yet sent is replaced."""
        self._frames.put(pixels)
        self._new_frame.set()

    async def recv(self) -> VideoFrame:
        while (pixels := self._frames.take()) is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._new_frame.clear()
            await self._new_frame.wait()
        frame = VideoFrame.from_ndarray(pixels, format="rgb24")
        # Wall-clock timestamps show the model's real pace; they never run backwards.
        pts = round((time.perf_counter() - self._started) * VIDEO_CLOCK_RATE)
        self._last_pts = max(pts, self._last_pts + 1)
        frame.pts, frame.time_base = self._last_pts, VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()
        self._new_frame.set()  # wake a waiting recv so it can end


class Call:
    """One peer connection, from an offer to hang-up.

    A camera call (``offer_input`` given) takes the peer's video as the session's
    input and may send generated video back; a viewer's call (``offer_input``
    None, WHEP) only sends. Either way ``output`` is the track that goes out.
    """

    def __init__(
        self,
        options: WebRTCOptions,
        offer_input: Callable[[FrameIn], None] | None,
        on_ended: Callable[[Call, str | None], None],
    ) -> None:
        """``on_ended(call, reason)`` is told when the connection fails (with why)
        or the peer closes it (reason None)."""
        configure_aiortc(options.bitrate_bps, options.host_addresses)
        servers = [RTCIceServer(**server) for server in options.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.output = GeneratedTrack()
        self._options = options
        self._offer_input = offer_input
        self._on_ended = on_ended
        self._drains: set[asyncio.Task[None]] = set()
        # Whether the peer takes video back, known once its offer is read.
        self.sends_back = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def answer(self, sdp: str) -> str:
        """Take the client's offer; the answer holds all our ICE candidates (no trickle)."""
        if not sdp.lstrip().startswith("v=0"):
            raise ValueError("the offer is not an SDP session description (it starts with v=0)")
        video = [m for m in SessionDescription.parse(sdp).media if m.kind == "video"]
        # Our track first: the offer's video line then binds to its transceiver,
        # which is where codec preferences must already be set.
        sender = self.pc.addTrack(self.output)
        [transceiver] = [t for t in self.pc.getTransceivers() if t.sender is sender]
        transceiver.setCodecPreferences(
            self._codecs({c.mimeType.lower() for m in video for c in m.rtp.codecs})
        )
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if transceiver.mid is None:
            wanted = "send a camera track" if self._offer_input else "receive video (recvonly)"
            raise NoVideoError(f"the offer has no video: {wanted}")
        self._check_video_direction(video)
        for other in self.pc.getTransceivers():
            dtls = other.receiver.transport
            if dtls._role == "auto":  # the offer lets us choose (actpass)
                # The DTLS server's side (setup:passive): as a client aiortc offers only
                # ECDSA cipher suites, which a server with an RSA certificate refuses
                # ("no shared cipher": GStreamer's webrtcbin, which OBS-style tools use).
                dtls._set_role("server")
            if other.kind == "audio":
                # Nothing here listens to sound (OBS sends it): refused in the answer,
                # so it is neither sent nor decoded into a queue nobody reads.
                other.direction = "inactive"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        description = self.pc.localDescription
        assert description is not None
        return description.sdp

    def _codecs(self, offered: set[str]) -> list[RTCRtpCodecCapability]:
        """The configured codec, or where the offer lacks it (OBS sends H.264 only),
        whichever the offer has: a camera's video is better taken than refused."""
        codecs = RTCRtpSender.getCapabilities("video").codecs
        wanted = f"video/{self._options.codec}"
        if wanted not in offered:
            return codecs
        return [codec for codec in codecs if codec.mimeType.lower() in (wanted, "video/rtx")]

    def _check_video_direction(self, video: list[MediaDescription]) -> None:
        directions = {m.direction for m in video}
        # A send-only camera (OBS over WHIP) is watched through WHEP instead.
        self.sends_back = bool(directions & {None, "sendrecv", "recvonly"})
        if self._offer_input is None:
            if not directions & {None, "sendrecv", "recvonly"}:
                raise NoVideoError(
                    "the offer's video only sends: a viewer's offer receives (recvonly)"
                )
        elif not directions & {None, "sendrecv", "sendonly"}:
            # A receive-only offer would connect and then never see a frame: livegen
            # makes its video from the camera the caller sends.
            raise NoVideoError(
                "the offer's video only receives: send a camera track as well (sendrecv); "
                "livegen makes its video from yours"
            )

    async def add_candidate(self, candidate: str, sdp_mid: str | None, index: int | None) -> None:
        if not candidate:
            return  # end of candidates
        try:
            parsed = candidate_from_sdp(candidate.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError):  # what aiortc's parser raises
            raise ValueError(
                f"{candidate[:80]!r} is not an ICE candidate line (candidate:FOUNDATION "
                "COMPONENT PROTOCOL PRIORITY ADDRESS PORT typ TYPE ...)"
            ) from None
        parsed.sdpMid, parsed.sdpMLineIndex = sdp_mid, index
        await self.pc.addIceCandidate(parsed)

    async def close(self) -> None:
        self.output.stop()
        await self.pc.close()
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._offer_input is None:
            return
        task = asyncio.create_task(self._drain(track))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Take every incoming frame as it arrives: aiortc's own queue never grows."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                convert = functools.partial(frame.to_ndarray, format="rgb24")
                assert self._offer_input is not None  # a viewer's call drains nothing
                self._offer_input(FrameIn(None, None, {}, time.perf_counter(), video=convert))

    async def _on_state(self) -> None:
        if self.pc.connectionState == "failed":
            self._on_ended(self, "the WebRTC connection failed (network lost or blocked)")
        elif self.pc.connectionState == "closed":
            self._on_ended(self, None)
