"""What the browser tests do on a page: draw strokes, read canvases, wait for frames."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from playwright.async_api import CDPSession, Page

from tests.web.conftest import WAIT_MS

Point = tuple[float, float]  # a position on the sketch canvas, 0 to 1 on each side

# A hash of a canvas's pixels, read through a copy so the page's own canvas
# never becomes a "read frequently" one.
CANVAS_HASH = """selector => {
  const source = document.querySelector(selector);
  const copy = document.createElement("canvas");
  copy.width = source.width;
  copy.height = source.height;
  const context = copy.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  let hash = 2166136261;
  for (let i = 0; i < data.length; i += 4) {
    hash = Math.imul(hash ^ (data[i] + 3 * data[i + 1] + 7 * data[i + 2]), 16777619) >>> 0;
  }
  return hash;
}"""

# Mean absolute difference (0 to 255) between two canvases, both scaled to 128 px.
CANVAS_DIFFERENCE = """([first, second]) => {
  const read = (selector) => {
    const copy = document.createElement("canvas");
    copy.width = copy.height = 128;
    const context = copy.getContext("2d", { willReadFrequently: true });
    context.drawImage(document.querySelector(selector), 0, 0, 128, 128);
    return context.getImageData(0, 0, 128, 128).data;
  };
  const a = read(first);
  const b = read(second);
  let total = 0;
  for (let i = 0; i < a.length; i += 4) {
    total += Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
  }
  return total / (128 * 128 * 3);
}"""


async def canvas_hash(page: Page, selector: str) -> int:
    return int(await page.evaluate(CANVAS_HASH, selector))


async def canvas_difference(page: Page, first: str, second: str) -> float:
    return float(await page.evaluate(CANVAS_DIFFERENCE, [first, second]))


async def to_page(page: Page, point: Point, selector: str = "#sketch") -> Point:
    box = await page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not on screen"
    return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]


async def stroke(page: Page, points: Sequence[Point], steps: int = 3) -> None:
    """Draw through ``points`` with the mouse, button held down, ``steps`` moves a segment."""
    x, y = await to_page(page, points[0])
    await page.mouse.move(x, y)
    await page.mouse.down()
    for point in points[1:]:
        x, y = await to_page(page, point)
        await page.mouse.move(x, y, steps=steps)
    await page.mouse.up()


async def touch_stroke(page: Page, cdp: CDPSession, points: Sequence[Point]) -> None:
    """Draw through ``points`` with one finger (real touch events, through CDP)."""
    positions = [await to_page(page, point) for point in points]
    x, y = positions[0]
    await cdp.send(
        "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]}
    )
    for x, y in positions[1:]:
        await cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


async def paint_count(page: Page) -> int:
    return int(await page.evaluate("window.__probe.paints.length"))


async def wait_for_paint(page: Page, after: int) -> dict[str, Any]:
    """The first output frame drawn after the ``after``-th; waits for it."""
    await page.wait_for_function(
        "n => window.__probe.paints.length > n", arg=after, timeout=WAIT_MS
    )
    return dict(await page.evaluate("n => window.__probe.paints[n]", after))


async def wait_until_settled(page: Page) -> None:
    """No frame in flight or waiting, and the last answer drawn (or there was none)."""
    await page.wait_for_function(
        """() => {
          const { client, output } = window.livegen;
          return client.idle && output.decoding === 0;
        }""",
        timeout=WAIT_MS,
    )


async def wait_for_new_output(page: Page, previous_hash: int) -> int:
    """Wait until the output canvas shows something else; returns its new hash."""
    await page.wait_for_function(
        f"([selector, old]) => ({CANVAS_HASH})(selector) !== old",
        arg=["#output", previous_hash],
        timeout=WAIT_MS,
        polling=50,
    )
    return await canvas_hash(page, "#output")


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of ``values``, in ms, rounded."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
    }
