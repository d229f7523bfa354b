"""On phones and tablets the pages stack, and the output sits below the sketch or the
prompt: a small copy of it (like the webcam page's self-view) then stays in view in
a corner of what is in use, touches pass through it, and it goes once the real
output is on screen. Desktops never show it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from pipelines.base import FrameRequest
from tests.helpers import ModelLikePassthrough
from tests.web.conftest import LOOP, PHONE
from tests.web.pages import (
    canvas_difference,
    paint_count,
    touch_stroke,
    wait_for_paint,
    wait_until_settled,
)
from tests.web.test_layout import PHONE_OPTIONS, box

pytestmark = LOOP

TABLET = {"width": 768, "height": 1024}
TABLET_OPTIONS = {"viewport": TABLET, "is_mobile": True, "has_touch": True}
INSET = ".output-inset"


class PromptColour(ModelLikePassthrough):
    """Draws from text alone: a flat colour chosen by the prompt, at the size asked."""

    text_to_image = True

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        outputs = []
        for request in requests:
            colour = list(hashlib.sha256(request.params.prompt.encode()).digest()[:3])
            size = (request.params.height, request.params.width, 3)
            outputs.append(np.full(size, colour, np.uint8))
        return outputs


def inside(inner: dict, outer: dict) -> bool:
    return (
        outer["x"] <= inner["x"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        and outer["y"] <= inner["y"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
    )


async def test_the_sketch_output_stays_in_view_while_drawing_on_a_tablet_and_a_phone(
    start_server, open_page, shoot
):
    server = await start_server()
    for name, options, size in (
        ("tablet", TABLET_OPTIONS, TABLET),
        ("phone", PHONE_OPTIONS, PHONE),
    ):
        page = await open_page(server, **options)
        await wait_until_settled(page)
        cdp = await page.context.new_cdp_session(page)
        painted = await paint_count(page)
        await touch_stroke(page, cdp, [(0.15 + 0.04 * i, 0.2 + 0.03 * i) for i in range(15)])
        await wait_for_paint(page, painted)
        await wait_until_settled(page)
        await page.locator(INSET).wait_for()
        inset, stage = await box(page, INSET), await box(page, ".panel-sketch .stage")
        difference = await canvas_difference(page, "#output", INSET)
        centre = (inset["x"] + inset["width"] / 2, inset["y"] + inset["height"] / 2)
        under = await page.evaluate("([x, y]) => document.elementFromPoint(x, y).id", centre)
        await shoot(page, f"sketch-inset-{name}")
        await page.locator("#output").scroll_into_view_if_needed()
        await page.locator(INSET).wait_for(state="hidden")

        viewport = {"x": 0, "y": 0, **size}
        assert inside(inset, viewport) and inside(inset, stage), (inset, stage)
        assert inset["width"] <= 0.3 * stage["width"]  # a corner, not a cover
        assert difference < 3.0  # the picture the output shows
        assert under == "sketch"  # a touch there draws


async def test_the_inset_fades_while_a_stroke_passes_under_it(start_server, open_page):
    server = await start_server()
    page = await open_page(server, **TABLET_OPTIONS)
    await wait_until_settled(page)
    await page.locator(INSET).wait_for()
    inset = await box(page, INSET)
    x, y = inset["x"] + inset["width"] / 2, inset["y"] + inset["height"] / 2

    await page.mouse.move(x - inset["width"], y)
    await page.mouse.down()
    await page.mouse.move(x, y, steps=4)
    faded_under = await page.locator(INSET).evaluate("inset => inset.classList.contains('faded')")
    await page.mouse.up()
    faded_after = await page.locator(INSET).evaluate("inset => inset.classList.contains('faded')")

    assert faded_under and not faded_after


async def test_the_prompt_output_stays_in_view_beside_the_text_on_a_tablet(
    start_server, open_page, shoot
):
    server = await start_server(PromptColour())
    page = await open_page(server, "/prompt.html", **TABLET_OPTIONS)
    painted = await paint_count(page)
    await page.locator("#prompt").press_sequentially("a red house", delay=10)
    await wait_for_paint(page, painted)
    await wait_until_settled(page)
    await page.locator(INSET).wait_for()
    inset, field = await box(page, INSET), await box(page, "#prompt")
    padding = await page.locator("#prompt").evaluate(
        "field => parseFloat(getComputedStyle(field).paddingRight)"
    )
    difference = await canvas_difference(page, "#output", INSET)
    await shoot(page, "prompt-inset-tablet")

    assert inside(inset, field)
    assert padding >= inset["width"]  # the text wraps beside it, never under it
    assert difference < 3.0


async def test_a_desktop_shows_no_inset(start_server, open_page):
    server = await start_server()
    page = await open_page(server)
    await wait_until_settled(page)

    assert await page.evaluate("window.livegen.output.latest !== null")
    assert await page.locator(INSET).is_hidden()
