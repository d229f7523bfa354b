"""A session is told, at its start, which params its pipeline ignores and whether a
frame needs an input image: what the pages grey out and explain."""

from __future__ import annotations

import asyncio

import msgpack
from websockets.asyncio.client import connect

from pipelines.base import PipelineOptions
from pipelines.passthrough import PassthroughPipeline
from tests.helpers import WAIT_S, ws_url


async def started(server) -> dict:
    async with connect(ws_url(server)) as websocket:
        await websocket.send(msgpack.packb({"type": "session.start"}))
        return msgpack.unpackb(await asyncio.wait_for(websocket.recv(), WAIT_S))


class TextToImage(PassthroughPipeline):
    """Says it draws from text and ignores the seed (what the server passes on)."""

    text_to_image = True

    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))

    def ignored_params(self) -> frozenset[str]:
        return frozenset({"seed", "negative_prompt"})


async def test_passthrough_needs_an_image_and_uses_only_the_output_encoding(start_server):
    message = await started(await start_server())

    assert message["needs_image"] is True
    assert {"prompt", "strength", "steps", "seed", "width", "height"} <= set(
        message["ignored_params"]
    )
    assert not {"output_format", "quality"} & set(message["ignored_params"])
    assert set(message["ignored_params"]) <= set(message["params"])


async def test_what_a_pipeline_says_goes_to_the_session_sorted(start_server):
    message = await started(await start_server(TextToImage()))

    assert message["needs_image"] is False
    assert message["ignored_params"] == ["negative_prompt", "seed"]
