"""In the dark theme the ink swatch (nearly the panel's own colour) stands out: its
ring reaches the 3:1 contrast WCAG asks of a control's outline (1.4.11)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.web.conftest import LOOP

pytestmark = LOOP

UI_CONTRAST = 3.0  # WCAG 2.x, non-text contrast


def luminance(rgb: tuple[int, ...]) -> float:
    """WCAG's relative luminance of an sRGB colour."""
    channels = [c / 255 for c in rgb[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: float, b: float) -> float:
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


async def test_the_ink_swatch_stands_out_in_the_dark_theme(start_server, open_page, shoot):
    server = await start_server()
    page = await open_page(server, color_scheme="dark", device_scale_factor=2)
    # Another colour picked: the ink swatch shows without its selection ring.
    await page.locator(".swatch[aria-label=Red]").click()
    toolbar = await page.locator(".toolbar").evaluate(
        "bar => getComputedStyle(bar.closest('.panel')).backgroundColor"
    )
    image = Image.open(io.BytesIO(await page.locator(".swatch[aria-label=Ink]").screenshot()))
    await shoot(page, "sketch-swatches-desktop-dark")

    panel = luminance(tuple(int(c) for c in toolbar[4:-1].split(",")))
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    brightest = max(luminance(tuple(pixel)) for pixel in pixels)
    assert contrast(brightest, panel) >= UI_CONTRAST, (toolbar, brightest)
