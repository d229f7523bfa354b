"""WHEP in the browser: the watch page plays a session, and the webcam page shows
where to watch it.

A session published over WHIP by an aiortc peer (or the webcam page's own call)
is watched by Chromium through ``watch.html?session=...``. The ShadingPipeline
greys the bottom half at ``strength``, so the page's pixels show the model ran.
"""

from __future__ import annotations

import re

from tests.helpers import ShadingPipeline, wait_until
from tests.rtc import MarkedTrack
from tests.web.conftest import LOOP
from tests.web.test_webcam import SHADE_TOLERANCE, VIDEO_BANDS
from tests.whip import Publisher

pytestmark = LOOP


async def wait_for_video(page, strength: float) -> dict[str, float]:
    await page.locator("#output:not(.empty)").wait_for()
    await page.wait_for_function(
        f"([grey, tolerance]) => Math.abs(({VIDEO_BANDS})().bottom - grey) < tolerance",
        arg=[strength * 255, SHADE_TOLERANCE],
        polling=50,
    )
    return dict(await page.evaluate(VIDEO_BANDS))


async def test_the_watch_page_plays_a_whip_published_session(start_server, open_page, shoot):
    server = await start_server(ShadingPipeline())
    base = f"http://127.0.0.1:{server.port}"
    publisher = await Publisher.start(
        base, query="?strength=0.8", sendrecv=False, track=MarkedTrack(fps=15)
    )
    page = await open_page(server, f"/watch.html?session={publisher.session_id}", state=None)
    bands = await wait_for_video(page, 0.8)
    status = await page.locator("#status .status-text").text_content()
    await shoot(page, "watch-desktop")
    await page.close()  # pagehide: the viewer leaves (DELETE)
    await wait_until(lambda: len(server.media) == 1)  # the publisher stays
    await publisher.delete()

    assert abs(bands["bottom"] - 0.8 * 255) < SHADE_TOLERANCE
    assert status == "Watching"


async def test_the_watch_page_says_when_there_is_no_such_session(start_server, open_page, shoot):
    server = await start_server(ShadingPipeline())
    page = await open_page(server, "/watch.html?session=nobody", state=None)
    page.problems.expected.append(re.compile(r"status of 404 .*/whep/nobody"))
    await page.locator("#watch-form").wait_for()
    title = await page.locator("#message-title").text_content()
    detail = await page.locator("#message-detail").text_content()
    await shoot(page, "watch-no-session")

    assert title == "No such session"
    assert "no session 'nobody'" in detail


async def test_the_webcam_page_shows_its_whep_address_and_the_watch_page_plays_it(
    start_server, open_page, shoot
):
    server = await start_server(ShadingPipeline())
    page = await open_page(server, "/webcam.html")
    await page.locator("#strength").evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('input')); }",
        "0.3",
    )
    await page.locator("#call").click()
    await page.locator("#whep-share:not([hidden])").wait_for()
    [connection] = server.connections
    address = await page.locator("#whep-url").input_value()
    watch_href = await page.locator("#watch-link").get_attribute("href")
    await page.locator("#output:not(.empty)").wait_for()
    await shoot(page, "webcam-whep-address")
    viewer = await open_page(server, f"/{watch_href}", state=None)
    bands = await wait_for_video(viewer, 0.3)
    await shoot(viewer, "watch-webcam-session")

    assert address == f"http://127.0.0.1:{server.port}/whep/{connection.session.id}"
    assert watch_href == f"watch.html?session={connection.session.id}"
    assert abs(bands["bottom"] - 0.3 * 255) < SHADE_TOLERANCE
