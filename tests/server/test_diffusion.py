"""A diffusion pipeline behind the real server: a tiny model loaded from its folder.

The server is configured the way ``livegen serve --pipeline sd-turbo --model
PATH`` configures it, and a client drives it over WebSocket: frames change with
the prompt and the sketch, repeats are stable, caches hit, several sessions are
served at once, text-to-image sessions get a frame per edit, and params the
model cannot serve come back as error messages.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest

from livegen_client import LivegenClient, ServerError
from stream.errors import ErrorCode
from stream.messages import FrameOut
from tests.conftest import TinyModels
from tests.helpers import WAIT_S, get, http_url, ws_url
from tests.server.test_drain import read_port

# Loading diffusers in a fresh process alone takes seconds on a small machine.
PROCESS_WAIT_S = 120.0


@pytest.fixture
async def diffusion_server(start_server, tiny_models: TinyModels):
    # Loading and warming a model at its 512 px takes seconds on two busy cores.
    return await start_server(
        pipeline="sd-turbo", model=str(tiny_models.sd_turbo), ready_s=PROCESS_WAIT_S
    )


async def frame_after(client: LivegenClient) -> FrameOut:
    return await asyncio.wait_for(client.next_frame(), WAIT_S)


def metric(text: str, name: str, cache: str) -> float:
    match = re.search(rf'^{name}{{cache="{cache}"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {cache} not in /metrics"
    return float(match.group(1))


async def test_frames_follow_prompt_and_sketch_and_repeats_are_stable(diffusion_server, jpeg):
    server = diffusion_server
    params = {"prompt": "a cat", "output_format": "png"}
    async with await LivegenClient.connect(ws_url(server), params=params) as client:
        assert client.started.pipeline == "sd-turbo"
        # The size the UNet was trained at: sd-turbo's published sample_size, 64 latents.
        assert (client.started.params["width"], client.started.params["height"]) == (512, 512)
        await client.send_frame(jpeg(seed=1), frame_id=1)
        first = await frame_after(client)
        await client.send_frame(jpeg(seed=1), frame_id=2)
        repeat = await frame_after(client)
        await client.update_params(prompt="a dog")
        edited = await frame_after(client)
        await client.send_frame(jpeg(seed=2), frame_id=3)
        new_sketch = await frame_after(client)

    assert (first.id, repeat.id, edited.id, new_sketch.id) == (1, 2, 2, 3)
    assert (first.width, first.height, first.content_type) == (512, 512, "image/png")
    assert repeat.image == first.image
    assert edited.image != first.image
    assert new_sketch.image != edited.image
    _, _, body = await get(http_url(server, "/metrics"))
    text = body.decode()
    assert metric(text, "livegen_cache_hits_total", "unchanged_inputs") >= 1
    assert metric(text, "livegen_cache_hits_total", "input_latents") >= 1  # the prompt edit
    assert metric(text, "livegen_cache_hits_total", "prompt_embeddings") >= 1


async def test_a_text_to_image_session_gets_a_frame_on_each_edit(diffusion_server):
    params = {"prompt": "a house", "output_format": "png"}
    async with await LivegenClient.connect(ws_url(diffusion_server), params=params) as client:
        await client.update_params(prompt="a red house")
        red = await frame_after(client)
        await client.update_params(prompt="a blue house")
        blue = await frame_after(client)
        await client.send_frame(frame_id=42, params={"prompt": "a red house"})
        asked = await frame_after(client)

    assert red.image != blue.image
    assert asked.id == 42 and asked.image == red.image


async def test_several_sessions_are_served_at_once(diffusion_server, jpeg):
    async def one_session(index: int) -> FrameOut:
        params = {"prompt": f"session {index}", "output_format": "png", "seed": index}
        async with await LivegenClient.connect(ws_url(diffusion_server), params=params) as client:
            await client.send_frame(jpeg(seed=index), frame_id=index)
            return await frame_after(client)

    frames = await asyncio.gather(*(one_session(index) for index in range(6)))

    assert [frame.id for frame in frames] == list(range(6))
    assert len({frame.image for frame in frames}) == 6


@pytest.mark.parametrize(
    ("params", "code", "mention"),
    [
        ({"steps": 5}, ErrorCode.INVALID_PARAMS, "sd-turbo runs 1 to 4 steps"),
        ({"steps": 0}, ErrorCode.INVALID_PARAMS, "'steps' must be in [1, 50]"),
        ({"strength": 1.5}, ErrorCode.INVALID_PARAMS, "'strength' must be in [0.0, 1.0]"),
        ({"scheduler": "ddpm"}, ErrorCode.INVALID_PARAMS, "unknown scheduler 'ddpm'"),
        (
            {"scheduler": "lcm", "steps": 4, "strength": 0.05},
            ErrorCode.INVALID_PARAMS,
            "keeps 2 of its 50 timesteps",
        ),
        ({"lora": "anime"}, ErrorCode.INVALID_PARAMS, "unknown LoRA 'anime'"),
    ],
)
async def test_params_the_model_cannot_serve_come_back_as_errors(
    diffusion_server, jpeg, params, code, mention
):
    async with await LivegenClient.connect(ws_url(diffusion_server)) as client:
        await client.update_params(**params)
        with pytest.raises(ServerError) as refused:
            await frame_after(client)
        await client.send_frame(jpeg(seed=1), frame_id=9)
        frame = await frame_after(client)

    assert refused.value.code == code
    assert mention in str(refused.value)
    assert frame.id == 9  # the session goes on with its old params


@pytest.mark.slow
async def test_livegen_serve_loads_a_model_folder(tiny_models: TinyModels, jpeg):
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"),
        *("--pipeline", "lcm", "--model", str(tiny_models.lcm)),
        *("--tiny-vae", str(tiny_models.taesd), "--lora", f"sketchy={tiny_models.lora}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        port = await asyncio.wait_for(read_port(process.stdout), PROCESS_WAIT_S)
        async with await LivegenClient.connect(f"ws://127.0.0.1:{port}/ws") as client:
            small = {"lora": "sketchy", "width": 128, "height": 96}
            await client.send_frame(jpeg(seed=1), frame_id=1, params=small)
            frame = await asyncio.wait_for(client.next_frame(), PROCESS_WAIT_S)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), PROCESS_WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert frame.id == 1 and (frame.width, frame.height) == (128, 96)
    assert process.returncode == 0, output.decode()


async def test_livegen_serve_without_the_weights_says_what_it_looked_for(tmp_path):
    missing = tmp_path / "sd-turbo"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "server", "serve", "--port", "0"),
        *("--pipeline", "sd-turbo", "--model", str(missing)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), PROCESS_WAIT_S)

    assert process.returncode == 2
    assert f"looked for {missing}".encode() in output
    assert b"Traceback" not in output
