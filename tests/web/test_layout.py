"""Both pages on a phone-sized screen (stacked, nothing wider than the screen, touch
drawing) and on a desktop (side by side, dark mode), with screenshots of each."""

from __future__ import annotations

from tests.conftest import TinyModels
from tests.web.conftest import LOOP, PHONE
from tests.web.pages import (
    canvas_difference,
    canvas_hash,
    touch_stroke,
    wait_for_new_output,
    wait_until_settled,
)

PHONE_OPTIONS = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"

pytestmark = LOOP


async def box(page, selector):
    found = await page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not laid out"
    return found


async def test_the_sketch_page_stacks_on_a_phone_and_draws_with_a_finger(
    start_server, open_page, shoot
):
    server = await start_server()
    page = await open_page(server, **PHONE_OPTIONS)
    await wait_until_settled(page)
    cdp = await page.context.new_cdp_session(page)
    before = await canvas_hash(page, "#output")

    await touch_stroke(page, cdp, [(0.2 + 0.03 * i, 0.3 + 0.02 * i * (i % 3)) for i in range(20)])
    await wait_for_new_output(page, before)
    await wait_until_settled(page)
    sketch, output, prompt = [
        await box(page, s) for s in (".panel-sketch", ".panel-output", ".panel-prompt")
    ]
    canvas = await box(page, "#sketch")
    await shoot(page, "sketch-phone", full_page=True)

    assert await page.evaluate(NO_SIDEWAYS_SCROLL)
    assert sketch["y"] + sketch["height"] <= output["y"] <= prompt["y"]
    assert canvas["width"] >= 0.85 * PHONE["width"]
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= PHONE["width"]
    assert await canvas_difference(page, "#sketch", "#output") < 3.0  # the finger drew
    assert await page.evaluate("window.scrollY") == 0  # drawing did not scroll the page


async def test_the_prompt_page_on_a_phone_and_a_desktop(
    start_server, open_page, shoot, tiny_models: TinyModels
):
    server = await start_server(pipeline="sd-turbo", model=str(tiny_models.sd_turbo))
    for name, options in (
        ("phone-light", PHONE_OPTIONS),
        ("desktop-dark", {"color_scheme": "dark"}),
    ):
        page = await open_page(server, "/prompt.html", **options)
        await page.locator("#prompt").fill("a lighthouse at dawn, oil painting")
        await page.locator(".output-stage canvas:not(.empty)").wait_for()
        await wait_until_settled(page)
        prompt, output = await box(page, ".panel-prompt"), await box(page, ".panel-output")
        await shoot(page, f"prompt-{name}", full_page=name.startswith("phone"))

        assert await page.evaluate(NO_SIDEWAYS_SCROLL)
        if name.startswith("phone"):
            assert prompt["y"] + prompt["height"] <= output["y"]  # stacked
        else:
            assert prompt["x"] + prompt["width"] <= output["x"]  # side by side


async def test_the_sketch_page_fits_a_desktop_window_side_by_side(start_server, open_page, shoot):
    server = await start_server()
    page = await open_page(server, color_scheme="dark")
    sketch, output, prompt = [
        await box(page, s) for s in (".panel-sketch", ".panel-output", ".panel-prompt")
    ]
    viewport = page.viewport_size
    await shoot(page, "sketch-empty-desktop-dark")

    assert sketch["x"] + sketch["width"] <= output["x"]
    assert abs(sketch["y"] - output["y"]) < 1
    assert prompt["y"] + prompt["height"] <= viewport["height"]  # no scrolling to reach it
