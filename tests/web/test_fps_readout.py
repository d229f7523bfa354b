"""The fps readout says "idle" when nothing is asked and nothing arrives (a 0 there
read as a stall), and a rate while frames come."""

from __future__ import annotations

import asyncio

from tests.helpers import WAIT_S, GatedPipeline
from tests.web.conftest import LOOP
from tests.web.pages import stroke, wait_until_settled

pytestmark = LOOP

READOUT = """() => {
  const fps = document.querySelector("#fps");
  const unit = fps.nextElementSibling;
  const shown = fps.parentElement.innerText;
  return { text: fps.textContent, unitShown: unit.checkVisibility(), shown };
}"""
WAIT_FOR_IDLE = "() => document.querySelector('#fps').textContent === 'idle'"


async def test_the_sketch_readout_is_idle_at_rest_and_counts_while_drawing(
    start_server, open_page, shoot
):
    server = await start_server()
    page = await open_page(server)
    await wait_until_settled(page)  # the blank canvas's frame
    await page.wait_for_function(WAIT_FOR_IDLE)
    idle = await page.evaluate(READOUT)
    await shoot(page, "sketch-fps-idle-desktop")

    await stroke(page, [(0.1 + 0.02 * i, 0.2 + 0.03 * (i % 5)) for i in range(30)], steps=6)
    await page.wait_for_function(
        "() => /^[1-9][0-9]*$/.test(document.querySelector('#fps').textContent)"
    )
    drawing = await page.evaluate(READOUT)
    await wait_until_settled(page)
    await page.wait_for_function(WAIT_FOR_IDLE)  # a second after the last frame

    assert idle == {"text": "idle", "unitShown": False, "shown": "idle"}
    assert drawing["unitShown"] and drawing["shown"].endswith(" fps")
    assert int(drawing["text"]) > 0


async def test_the_webcam_readout_is_idle_until_start(start_server, open_page):
    server = await start_server()
    page = await open_page(server, "/webcam.html")
    await page.wait_for_function(WAIT_FOR_IDLE)

    assert (await page.evaluate(READOUT))["shown"] == "idle"


async def test_a_frame_still_being_made_never_reads_idle_or_zero(start_server, open_page):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    page = await open_page(server)
    assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)  # the blank canvas, held
    # Past the readout's one-second window (and a render after it), on the page's clock.
    held_at = await page.evaluate("performance.now()")
    await page.wait_for_function("t => performance.now() - t > 1300", arg=held_at)
    waiting = await page.evaluate(READOUT)
    pipeline.gate.set()
    await page.wait_for_function(
        "() => /^[1-9][0-9]*$/.test(document.querySelector('#fps').textContent)"
    )

    assert waiting["text"] == "–"  # busy, no rate yet: not "0", not "idle"
