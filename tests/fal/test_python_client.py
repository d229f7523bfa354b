"""fal's Python client, ``fal-client`` from PyPI, unmodified, against livegen.

It is set up as the README's "fal.ai clients" section says: ``FAL_RUN_HOST``
names livegen, ``FAL_KEY`` holds a livegen API key or token, ``use_jwt=False``
has the client send it in the handshake's ``Authorization`` header, and livegen
serves wss (the client speaks nothing else) with a certificate the client trusts
through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.tokens import mint_token
from tests.conftest import TinyModels
from tests.fal.conftest import APP, KEY, RunClient, Tls, assert_round_trip_results


@pytest.fixture
async def server(start_server, tls: Tls):
    return await start_server(api_keys=KEY, tls_cert=str(tls.cert), tls_key=str(tls.key))


async def test_image_to_image_round_trips_several_in_a_row(
    server, run_python_client: RunClient, round_trip_plan: dict
):
    events = await run_python_client(server, round_trip_plan, key=KEY)

    assert [event["event"] for event in events] == ["result"] * 3
    assert_round_trip_results(events)


async def test_a_bad_input_raises_from_recv_and_the_connection_goes_on(
    server, run_python_client: RunClient, sketch: Path
):
    image = {"$bytes": str(sketch)}
    plan = {
        "app": f"{APP}/image-to-image",
        "max_buffering": 4,
        "inputs": [
            {"prompt": "x", "image_url": image, "strength": 2.0, "request_id": "too strong"},
            {"prompt": "x", "image_url": "https://example.com/sketch.jpg"},
            {"prompt": "x", "image_url": {"$bytes": __file__}, "request_id": "not an image"},
            {"prompt": "x", "image_url": image, "request_id": "fine"},
        ],
    }
    events = await run_python_client(server, plan, key=KEY)

    assert [event["event"] for event in events] == ["error", "error", "error", "result"]
    strength, url, not_image, fine = events
    assert (strength["error"], strength["request_id"]) == ("INVALID_PARAMS", "too strong")
    assert "'strength' must be in [0.0, 1.0]" in strength["reason"]
    assert url["error"] == "INVALID_IMAGE" and "does not fetch URLs" in url["reason"]
    assert (not_image["error"], not_image["request_id"]) == ("INVALID_IMAGE", "not an image")
    assert fine["request_id"] == "fine"


async def test_a_token_as_fal_key_opens_only_its_app_and_only_until_it_expires(
    server, run_python_client: RunClient, sketch: Path
):
    plan = {"app": APP, "inputs": [{"prompt": "a fox", "image_url": {"$bytes": str(sketch)}}]}
    token = mint_token(KEY, ["fast-lcm-diffusion"], ttl_s=60)
    expired = mint_token(KEY, ["fast-lcm-diffusion"], ttl_s=60, now=time.time() - 61)

    [accepted] = await run_python_client(server, plan, key=token)
    [late] = await run_python_client(server, plan, key=expired)
    [elsewhere] = await run_python_client(server, {**plan, "app": "fal-ai/sdxl-turbo"}, key=token)
    [unknown] = await run_python_client(server, plan, key="not-a-key")

    assert accepted["event"] == "result"
    assert (late["event"], late["status"]) == ("refused", 401) and "expired" in late["body"]
    assert (elsewhere["event"], elsewhere["status"]) == ("refused", 403)
    assert (unknown["event"], unknown["status"]) == ("refused", 401)


async def test_the_tiny_diffusion_model_answers_and_maps_num_inference_steps(
    start_server, tiny_models: TinyModels, tls: Tls, run_python_client: RunClient, sketch: Path
):
    server = await start_server(
        pipeline="sd-turbo",
        model=str(tiny_models.sd_turbo),
        api_keys=KEY,
        tls_cert=str(tls.cert),
        tls_key=str(tls.key),
    )
    image = {"$bytes": str(sketch)}
    common = {"image_url": image, "seed": 1, "format": "png", "sync_mode": True}
    plan = {
        "app": "fal-ai/fast-turbo-diffusion/image-to-image",
        "inputs": [
            {"prompt": "a cat", "strength": 0.5, "num_inference_steps": 2, **common},
            {"prompt": "a dog", "strength": 0.5, "num_inference_steps": 2, **common},
            {"prompt": "a dog", "strength": 1.0, "num_inference_steps": 5, **common},
        ],
    }
    events = await run_python_client(server, plan, key=KEY)

    cat, dog, too_many = events
    assert (cat["event"], dog["event"]) == ("result", "result")
    assert (cat["content_type"], cat["content_head"], cat["width"]) == ("image/png", "89504e", 512)
    assert cat["url_head"] == "data:image/png;base64,i"
    assert too_many["event"] == "error" and "num_inference_steps 5" in too_many["reason"]
