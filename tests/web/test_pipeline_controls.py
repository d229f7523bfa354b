"""The pages follow what the server's pipeline uses (``session.started``): controls of
params it ignores are switched off and say so, and the prompt page on a pipeline
that needs an input image says that at once, in a block that fits a phone."""

from __future__ import annotations

from tests.helpers import ModelLikePassthrough
from tests.web.conftest import LOOP, PHONE
from tests.web.pages import stroke, wait_for_paint
from tests.web.test_layout import NO_SIDEWAYS_SCROLL, PHONE_OPTIONS, box

pytestmark = LOOP

# What each control of a page shows: switched off (class), its fields disabled, its tag.
CONTROLS = """() => [...document.querySelectorAll("[data-param]")].map((control) => ({
  param: control.dataset.param,
  ignored: control.classList.contains("ignored"),
  disabled: [...control.querySelectorAll("input, textarea, select, button")].every(
    (field) => field.disabled,
  ),
  tagged: control.querySelector(".ignored-tag:not([hidden])") !== null,
  labelled: control.querySelector(".field-label") !== null,
}))"""


async def test_the_prompt_page_on_passthrough_says_it_needs_an_image_before_any_typing(
    start_server, open_page, shoot
):
    server = await start_server()  # passthrough: no text to image
    for name, options in (
        ("phone-light", PHONE_OPTIONS),
        ("desktop-dark", {"color_scheme": "dark"}),
    ):
        page = await open_page(server, "/prompt.html", **options)
        message = page.locator(".needs-image")
        await message.wait_for()
        block, command = await box(page, ".needs-image"), await box(page, ".needs-image .command")
        controls = await page.evaluate(CONTROLS)
        sent = await page.evaluate("window.livegen.client.stats.sent")
        await shoot(page, f"prompt-passthrough-{name}", full_page=name.startswith("phone"))

        text = await page.locator("#placeholder").inner_text()
        assert "needs an input image" in text and "appears as you write" not in text
        assert sent == 0  # nothing asked that could only be refused
        assert all(c["ignored"] and c["disabled"] for c in controls), controls
        assert await page.evaluate(NO_SIDEWAYS_SCROLL)
        if name.startswith("phone"):
            # The whole block on screen, its long command scrolling inside it.
            assert block["x"] >= 0 and block["x"] + block["width"] <= PHONE["width"]
            assert command["x"] >= 0 and command["x"] + command["width"] <= PHONE["width"]


async def test_sketch_and_webcam_controls_passthrough_ignores_are_switched_off(
    start_server, open_page, shoot
):
    server = await start_server()
    sketch = await open_page(server, "/")
    sketch_controls = await sketch.evaluate(CONTROLS)
    painted = await sketch.evaluate("window.__probe.paints.length")
    await stroke(sketch, [(0.2, 0.2), (0.7, 0.6)])  # drawing itself still works
    await wait_for_paint(sketch, painted)
    await shoot(sketch, "sketch-passthrough-controls-desktop")
    webcam = await open_page(server, "/webcam.html", color_scheme="dark")
    webcam_controls = await webcam.evaluate(CONTROLS)
    idle_message = await webcam.locator("#message-detail").inner_text()
    await shoot(webcam, "webcam-passthrough-controls-desktop-dark")

    assert {"prompt", "strength", "steps", "seed"} <= {c["param"] for c in sketch_controls}
    assert {"prompt", "strength"} <= {c["param"] for c in webcam_controls}
    for control in sketch_controls + webcam_controls:
        assert control["ignored"] and control["disabled"], control
        assert control["tagged"] == control["labelled"], control  # the chips have no label
    assert "sends your camera back as it is" in idle_message  # no promise of a style
    assert await sketch.locator("[data-param=strength]").get_attribute("title") == (
        "passthrough does not use this setting"
    )


async def test_controls_a_pipeline_uses_stay_live(start_server, open_page):
    server = await start_server(ModelLikePassthrough())
    page = await open_page(server, "/")
    controls = await page.evaluate(CONTROLS)
    await page.locator("#prompt").fill("a fox")
    await page.locator("#reroll").click()

    assert {"prompt", "strength", "steps", "seed"} <= {c["param"] for c in controls}
    assert not any(c["ignored"] or c["disabled"] or c["tagged"] for c in controls), controls
    assert await page.evaluate("window.livegen.client.params.prompt") == "a fox"
