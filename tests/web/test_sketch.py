"""The sketch page in Chromium: strokes reach the output while drawing, undo and
redo, stroke-to-output latency on passthrough, and drawing while a model runs.

The sketch canvas is what passthrough sends back, so once the page is settled
its output must look like the sketch (up to JPEG error): that checks that the
frame sent last is the latest drawing, not an older one.
"""

from __future__ import annotations

import asyncio

from tests.conftest import TinyModels
from tests.helpers import WAIT_S, GatedPipeline, ModelLikePassthrough
from tests.web.conftest import LOOP, record
from tests.web.pages import (
    canvas_difference,
    canvas_hash,
    paint_count,
    stroke,
    summary,
    to_page,
    wait_for_new_output,
    wait_for_paint,
    wait_until_settled,
)

ZIGZAG = [(0.15, 0.2), (0.85, 0.3), (0.2, 0.5), (0.8, 0.75), (0.3, 0.85)]
CIRCLE = [(0.5 + 0.25 * x, 0.5 + 0.25 * y) for x, y in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 0))]
# Move a range input as a user does: its value, then an input event.
SLIDE = "(slider, value) => { slider.value = value; slider.dispatchEvent(new Event('input')); }"

pytestmark = LOOP


async def test_strokes_reach_the_output_while_drawing(start_server, open_page, shoot):
    server = await start_server()
    page = await open_page(server)
    await wait_until_settled(page)  # the blank canvas, sent when the session started
    blank = await canvas_hash(page, "#output")
    paints_before = await paint_count(page)

    await stroke(page, ZIGZAG, steps=6)
    first = await wait_for_new_output(page, blank)
    paints_during = await paint_count(page) - paints_before
    await wait_until_settled(page)
    # The last frame sent is the finished drawing: passthrough gives it back (as JPEG).
    assert await canvas_difference(page, "#sketch", "#output") < 3.0
    await stroke(page, CIRCLE)
    await wait_for_new_output(page, await canvas_hash(page, "#output"))
    await wait_until_settled(page)

    assert first != blank
    assert paints_during > 2, "the output did not follow the stroke while it was drawn"
    assert await canvas_difference(page, "#sketch", "#output") < 3.0
    assert await page.locator("#save").is_enabled()
    assert await page.locator("#status .status-text").inner_text() == "Live"
    await shoot(page, "sketch-passthrough-desktop")


async def test_undo_and_redo_with_the_keyboard_and_clear(start_server, open_page):
    server = await start_server(ModelLikePassthrough())  # the prompt field live
    page = await open_page(server)
    empty = await canvas_hash(page, "#sketch")
    await stroke(page, ZIGZAG)
    one = await canvas_hash(page, "#sketch")
    await stroke(page, CIRCLE)
    two = await canvas_hash(page, "#sketch")

    await page.keyboard.press("Control+z")
    after_undo = await canvas_hash(page, "#sketch")
    await wait_until_settled(page)
    output_after_undo = await canvas_difference(page, "#sketch", "#output")
    await page.keyboard.press("Control+Shift+z")
    after_redo = await canvas_hash(page, "#sketch")
    await page.keyboard.press("Control+z")
    await page.keyboard.press("Control+y")
    after_ctrl_y = await canvas_hash(page, "#sketch")
    await page.locator("#clear").click()
    after_clear = await canvas_hash(page, "#sketch")
    await page.keyboard.press("Control+z")
    after_undo_clear = await canvas_hash(page, "#sketch")
    # Typing in the prompt keeps the text field's own undo.
    await page.locator("#prompt").fill("a cat")
    await page.locator("#prompt").press("Control+z")

    assert len({empty, one, two}) == 3
    assert after_undo == one and output_after_undo < 3.0
    assert after_redo == two and after_ctrl_y == two
    assert after_clear == empty and after_undo_clear == two
    assert await canvas_hash(page, "#sketch") == two


