"""Conditioning in the pages, in Chromium against a tiny model: structure control and blends.

The sketch page's switch shows only when the server has a ControlNet or
T2I-Adapter; turned on, the session runs with it (strength 1: the lines alone
shape the picture), its scale slider and invert box reach the params, and the
output changes; off, the session runs without it. A server without controls
shows no switch. The prompt page's second prompt and slider send a slerp blend
of the two prompts, and the picture moves with the slider.
"""

from __future__ import annotations

from tests.conftest import TinyControls, TinyModels
from tests.web.conftest import LOOP
from tests.web.pages import canvas_hash, stroke, wait_for_new_output, wait_until_settled

pytestmark = LOOP
SLIDE = "(slider, value) => { slider.value = value; slider.dispatchEvent(new Event('input')); }"
PARAMS = "() => window.livegen.client.params"


async def test_the_structure_switch_drives_the_controlnet(
    start_server, open_page, shoot, tiny_models: TinyModels, tiny_controls: TinyControls
):
    server = await start_server(
        pipeline="sd-turbo",
        model=str(tiny_models.sd_turbo),
        controlnet=f"scribble={tiny_controls.controlnet}",
        t2i_adapter=f"sketch={tiny_controls.t2i_adapter}",
        ready_s=60.0,
    )
    page = await open_page(server)
    await page.evaluate("window.livegen.client.updateParams({width: 128, height: 128})")
    await stroke(page, [(0.2, 0.2), (0.8, 0.3), (0.5, 0.8)], steps=4)
    await wait_until_settled(page)

    assert await page.locator("#structure").is_visible()
    assert await page.locator("#structure-name option").all_inner_texts() == ["scribble", "sketch"]
    on = await page.evaluate(PARAMS)  # switched on by default: the lines shape the picture
    assert (on["controlnet"], on["strength"], on["invert"]) == ("scribble", 1, True)
    assert await page.locator("#strength-value").inner_text() == "1.00"

    await page.locator("#control-scale").evaluate(SLIDE, "0.5")
    await wait_until_settled(page)
    await page.locator("#structure-name").select_option("sketch")
    await wait_until_settled(page)
    picked = await page.evaluate(PARAMS)
    with_adapter = await canvas_hash(page, "#output")
    await shoot(page, "sketch-structure-on-desktop")

    await page.locator("#structure-on").uncheck()
    await wait_for_new_output(page, with_adapter)
    await wait_until_settled(page)
    off = await page.evaluate(PARAMS)

    assert (picked["controlnet"], picked["control_scale"]) == ("sketch", 0.5)
    assert off["controlnet"] == ""
    assert await page.locator("#control-scale").is_disabled()
    await shoot(page, "sketch-structure-off-desktop")


async def test_a_server_without_controls_shows_no_switch(start_server, open_page):
    page = await open_page(await start_server())
    await wait_until_settled(page)

    assert not await page.locator("#structure").is_visible()
    assert "controlnet" not in {k for k, v in (await page.evaluate(PARAMS)).items() if v}


async def test_the_prompt_pages_second_prompt_and_slider_blend_the_prompts(
    start_server, open_page, shoot, tiny_models: TinyModels
):
    server = await start_server(pipeline="sd-turbo", model=str(tiny_models.sd_turbo), ready_s=60.0)
    page = await open_page(server, path="/prompt.html")
    await page.evaluate("window.livegen.client.updateParams({width: 128, height: 128})")
    await page.locator("#prompt").fill("a lighthouse at dawn")
    await wait_until_settled(page)
    alone = await canvas_hash(page, "#output")

    await page.locator("#prompt-2").fill("a forest in the snow")
    halfway = await wait_for_new_output(page, alone)
    await wait_until_settled(page)
    await page.locator("#blend").evaluate(SLIDE, "0.8")
    await wait_for_new_output(page, await canvas_hash(page, "#output"))
    await wait_until_settled(page)
    blended = await page.evaluate(PARAMS)
    await shoot(page, "prompt-blend-desktop")

    assert blended["prompt"] == [
        ["a lighthouse at dawn", 0.19999999999999996],
        ["a forest in the snow", 0.8],
    ]
    assert blended["prompt_blend"] == "slerp"
    assert halfway != alone
    assert await page.locator("#blend-value").inner_text() == "0.80"
