"""The connection as the page lives it: a dropped socket resumes the same session, a
restarted server gets a new session and the sketch again, a full server shows busy."""

from __future__ import annotations

import asyncio
import re
import time

from livegen_client import LivegenClient
from server.app import LivegenServer
from server.config import ServerConfig
from server.tokens import mint_token
from tests.helpers import WAIT_S, ws_url
from tests.web.conftest import LOOP, wait_for_state
from tests.web.pages import (
    canvas_difference,
    canvas_hash,
    stroke,
    wait_for_new_output,
    wait_until_settled,
)
from tests.web.test_sketch import CIRCLE, ZIGZAG

pytestmark = LOOP


async def test_the_page_resumes_after_the_connection_drops(start_server, open_page):
    server = await start_server()
    page = await open_page(server)
    await stroke(page, ZIGZAG)
    await wait_until_settled(page)
    session_id = await page.evaluate("window.livegen.client.sessionId")
    await page.evaluate(
        """() => {
          window.__states = [];
          const { client } = window.livegen;
          client.addEventListener("state", (e) => window.__states.push(e.detail.state));
        }"""
    )

    for connection in list(server.connections):
        connection.websocket.transport.abort()  # the network drops: no close frame
    await page.wait_for_function("window.__states.includes('reconnecting')")
    await wait_for_state(page, "open")
    session = await page.evaluate("window.livegen.client.session")
    before = await canvas_hash(page, "#output")
    await stroke(page, CIRCLE)
    await wait_for_new_output(page, before)
    await wait_until_settled(page)

    assert session["session_id"] == session_id and session["resumed"] is True
    assert len(server.connections) == 1
    # The resume named its session in the URL, which a proxy in front routes by.
    assert next(iter(server.connections)).sid == session_id
    assert await canvas_difference(page, "#sketch", "#output") < 3.0


async def test_a_restarted_server_gets_the_sketch_again_in_a_new_session(
    start_server, open_page, shoot
):
    server = await start_server()
    page = await open_page(server)
    # Between the old server and the new one, connection attempts fail, and so do the
    # client's plain GETs that ask whether a refused handshake meant "busy": Chromium
    # says so.
    page.problems.expected.append(
        re.compile(r"WebSocket connection to .* failed|ERR_CONNECTION_REFUSED")
    )
    await stroke(page, ZIGZAG)
    await wait_until_settled(page)
    old_session = await page.evaluate("window.livegen.client.sessionId")
    port = server.port

    await server.drain()
    await page.wait_for_function(
        "document.querySelector('#status').dataset.state === 'reconnecting'"
    )
    status_while_down = await page.locator("#status .status-text").inner_text()
    await shoot(page, "sketch-reconnecting-desktop")
    restarted = LivegenServer(ServerConfig(host="127.0.0.1", port=port, codec_threads=2))
    await restarted.start()
    try:
        await wait_for_state(page, "open")
        await page.wait_for_function("window.livegen.client.stats.received > 0")
        await wait_until_settled(page)
        session = await page.evaluate("window.livegen.client.session")
        difference = await canvas_difference(page, "#sketch", "#output")
    finally:
        await asyncio.wait_for(restarted.drain(), WAIT_S)

    assert status_while_down in {"Server restarting…", "Reconnecting…", "Waiting for server…"}
    assert session["session_id"] != old_session and session["resumed"] is False
    assert difference < 3.0  # the page sent its sketch to the new session


async def test_a_full_server_shows_busy_until_a_place_frees(start_server, open_page, shoot):
    server = await start_server(max_sessions=1)
    holder = await LivegenClient.connect(ws_url(server))
    try:
        page = await open_page(server, state="busy")
        # The server refuses the handshake with 503 and Retry-After, and the client's
        # plain GET of the same URL gets the same: Chromium logs both.
        page.problems.expected.append(re.compile(r"response code: 503|status of 503"))
        busy_text = await page.locator("#status .status-text").inner_text()
        retry_in_ms = await page.evaluate(
            """() => new Promise((resolve) => window.livegen.client.addEventListener(
                 "state", (e) => e.detail.retryInMs !== null && resolve(e.detail.retryInMs)))"""
        )
        await shoot(page, "sketch-busy-desktop")
    finally:
        await holder.close()
    await wait_for_state(page, "open")
    live_text = await page.locator("#status .status-text").inner_text()

    assert busy_text == "Server busy · retrying"
    assert retry_in_ms == 1000  # the server's Retry-After, not the client's own backoff
    assert live_text == "Live"


async def test_a_page_opened_with_a_token_connects_where_auth_is_on(start_server, open_page):
    server = await start_server(api_keys="test-api-key")
    token = mint_token("test-api-key", ["livegen"], ttl_s=600)
    page = await open_page(server, f"/?token={token}")  # returns once the session is live
    await stroke(page, ZIGZAG)
    await wait_until_settled(page)

    assert len(server.attached) == 1
    assert await canvas_difference(page, "#sketch", "#output") < 3.0


async def test_a_page_refused_for_want_of_a_token_says_so(start_server, open_page, shoot):
    server = await start_server(api_keys="test-api-key")
    expired = mint_token("test-api-key", ["livegen"], ttl_s=60, now=time.time() - 61)
    pages = {
        "Needs a token": await open_page(server, state="reconnecting"),
        "Token refused": await open_page(server, f"/?token={expired}", state="reconnecting"),
    }
    for shown, page in pages.items():
        # Each refused handshake, and the GET that asks why, is a console error.
        page.problems.expected.append(re.compile(r"WebSocket connection to .* failed"))
        page.problems.expected.append(re.compile(r"status of 401"))
        status = page.locator("#status .status-text")
        await page.wait_for_function(
            "text => document.querySelector('#status .status-text').textContent === text", arg=shown
        )
        title = await page.locator("#status").get_attribute("title")
        assert title is not None and "?token=" in title
        assert ("expired" if shown == "Token refused" else "This server needs a token") in title
        assert await status.inner_text() == shown
        placeholder = await page.locator("#placeholder p").inner_text()
        assert placeholder == title  # the output says it too, where nothing can appear
    await shoot(pages["Needs a token"], "sketch-needs-token-desktop")
    assert not server.attached
