"""fal's JavaScript client, ``@fal-ai/client`` from npm, unmodified, under Node.

The client reaches livegen through the README's shim (tests/fal/js/livegen-fal.mjs):
its WebSocket URLs and its token requests go to livegen instead of fal.run and
rest.fal.ai. Tokens come either from the client's own default token request,
with ``FAL_KEY`` holding a livegen API key, or from a ``tokenProvider``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from server.tokens import mint_token
from tests.conftest import TinyModels
from tests.fal.conftest import APP, KEY, RunClient, assert_round_trip_results
from tests.helpers import wait_until


def answers(events: list[dict]) -> list[dict]:
    """The events about inputs; the client's own close comes after them."""
    return [event for event in events if event["event"] in ("result", "error")]


async def test_image_to_image_round_trips_several_in_a_row_then_a_bad_input(
    start_server, run_js_client: RunClient, round_trip_plan: dict, sketch: Path
):
    server = await start_server(api_keys=KEY)
    bad = {"prompt": 5, "image_url": {"$bytes": str(sketch)}, "request_id": "bad"}
    plan = {**round_trip_plan, "inputs": [*round_trip_plan["inputs"], bad]}
    events = answers(await run_js_client(server, plan, key=KEY))

    assert [event["event"] for event in events[:4]] == ["result"] * 3 + ["error"], events
    assert_round_trip_results(events[:3])
    error = events[3]
    # An x-fal-error frame reaches onError as fal's ApiError.
    assert error["status"] == 400, error
    assert error["message"] == (
        "INVALID_PARAMS: param 'prompt' must be a str or a list [[text, weight], ...], got int"
    )
    assert error["body"]["type"] == "x-fal-error" and error["body"]["request_id"] == "bad"


async def test_a_token_provider_gets_the_endpoint_and_its_token_connects(
    start_server, run_js_client: RunClient, sketch: Path
):
    server = await start_server(api_keys=KEY)
    token = mint_token(KEY, [f"{APP}/image-to-image/realtime"], ttl_s=60)
    plan = {
        "app": f"{APP}/image-to-image",
        "token": token,
        "inputs": [{"prompt": "a fox", "image_url": {"$bytes": str(sketch)}}],
    }
    events = await run_js_client(server, plan)

    assert events[0] == {"event": "token", "app": f"{APP}/image-to-image/realtime"}
    assert events[1]["event"] == "result" and events[1]["width"] == 64


async def test_an_expired_token_is_refused_at_the_handshake(
    start_server, run_js_client: RunClient, sketch: Path, caplog
):
    server = await start_server(api_keys=KEY)
    expired = mint_token(KEY, ["fast-lcm-diffusion"], ttl_s=60, now=time.time() - 61)
    plan = {
        "app": APP,
        "token": expired,
        "inputs": [{"prompt": "a fox", "image_url": {"$bytes": str(sketch)}}],
    }
    with caplog.at_level(logging.INFO, logger="server.auth"):
        events = answers(await run_js_client(server, plan))

    # A browser's WebSocket hides the HTTP status: onError gets fal's "Unknown error".
    assert [event["event"] for event in events] == ["error"]
    assert "fal-ai/fast-lcm-diffusion/realtime refused: token expired" in caplog.text
    assert len(server.sessions) == 0


async def test_with_auth_off_on_loopback_no_key_is_needed(
    start_server, run_js_client: RunClient, sketch: Path
):
    server = await start_server()
    plan = {"app": APP, "inputs": [{"prompt": "a fox", "image_url": {"$bytes": str(sketch)}}]}
    [result] = answers(await run_js_client(server, plan))[:1]
    assert result["event"] == "result"


@pytest.mark.parametrize("image_field", ["image_url", "image"])
async def test_the_tiny_diffusion_model_answers_the_js_client(
    start_server, tiny_models: TinyModels, run_js_client: RunClient, sketch: Path, image_field
):
    server = await start_server(pipeline="sd-turbo", model=str(tiny_models.sd_turbo))
    common = {image_field: {"$bytes": str(sketch)}, "strength": 0.6, "seed": 1}
    plan = {
        "app": "fal-ai/fast-turbo-diffusion/image-to-image",
        "inputs": [
            {"prompt": "a cat", "num_inference_steps": 2, **common},
            {
                "prompt": "a dog",
                "num_inference_steps": 4,
                "image_size": {"width": 128, "height": 128},
                **common,
            },
        ],
    }
    events = answers(await run_js_client(server, plan))

    cat, dog = events[:2]
    assert cat["event"] == dog["event"] == "result"
    # The model's trained size (512: sd-turbo's published sample_size) unless asked.
    assert (cat["width"], dog["width"], dog["height"]) == (512, 128, 128)


async def test_the_clients_own_close_is_echoed_without_a_code_which_it_reports_as_1005(
    start_server, run_js_client: RunClient, sketch: Path
):
    server = await start_server(api_keys=KEY)
    plan = {"app": APP, "inputs": [{"prompt": "a fox", "image_url": {"$bytes": str(sketch)}}]}
    events = await run_js_client(server, plan, key=KEY)

    # connection.close() sends a close frame with no code; livegen answers with none
    # (RFC 6455 5.5.1), and the client reports every close but 1000 through onError.
    assert [event["event"] for event in events] == ["result", "closed"]
    assert events[-1]["status"] == 1005
    assert events[-1]["message"] == "Error closing the connection: "
    await wait_until(lambda: len(server.sessions) == 0)  # the fal session ends with it
