"""fal.ai-compatible routes on a real server, driven by a plain websockets client.

What fal's own clients cannot show (they are tested in tests/fal/): the HTTP
status of each refused handshake, the input buffer of max_buffering, each input
running with its own params, sessions freed on close, shutdown, and POST /tokens/.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import ssl
import time
from typing import Any

import msgpack
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.auth import AuthGate
from server.config import ServerConfig
from server.fal import FalConnection
from server.tokens import mint_token
from tests.fal.certificates import make_certificate
from tests.helpers import WAIT_S, GatedPipeline, ShadingPipeline, get, http_url, wait_until

KEY = "test-api-key"
APP = "fal-ai/fast-lcm-diffusion"


def fal_url(server, path: str = f"/{APP}/realtime", query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")


async def send(websocket: ClientConnection, **fields: Any) -> None:
    await websocket.send(msgpack.packb(fields, use_bin_type=True))


async def receive(websocket: ClientConnection) -> dict[str, Any]:
    """The next message: a result (binary msgpack) or an x-fal frame (JSON text)."""
    data = await asyncio.wait_for(websocket.recv(), WAIT_S)
    if isinstance(data, str):
        loaded: dict[str, Any] = json.loads(data)
        return loaded
    unpacked: dict[str, Any] = msgpack.unpackb(data)
    return unpacked


async def refused_status(url: str, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, **kwargs)
    answer = refused.value.response
    return answer.status_code, answer.body.decode()


async def test_an_input_without_a_type_is_answered_with_a_fal_result(start_server, jpeg):
    server = await start_server()
    async with connect(fal_url(server)) as websocket:
        await send(websocket, prompt="a fox", image_url=jpeg(seed=1), seed=3, request_id="r1")
        result = await receive(websocket)

    [image] = result["images"]
    assert image["content"].startswith(b"\xff\xd8") and image["url"].startswith("data:image/jpeg")
    assert (image["width"], image["height"], image["content_type"]) == (64, 64, "image/jpeg")
    assert (result["seed"], result["prompt"], result["request_id"]) == (3, "a fox", "r1")


@pytest.mark.parametrize(
    ("path", "query", "status", "mention"),
    [
        ("/fal-ai/other/realtime", "", 404, "no fal app fal-ai/other/realtime here"),
        (f"/{APP}/realtime", "max_buffering=0", 400, "max_buffering must be an integer"),
        ("/fal-ai/lonely", "", 404, "no WebSocket route"),
    ],
)
async def test_a_route_not_served_or_a_bad_query_is_refused_at_the_handshake(
    start_server, path, query, status, mention
):
    server = await start_server(fal_apps=f"{APP}, sketch")
    code, body = await refused_status(fal_url(server, path, query))
    assert code == status and mention in body
    async with connect(fal_url(server, "/me/sketch/image-to-image/realtime")):
        pass  # a bare alias in --fal-apps serves every owner's app of that name


async def test_with_auth_on_a_client_needs_a_key_or_a_current_token_for_the_app(start_server):
    server = await start_server(api_keys=f"other-key,{KEY}")
    fresh = mint_token(KEY, ["fast-lcm-diffusion"], ttl_s=60)
    expired = mint_token(KEY, ["fast-lcm-diffusion"], ttl_s=60, now=time.time() - 61)
    elsewhere = mint_token(KEY, ["fal-ai/fast-turbo-diffusion"], ttl_s=60)
    forged = mint_token("not-a-key", ["*"], ttl_s=60)

    for accepted in [
        {"additional_headers": {"Authorization": f"Key {KEY}"}},
        {"additional_headers": {"Authorization": f"key {fresh}"}},  # a token as FAL_KEY
        {"query": f"fal_jwt_token={fresh}"},
    ]:
        query = accepted.pop("query", "")
        async with connect(fal_url(server, query=query), **accepted):
            pass

    refusals = [
        (await refused_status(fal_url(server)), (401, "needs a token")),
        (await refused_status(fal_url(server, query=f"fal_jwt_token={expired}")), (401, "expired")),
        (await refused_status(fal_url(server, query=f"fal_jwt_token={elsewhere}")), (403, "not")),
        (
            await refused_status(fal_url(server, query=f"fal_jwt_token={forged}")),
            (401, "signature"),
        ),
        (await refused_status(fal_url(server, query="fal_jwt_token=nonsense")), (401, "not a JWT")),
        (
            await refused_status(fal_url(server), additional_headers={"Authorization": "Bearer x"}),
            (401, "Authorization: Key"),
        ),
    ]
    for (code, body), (status, mention) in refusals:
        assert code == status and mention in body, body


@pytest.mark.parametrize(
    ("host", "auth", "api_keys", "enabled"),
    [
        ("127.0.0.1", "auto", "", False),
        ("localhost", "auto", "", False),
        ("127.0.0.1", "auto", KEY, True),
        ("0.0.0.0", "auto", KEY, True),
        ("0.0.0.0", "off", KEY, False),
        ("0.0.0.0", "off", "", False),
    ],
)
def test_auth_is_off_by_default_only_on_loopback_without_keys(host, auth, api_keys, enabled):
    config = ServerConfig(host=host, auth=auth, api_keys=api_keys)
    assert AuthGate.from_config(config).enabled is enabled


@pytest.mark.parametrize(
    ("options", "mention"),
    [
        ({"host": "0.0.0.0"}, "auth is on (--host 0.0.0.0 is not loopback) but no --api-keys"),
        ({"auth": "on"}, "auth is on (--auth on) but no --api-keys"),
    ],
)
def test_auth_without_keys_is_refused_at_start_since_no_client_could_connect(options, mention):
    with pytest.raises(ValueError, match=re.escape(mention)):
        ServerConfig(**options)


async def test_browsers_from_other_sites_need_allowing_on_fal_routes_too(start_server):
    server = await start_server()
    code, _ = await refused_status(
        fal_url(server), additional_headers={"Origin": "https://evil.example"}
    )
    assert code == 403


async def test_max_buffering_keeps_that_many_waiting_inputs_and_drops_the_oldest(
    start_server, jpeg
):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    async with connect(fal_url(server, query="max_buffering=2")) as websocket:
        await send(websocket, image_url=jpeg(seed=0), request_id="running")
        assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)
        for index in range(1, 5):
            await send(websocket, image_url=jpeg(seed=index), request_id=f"waiting {index}")
        await wait_until(lambda: waiting(server) == ["waiting 3", "waiting 4"])
        pipeline.gate.set()
        answered = [(await receive(websocket))["request_id"] for _ in range(3)]

    assert answered == ["running", "waiting 3", "waiting 4"]


def waiting(server) -> list[str | None]:
    """The request ids of the inputs waiting in the server's one fal connection."""
    [connection] = server.connections
    assert isinstance(connection, FalConnection)
    return [item.request.request_id for item in connection._waiting]


