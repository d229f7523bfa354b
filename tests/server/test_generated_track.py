"""The outgoing track: the newest frame only, timestamps that never run backwards."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from server.webrtc import GeneratedTrack


def pixels(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


async def test_recv_gives_the_newest_frame_and_drops_the_ones_it_replaced() -> None:
    track = GeneratedTrack()
    for value in (10, 20, 30):
        track.put(pixels(value))
    frame = await track.recv()
    assert frame.to_ndarray(format="rgb24")[0, 0].tolist() == [30, 30, 30]


async def test_recv_waits_for_a_new_frame_instead_of_repeating() -> None:
    track = GeneratedTrack()
    track.put(pixels(1))
    await track.recv()
    waiting = asyncio.create_task(track.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    track.put(pixels(2))
    frame = await asyncio.wait_for(waiting, 1.0)
    assert frame.to_ndarray(format="rgb24")[0, 0, 0] == 2


async def test_timestamps_increase_even_when_frames_come_faster_than_the_clock() -> None:
    track = GeneratedTrack()
    stamps = []
    for value in range(20):
        track.put(pixels(value))
        stamps.append((await track.recv()).pts)
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:], strict=False))


async def test_a_stopped_track_ends_a_waiting_recv() -> None:
    track = GeneratedTrack()
    waiting = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1.0)
