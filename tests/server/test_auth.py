"""Auth on livegen's own /ws: an API key, or a current token for the app ``livegen``.

fal's routes use the same gate with their app ids (tests/server/test_fal.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livegen_client import LivegenClient
from server.tokens import mint_token
from tests.helpers import WAIT_S, get, http_url, ws_url

KEY = "test-api-key"


async def test_with_auth_on_a_client_needs_a_key_or_a_current_token_for_livegen(start_server, jpeg):
    server = await start_server(api_keys=f"other-key,{KEY}")
    fresh = mint_token(KEY, ["livegen"], ttl_s=60)
    any_app = mint_token(KEY, ["*"], ttl_s=60)

    client = await LivegenClient.connect(f"{ws_url(server)}?token={fresh}")
    await client.send_frame(jpeg(seed=1))
    await asyncio.wait_for(client.next_frame(), WAIT_S)
    await client.websocket.close()
    await client.reconnect()  # the same URL, token and all: the session resumes
    assert client.started.resumed
    await client.close()

    for url, headers in [
        (f"{ws_url(server)}?token={any_app}", {}),
        (ws_url(server), {"Authorization": f"Key {KEY}"}),
        (ws_url(server), {"Authorization": f"Key {fresh}"}),
    ]:
        async with connect(url, additional_headers=headers):
            pass


@pytest.mark.parametrize(
    ("query", "headers", "status", "mention"),
    [
        ("", {}, 401, "needs a token (token in the query)"),
        ("token={expired}", {}, 401, "expired"),
        ("token={for_fal}", {}, 403, "not /ws"),
        ("token={forged}", {}, 401, "signature"),
        ("", {"Authorization": "Bearer x"}, 401, "Authorization: Key"),
        ("", {"Authorization": "Key not-a-key"}, 401, "not a JWT"),
    ],
)
async def test_a_missing_expired_foreign_or_forged_credential_is_refused_at_the_handshake(
    start_server, query, headers, status, mention
):
    server = await start_server(api_keys=KEY)
    tokens = {
        "expired": mint_token(KEY, ["livegen"], ttl_s=60, now=time.time() - 61),
        "for_fal": mint_token(KEY, ["fal-ai/fast-lcm-diffusion"], ttl_s=60),
        "forged": mint_token("not-a-key", ["livegen"], ttl_s=60),
    }
    url = ws_url(server) + (f"?{query.format(**tokens)}" if query else "")

    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers)

    answer = refused.value.response
    assert answer.status_code == status and mention in answer.body.decode()


async def test_on_loopback_without_keys_ws_needs_nothing(start_server):
    server = await start_server()
    async with connect(ws_url(server)):
        pass


async def test_a_plain_get_on_ws_answers_whether_a_handshake_would_be_let_in(start_server):
    """What the pages ask, since a browser cannot see why a handshake was refused."""
    server = await start_server(api_keys=KEY)
    token = mint_token(KEY, ["livegen"], ttl_s=60)

    refused, _, reason = await get(http_url(server, "/ws"))
    let_in, _, _ = await get(http_url(server, f"/ws?token={token}"))

    assert refused == 401 and b"needs a token" in reason
    assert let_in == 426  # it takes a WebSocket, and this one would be let in