async def test_the_default_buffer_of_one_means_latest_wins(start_server, jpeg):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    async with connect(fal_url(server)) as websocket:
        await send(websocket, image_url=jpeg(seed=0), request_id="running")
        assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)
        for index in range(1, 4):
            await send(websocket, image_url=jpeg(seed=index), request_id=f"waiting {index}")
        await wait_until(lambda: waiting(server) == ["waiting 3"])
        pipeline.gate.set()
        answered = [(await receive(websocket))["request_id"] for _ in range(2)]

    assert answered == ["running", "waiting 3"]


async def test_each_buffered_input_runs_with_its_own_params(start_server, jpeg):
    server = await start_server(ShadingPipeline(cost_s=0.05))
    strengths = [0.1, 0.5, 0.9]
    async with connect(fal_url(server, query="max_buffering=3")) as websocket:
        for strength in strengths:
            await send(websocket, image_url=jpeg(seed=1), strength=strength, output_format="png")
        results = [await receive(websocket) for _ in strengths]

    shades = [
        Image.open(io.BytesIO(result["images"][0]["content"])).getpixel((0, 63))[0]
        for result in results
    ]
    assert shades == [round(strength * 255) for strength in strengths]


async def test_a_bad_input_is_an_x_fal_error_and_the_connection_goes_on(start_server, jpeg):
    server = await start_server()
    async with connect(fal_url(server)) as websocket:
        await send(websocket, image_url=jpeg(seed=1), strength=2, request_id="too strong")
        bad_params = await receive(websocket)
        await send(websocket, image_url=b"not an image", request_id="broken")
        bad_image = await receive(websocket)
        await send(websocket, prompt="text only")
        no_image = await receive(websocket)
        await websocket.send("a text frame")
        text = await receive(websocket)
        await send(websocket, image_url=jpeg(seed=2), request_id="fine")
        result = await receive(websocket)

    assert bad_params["type"] == "x-fal-error" and bad_params["error"] == "INVALID_PARAMS"
    assert bad_params["request_id"] == "too strong" and "strength" in bad_params["reason"]
    assert (bad_image["error"], bad_image["request_id"]) == ("INVALID_IMAGE", "broken")
    assert no_image["error"] == "INVALID_FIELD" and "no text-to-image" in no_image["reason"]
    assert text["error"] == "MALFORMED_MESSAGE"
    assert result["request_id"] == "fine"
    _, _, metrics = await get(http_url(server, "/metrics"))
    assert b'livegen_errors_total{code="invalid_image"} 1.0' in metrics


