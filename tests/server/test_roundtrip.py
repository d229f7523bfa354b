"""Frames go through a real server and come back: one session, many, with params."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from livegen_client import LivegenClient, ServerError
from stream.errors import ErrorCode
from stream.messages import SessionStarted
from tests.helpers import WAIT_S, make_pixels, ws_url


def pixels_of(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB")).astype(np.int16)


async def test_passthrough_returns_the_input_frame(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.send_frame(jpeg(seed=1, width=96, height=64), frame_id=7)
        frame = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert (frame.id, frame.width, frame.height, frame.content_type) == (7, 96, 64, "image/jpeg")
    assert set(frame.timings) == {"queue", "decode", "infer", "encode"}
    difference = np.abs(pixels_of(frame.image) - make_pixels(96, 64, seed=1))
    assert difference.mean() < 4


async def test_session_started_reports_session_params_and_limits(start_server):
    server = await start_server(max_image_pixels=1_000_000)
    client = await LivegenClient.connect(ws_url(server), params={"prompt": "a fox", "seed": 3})
    started = client.started
    await client.close()

    assert isinstance(started, SessionStarted)
    assert started.protocol == 1 and started.pipeline == "passthrough" and not started.resumed
    assert started.params["prompt"] == "a fox" and started.params["seed"] == 3
    assert started.limits["max_image_pixels"] == 1_000_000


async def test_output_format_follows_params(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.update_params(output_format="png")
        await client.send_frame(jpeg(seed=2))
        png = await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.send_frame(jpeg(seed=2), params={"output_format": "webp", "quality": 50})
        webp = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert png.content_type == "image/png" and png.image.startswith(b"\x89PNG")
    assert webp.content_type == "image/webp" and webp.image[8:12] == b"WEBP"


async def test_params_update_regenerates_from_the_last_input(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.send_frame(jpeg(seed=3), frame_id=41)
        first = await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.update_params(output_format="png")
        again = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert (first.id, first.content_type) == (41, "image/jpeg")
    assert (again.id, again.content_type) == (41, "image/png")


async def test_frames_without_ids_are_numbered_in_order(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        ids = []
        for seed in range(3):
            await client.send_frame(jpeg(seed=seed))
            ids.append((await asyncio.wait_for(client.next_frame(), WAIT_S)).id)

    assert ids == [1, 2, 3]


async def test_sixteen_concurrent_sessions_each_get_their_own_frames(start_server, jpeg):
    server = await start_server()

    async def run_session(seed: int) -> list[int]:
        """Sends five frames; for each output, the seed whose frame it is closest to."""
        async with await LivegenClient.connect(ws_url(server)) as client:
            matches = []
            for frame_id in range(5):
                await client.send_frame(jpeg(seed=seed), frame_id=frame_id)
                frame = await asyncio.wait_for(client.next_frame(), WAIT_S)
                assert frame.id == frame_id
                output = pixels_of(frame.image)
                errors = [np.abs(output - candidate).mean() for candidate in candidates]
                matches.append(int(np.argmin(errors)))
            return matches

    candidates = [make_pixels(64, 64, seed=seed) for seed in range(16)]
    results = await asyncio.gather(*(run_session(seed) for seed in range(16)))

    assert results == [[seed] * 5 for seed in range(16)]
    assert server.metrics.frames_out._value.get() == 16 * 5


async def test_a_broken_frame_does_not_replace_the_input_a_params_edit_reruns(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.send_frame(jpeg(seed=1), frame_id=1)
        await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.send_frame(b"not an image", frame_id=2)
        with pytest.raises(ServerError) as refused:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.update_params(prompt="again")
        rerun = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert (refused.value.code, refused.value.frame_id) == (ErrorCode.INVALID_IMAGE, 2)
    assert rerun.id == 1
