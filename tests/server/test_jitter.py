"""The video jitter buffer lets a frame go as soon as its last packet is in."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from server.webrtc import MarkerJitterBuffer


def packet(sequence: int, timestamp: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    rtp = RtpPacket(sequence_number=sequence, timestamp=timestamp, marker=marker)
    rtp._data = data  # what aiortc's receiver sets: the depacketized payload
    return rtp


def test_a_frame_leaves_with_its_marked_last_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(10, 3000, b"a"))[1] is None
    _, frame = buffer.add(packet(11, 3000, b"b", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)


def test_a_gap_holds_the_frame_until_the_missing_packet_comes() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    buffer.add(packet(20, 6000, b"a"))
    assert buffer.add(packet(22, 6000, b"c", marker=True))[1] is None
    _, frame = buffer.add(packet(21, 6000, b"b"))
    assert frame is not None and frame.data == b"abc"


def test_a_frame_whose_marker_was_lost_leaves_when_the_next_begins() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    buffer.add(packet(30, 9000, b"a"))
    _, frame = buffer.add(packet(31, 12000, b"x"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"a", 9000)
    _, frame = buffer.add(packet(32, 12000, b"y", marker=True))
    assert frame is not None and frame.data == b"xy"


def test_audio_keeps_aiortcs_prefetch() -> None:
    buffer = MarkerJitterBuffer(capacity=16, prefetch=4)
    frames = [buffer.add(packet(40 + i, 960 * i, b"o", marker=True))[1] for i in range(5)]
    assert frames[:4] == [None] * 4 and frames[4] is not None
