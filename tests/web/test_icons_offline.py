"""Icons drawn while the server is unreachable still show: the pages keep the icon
sprite in the page once loaded (the webcam Stop button used to lose its icon)."""

from __future__ import annotations

import re

from tests.helpers import ModelLikePassthrough
from tests.web.conftest import LOOP
from tests.web.pages import wait_until_settled

pytestmark = LOOP

# The size an icon's <use> draws at: 0 x 0 when its symbol could not be had.
DRAWN_SIZE = """use => { const box = use.getBBox(); return [box.width, box.height]; }"""


async def test_icons_made_after_the_server_went_away_are_drawn(start_server, open_page, shoot):
    server = await start_server(ModelLikePassthrough())  # the seed lock live
    webcam = await open_page(server, "/webcam.html")
    sketch = await open_page(server, "/")
    for page in (webcam, sketch):
        page.problems.expected.append(
            re.compile(r"WebSocket connection to .* failed|ERR_CONNECTION_REFUSED")
        )
        await page.locator("svg.icon-sprite symbol#icon-stop").wait_for(state="attached")
    await wait_until_settled(sketch)

    await server.drain()  # nothing answers any more: no page, no icon, no WebSocket
    for page in (webcam, sketch):
        await page.wait_for_function(
            "document.querySelector('#status').dataset.state === 'reconnecting'"
        )
    await webcam.locator("#call").click()  # Start: the button turns into Stop
    await webcam.locator("#call[data-action=stop]").wait_for()
    await sketch.locator("#seed-lock").click()  # locked -> unlocked: a new icon
    stop_icon = await webcam.locator("#call use").evaluate(DRAWN_SIZE)
    message_icon = await webcam.locator("#call-message > svg use").evaluate(DRAWN_SIZE)
    unlock_icon = await sketch.locator("#seed-lock use").evaluate(DRAWN_SIZE)
    await shoot(webcam, "webcam-stop-icon-offline-desktop")

    assert await webcam.locator("#call use").get_attribute("href") == "#icon-stop"
    assert await sketch.locator("#seed-lock use").get_attribute("href") == "#icon-unlock"
    for size in (stop_icon, message_icon, unlock_icon):
        assert size[0] > 0 and size[1] > 0, size
