"""The ids of a session's first frames, as the README's protocol tables give them.

A client that sends no ids counts its own ``frame`` messages: the first is 1, a
``params.update`` takes no position. A frame a params edit makes answers the
latest input (its id), or, before any, no input at all (id 0). Talked to with a
plain websockets client, as a client writer would from the README alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgpack
import numpy as np
from websockets.asyncio.client import connect

from pipelines.base import FrameRequest, PipelineOptions
from pipelines.passthrough import PassthroughPipeline
from tests.helpers import WAIT_S, ws_url


class TextToGray(PassthroughPipeline):
    """Returns each input, and a gray frame of the params' size for a text-only request."""

    text_to_image = True

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        return [
            np.full((r.params.height, r.params.width, 3), 128, np.uint8)
            if r.image is None
            else r.image
            for r in requests
        ]


async def test_only_frames_take_positions_and_a_params_edit_answers_the_latest_input(
    start_server, jpeg
):
    server = await start_server(TextToGray(PipelineOptions(device="cpu")))
    async with connect(ws_url(server)) as websocket:

        async def answer_to(message: dict) -> dict:
            await websocket.send(msgpack.packb(message, use_bin_type=True))
            return msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))

        await answer_to({"type": "session.start", "params": {"width": 64, "height": 64}})
        ids = [
            (await answer_to(message))["id"]
            for message in (
                {"type": "params.update", "params": {"prompt": "a fox"}},  # no input yet
                {"type": "frame", "image": jpeg(seed=1)},
                {"type": "params.update", "params": {"prompt": "an owl"}},  # reruns input 1
                {"type": "frame"},  # a text-only request is a frame: it takes position 2
                {"type": "frame", "image": jpeg(seed=2)},
            )
        ]

    assert ids == [0, 1, 1, 2, 3]
