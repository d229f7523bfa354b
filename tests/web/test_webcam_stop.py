"""Stopping the webcam keeps the last restyled frame on screen (and savable), and
the camera's uplink asks the encoder to keep its resolution under load."""

from __future__ import annotations

from tests.web.conftest import LOOP
from tests.web.test_layout import PHONE_OPTIONS, box
from tests.web.test_webcam import wait_for_frames

pytestmark = LOOP

# Spread of the grey levels of a canvas (0 for a blank one), read through a 64 px copy.
SPREAD = """canvas => {
  const copy = document.createElement("canvas");
  copy.width = copy.height = 64;
  const context = copy.getContext("2d", { willReadFrequently: true });
  context.drawImage(canvas, 0, 0, 64, 64);
  const data = context.getImageData(0, 0, 64, 64).data;
  let low = 255, high = 0;
  for (let i = 0; i < data.length; i += 4) {
    const grey = (data[i] + data[i + 1] + data[i + 2]) / 3;
    low = Math.min(low, grey);
    high = Math.max(high, grey);
  }
  return high - low;
}"""

SENDER = """() => {
  const [sender] = window.livegen.call._pc.getSenders();
  return {
    degradation: sender.getParameters().degradationPreference,
    hint: sender.track.contentHint,
  };
}"""


async def test_stop_keeps_the_last_frame_and_start_goes_live_again(start_server, open_page, shoot):
    server = await start_server()
    for name, options in (("desktop-dark", {"color_scheme": "dark"}), ("phone", PHONE_OPTIONS)):
        page = await open_page(server, "/webcam.html", **options)
        await page.locator("#call").click()
        await page.locator("#output:not(.empty)").wait_for()
        await wait_for_frames(page, 5)
        sender = await page.evaluate(SENDER)

        await page.locator("#call").click()  # Stop
        await page.locator("#call[data-action=start]").wait_for()
        still = page.locator("#output-still")
        await still.wait_for()
        await page.wait_for_function("document.querySelector('#fps').textContent === 'idle'")
        kept = await box(page, "#output-still")
        spread = await still.evaluate(SPREAD)
        await shoot(page, f"webcam-stopped-{name}", full_page=name == "phone")
        state = await page.evaluate(
            """() => ({
              call: window.livegen.call,
              placeholder: document.querySelector('#placeholder').hidden,
              save: document.querySelector('#save').disabled,
              mirrored: document.querySelector('#output-still').classList.contains('mirrored'),
            })"""
        )
        await page.locator("#call").click()  # Start again: live video replaces the still
        await still.wait_for(state="hidden")
        await page.locator("#output:not(.empty)").wait_for()

        assert sender == {"degradation": "maintain-resolution", "hint": "detail"}
        assert kept["width"] > 100 and kept["height"] > 100
        assert spread > 40  # the fake camera's picture, not a blank stage
        assert state == {
            "call": None,
            "placeholder": True,  # nothing covers the kept frame
            "save": False,  # it can be saved
            "mirrored": True,  # shown as the video was
        }