async def test_each_stroke_segment_shows_in_the_output_timed_on_passthrough(
    start_server, open_page
):
    # The times are recorded for the report (the target: a stroke in the output
    # within 50 ms), not asserted: a loaded CI machine must not fail on speed.
    server = await start_server()
    page = await open_page(server)
    await page.evaluate(
        """() => {
          window.__sends = [];
          window.livegen.client.addEventListener("send", (e) => window.__sends.push(e.detail));
        }"""
    )
    x, y = await to_page(page, (0.1, 0.5))
    await page.mouse.move(x, y)
    await page.mouse.down()
    drawn, next_frame, encoded, round_trips, decoded = [], [], [], [], []
    for step in range(20):
        await wait_until_settled(page)
        paints = await paint_count(page)
        sends = await page.evaluate("window.__sends.length")
        x, y = await to_page(page, (0.1 + 0.04 * step, 0.5 + 0.1 * (step % 3)))
        await page.mouse.move(x, y)  # one pointermove: one segment of the stroke
        paint = await wait_for_paint(page, paints)
        sent = await page.evaluate("n => window.__sends[n]", sends)
        await page.wait_for_function(
            "p => window.__probe.paints[p].nextFrameAt !== null", arg=paints
        )
        paint = await page.evaluate("n => window.__probe.paints[n]", paints)
        assert paint["id"] == sent["id"]
        drawn.append(paint["drawnAt"] - paint["pointerAt"])
        next_frame.append(paint["nextFrameAt"] - paint["pointerAt"])
        encoded.append(sent["sentAt"] - paint["pointerAt"])
        round_trips.append(paint["receivedAt"] - sent["sentAt"])
        decoded.append(paint["drawnAt"] - paint["receivedAt"])
    await page.mouse.up()

    record("passthrough stroke to output drawn (ms)", summary(drawn))
    record("passthrough stroke to next frame after drawing (ms)", summary(next_frame))
    record("passthrough: pointer event to frame sent (ms)", summary(encoded))
    record("passthrough: frame sent to frame.out (ms)", summary(round_trips))
    record("passthrough: frame.out to drawn (ms)", summary(decoded))


async def test_drawing_stays_responsive_while_the_model_runs(
    start_server, open_page, shoot, tiny_models: TinyModels
):
    server = await start_server(pipeline="sd-turbo", model=str(tiny_models.sd_turbo))
    page = await open_page(server)
    # The tiny model renders at its published 512 px unless asked: smaller frames come
    # often enough on two cores for several to arrive during one stroke.
    await page.evaluate("window.livegen.client.updateParams({width: 128, height: 128})")
    await page.locator("#prompt").fill("a lighthouse at dawn, oil painting")
    await wait_until_settled(page)
    await page.evaluate(
        """() => {
          const probe = window.__probe;
          probe.inputDelays = { pointermove: [], pointerrawupdate: [] };
          probe.longTasks = [];
        }"""
    )
    paints_before = await paint_count(page)

    # A long stroke, drawn while frames are generated for it.
    path = [(0.1 + 0.8 * (i % 2), 0.1 + 0.08 * i) for i in range(11)]
    await stroke(page, path, steps=5)
    probe = await page.evaluate("window.__probe")
    frames_while_drawing = await paint_count(page) - paints_before
    await wait_until_settled(page)
    before_edit = await canvas_hash(page, "#output")

    await page.locator("#prompt").press_sequentially(" at night", delay=20)
    after_edit = await wait_for_new_output(page, before_edit)
    await wait_until_settled(page)
    await page.locator("#steps").evaluate(SLIDE, "2")
    await wait_for_new_output(page, await canvas_hash(page, "#output"))
    await wait_until_settled(page)
    latencies = await page.evaluate("window.livegen.readout.latencies")
    state = await page.evaluate(
        "() => ({ params: window.livegen.client.params, stats: window.livegen.client.stats })"
    )

    for kind, delays in probe["inputDelays"].items():
        record(f"tiny sd-turbo {kind} delay while generating (ms)", summary(delays))
    record(
        "tiny sd-turbo long tasks while drawing",
        {"count": len(probe["longTasks"]), "max_ms": round(max(probe["longTasks"], default=0), 1)},
    )
    record("tiny sd-turbo frames drawn during the stroke", frames_while_drawing)
    record("tiny sd-turbo frame sent to frame.out (ms)", summary(latencies))
    assert frames_while_drawing >= 2
    assert after_edit != before_edit
    assert state["params"]["prompt"] == "a lighthouse at dawn, oil painting at night"
    assert state["params"]["steps"] == 2
    assert await page.locator("#pipeline").inner_text() == "sd-turbo"
    await shoot(page, "sketch-sd-turbo-desktop")


async def test_newer_strokes_replace_the_waiting_frame_while_one_is_in_flight(
    start_server, open_page
):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    page = await open_page(server)
    assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)  # the blank canvas, held

    for path in (ZIGZAG, CIRCLE, ZIGZAG[::-1]):
        await stroke(page, path)
    held = await page.evaluate("window.livegen.client.stats")
    pipeline.gate.set()
    await page.wait_for_function("window.livegen.client.stats.received >= 2")
    await wait_until_settled(page)
    done = await page.evaluate("window.livegen.client.stats")

    assert held["sent"] == 1 and held["replaced"] > 10  # one in flight, one waiting
    assert done["sent"] == 2 and done["received"] == 2  # the waiting one, never a queue
    assert await canvas_difference(page, "#sketch", "#output") < 3.0  # and it is the latest
