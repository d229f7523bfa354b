"""Structure control and blends behind the real server, as ``livegen serve`` configures them.

``--controlnet`` and ``--t2i-adapter`` load tiny random-weight models from their
folders; a client sees them in ``session.started``, picks them with the
``controlnet`` param, and gets frames that follow the sketch. Bad picks are
``invalid_params`` errors and the session goes on.
"""

from __future__ import annotations

import re

import pytest

from livegen_client import LivegenClient, ServerError
from stream.errors import ErrorCode
from tests.conftest import TinyControls, TinyModels
from tests.helpers import get, http_url, ws_url
from tests.server.test_diffusion import frame_after

SIZE = {"width": 128, "height": 128, "output_format": "png"}


@pytest.fixture
async def controlled_server(start_server, tiny_models: TinyModels, tiny_controls: TinyControls):
    return await start_server(
        pipeline="sd-turbo",
        model=str(tiny_models.sd_turbo),
        controlnet=f"lines={tiny_controls.controlnet}",
        t2i_adapter=f"sketch={tiny_controls.t2i_adapter}",
        ready_s=60.0,  # a UNet, a ControlNet and an adapter load and warm up
    )


def hits(metrics: str, cache: str) -> float:
    match = re.search(rf'^livegen_cache_hits_total{{cache="{cache}"}} (\S+)$', metrics, re.M)
    assert match, f"no hits counted for {cache}"
    return float(match.group(1))


async def test_a_session_sees_the_controls_and_its_frames_follow_them(controlled_server, jpeg):
    params = {**SIZE, "prompt": "a house", "strength": 1.0}
    sketch = jpeg(seed=3, width=128, height=128)
    async with await LivegenClient.connect(ws_url(controlled_server), params=params) as client:
        assert client.started.controls == {"controlnet": ["lines"], "t2i_adapter": ["sketch"]}
        await client.send_frame(sketch, frame_id=1)
        plain = await frame_after(client)
        await client.update_params(controlnet="lines", control_scale=1.5)
        lines = await frame_after(client)
        await client.update_params(controlnet="sketch")
        adapted = await frame_after(client)
        await client.update_params(prompt="a barn")  # the same sketch: its control is cached
        edited = await frame_after(client)

    assert len({plain.image, lines.image, adapted.image, edited.image}) == 4
    _, _, body = await get(http_url(controlled_server, "/metrics"))
    assert hits(body.decode(), "control_images") >= 1
    assert hits(body.decode(), "adapter_features") >= 1


REFUSED = [
    ({"controlnet": "canny-sdxl"}, "unknown ControlNet or T2I-Adapter 'canny-sdxl'"),
    ({"controlnet": ["lines", "sketch"]}, "not both"),
    ({"controlnet": "lines", "control_scale": [1.0, 0.5]}, "2 scales for 1 controls"),
    ({"control_scale": 3.0}, "'control_scale' must be in [0.0, 2.0]"),
    ({"prompt": []}, "of 1 to 8 pairs, got 0"),
    ({"prompt": [["a", 0.0], ["b", 0.0]]}, "the weights are all 0"),
    ({"seed": [[1, -2.0]]}, "'seed weight' must be in [0.0, 1000000.0]"),
]


async def test_controls_and_blends_that_cannot_run_are_refused_and_the_session_goes_on(
    controlled_server, jpeg
):
    async with await LivegenClient.connect(ws_url(controlled_server), params=SIZE) as client:
        for frame_id, (params, mention) in enumerate(REFUSED):
            await client.update_params(**params)
            with pytest.raises(ServerError) as refused:
                await frame_after(client)
            assert refused.value.code == ErrorCode.INVALID_PARAMS
            assert mention in str(refused.value)
            await client.send_frame(jpeg(seed=frame_id, width=128, height=128), frame_id=frame_id)
            assert (await frame_after(client)).id == frame_id  # the session goes on


async def test_blended_prompts_and_seeds_make_frames_between_their_parts(controlled_server):
    async with await LivegenClient.connect(ws_url(controlled_server), params=SIZE) as client:
        frames = {}
        for name, patch in {
            "cat": {"prompt": "a cat"},
            "dog": {"prompt": "a dog"},
            "both": {"prompt": [["a cat", 1.0], ["a dog", 1.0]], "prompt_blend": "slerp"},
            "seeds": {"prompt": "a cat", "seed": [[0, 1.0], [1, 1.0]]},
        }.items():
            await client.update_params(**patch)
            frames[name] = await frame_after(client)

    assert len({frame.image for frame in frames.values()}) == 4