async def test_a_full_server_refuses_a_fal_client_at_the_handshake_or_with_1013(start_server):
    server = await start_server(max_sessions=1)
    async with connect(fal_url(server)):
        with pytest.raises(InvalidStatus) as refused:
            await connect(fal_url(server))
        # One that slips past the handshake (a sid says "resume", but fal never resumes).
        async with connect(fal_url(server, query="sid=x.y")) as second:
            error = await receive(second)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(second.recv(), WAIT_S)
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"
    assert error["error"] == "SERVER_BUSY"
    assert second.close_code == 1013


async def test_a_fal_session_is_freed_when_its_connection_closes(start_server, jpeg):
    server = await start_server()
    async with connect(fal_url(server)) as websocket:
        await send(websocket, image_url=jpeg(seed=1))
        await receive(websocket)
        assert len(server.sessions) == 1
    await wait_until(lambda: len(server.sessions) == 0)


async def test_shutdown_says_closing_and_closes_with_1001(start_server, jpeg, caplog):
    server = await start_server()
    async with connect(fal_url(server)) as websocket:
        await send(websocket, image_url=jpeg(seed=1))
        await receive(websocket)
        with caplog.at_level("INFO", logger="server.app"):
            await server.drain()
        notice = await receive(websocket)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(websocket.recv(), WAIT_S)

    assert notice == {"type": "x-fal-message", "action": "closing", "reason": "shutdown"}
    assert websocket.close_code == 1001
    # The server closed it: the log must not blame the client.
    assert "ended by the drain" in caplog.text and "by the client" not in caplog.text


async def test_a_plain_get_on_a_fal_route_asks_for_an_upgrade(start_server):
    server = await start_server()
    status, _, _ = await get(http_url(server, f"/{APP}/realtime"))
    assert status == 426


async def post_raw(server, path: str, key: str | None = None) -> tuple[int, list[str], bytes]:
    """An HTTP POST with no body (the way /tokens/ takes one), as raw HTTP/1.1: the status,
    the header lines, the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    auth = f"Authorization: Key {key}\r\n" if key is not None else ""
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    return int(status_line.split()[1]), header_lines, body


async def post(server, path: str, key: str | None = None) -> tuple[int, Any]:
    status, _, body = await post_raw(server, path, key)
    return status, json.loads(body)


async def test_post_tokens_mints_a_token_as_fals_rest_api_answers(start_server):
    server = await start_server(api_keys=KEY, token_max_ttl_s=600)
    status, token = await post(
        server, "/tokens/?allowed_apps=fast-lcm-diffusion&token_expiration=300", KEY
    )
    assert status == 200
    grant = server.auth.verifier.verify(token, time.time())
    assert grant.apps == ("fast-lcm-diffusion",) and grant.expires_at - grant.issued_at == 300
    async with connect(fal_url(server, query=f"fal_jwt_token={token}")):
        pass

    assert (await post(server, "/tokens/?allowed_apps=a", "wrong"))[0] == 401
    assert (await post(server, "/tokens/?allowed_apps=a", token))[0] == 401  # tokens mint nothing
    assert (await post(server, "/tokens?allowed_apps=a&token_expiration=601", KEY))[0] == 400
    assert (await post(server, "/tokens?allowed_apps=a&token_expiration=1.5", KEY))[0] == 400
    assert (await post(server, "/tokens/", KEY))[0] == 400  # for no app
    status, _, _ = await get(http_url(server, "/tokens/"))
    assert status == 405


async def test_token_answers_carry_one_cache_control_no_store(start_server):
    server = await start_server(api_keys=KEY)
    for key in (KEY, "wrong"):  # a token, and a 401
        _, headers, _ = await post_raw(server, "/tokens/?allowed_apps=a", key)
        cache = [line for line in headers if line.lower().startswith("cache-control:")]
        assert cache == ["Cache-Control: no-store"]


async def test_without_keys_tokens_are_a_placeholder(start_server):
    open_server = await start_server()
    assert await post(open_server, "/tokens/?allowed_apps=a") == (200, "livegen-auth-off")


async def test_fal_routes_are_served_over_tls_when_given_a_certificate(start_server, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = await start_server(tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=cert)
    async with connect(f"wss://127.0.0.1:{server.port}/{APP}/realtime", ssl=context):
        pass


@pytest.mark.parametrize(
    ("options", "mention"),
    [
        ({"auth": "maybe"}, "--auth must be auto, on or off"),
        ({"tls_cert": "cert.pem"}, "--tls-cert and --tls-key go together"),
    ],
)
def test_fal_and_tls_options_are_checked_at_start(options, mention):
    with pytest.raises(ValueError, match=mention):
        ServerConfig(**options)


def test_the_printed_configuration_never_shows_api_keys():
    described = ServerConfig(api_keys="secret-one,secret-two").describe()
    assert "secret" not in described and "(2 set; not shown)" in described
