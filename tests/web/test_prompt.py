"""The live prompt page in Chromium: the picture redraws as the prompt is typed, with
no submit button; seeds re-roll. (A pipeline that needs an image: test_pipeline_controls.)"""

from __future__ import annotations

from tests.conftest import TinyModels
from tests.web.conftest import LOOP, record
from tests.web.pages import canvas_hash, summary, wait_for_new_output, wait_until_settled

pytestmark = LOOP


async def test_the_picture_redraws_as_the_prompt_is_typed(
    start_server, open_page, shoot, tiny_models: TinyModels
):
    server = await start_server(pipeline="sd-turbo", model=str(tiny_models.sd_turbo))
    page = await open_page(server, "/prompt.html")
    blank = await canvas_hash(page, "#output")
    prompt = page.locator("#prompt")

    await prompt.press_sequentially("a red house", delay=15)
    first = await wait_for_new_output(page, blank)
    await wait_until_settled(page)
    first = await canvas_hash(page, "#output")
    await prompt.press_sequentially(" by the sea", delay=15)
    second = await wait_for_new_output(page, first)
    await wait_until_settled(page)
    second = await canvas_hash(page, "#output")
    seed_before = await page.locator("#seed").input_value()
    await page.locator("#reroll").click()
    rerolled = await wait_for_new_output(page, second)
    await wait_until_settled(page)
    await page.locator("#suggestions .chip").first.click()
    await wait_until_settled(page)
    locked_seed = await page.locator("#seed").input_value()
    await page.locator("#seed-lock").click()  # unlocked: a new seed for every edit
    await prompt.press("End")
    await prompt.press_sequentially(", at night")
    await wait_until_settled(page)
    unlocked_seed = await page.locator("#seed").input_value()
    latencies = await page.evaluate("window.livegen.readout.latencies")
    state = await page.evaluate(
        "() => ({ params: window.livegen.client.params, stats: window.livegen.client.stats })"
    )

    record("tiny sd-turbo prompt edit: request sent to frame.out (ms)", summary(latencies))
    assert len({blank, first, second, rerolled}) == 4
    assert await page.locator("#seed").input_value() != seed_before
    assert state["params"]["prompt"] == "a lighthouse at dawn, oil painting, at night"
    assert await page.locator("#seed-lock").get_attribute("aria-pressed") == "false"
    assert unlocked_seed != locked_seed and int(unlocked_seed) == state["params"]["seed"]
    assert await page.locator("button[type=submit], input[type=submit]").count() == 0
    await shoot(page, "prompt-sd-turbo-desktop")
