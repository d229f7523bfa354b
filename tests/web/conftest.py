"""Browser fixtures: Debian's Chromium driven by Playwright, pages served by a real server.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``
(``bash tests/setup.sh`` installs it). Every page opened through
:func:`open_page` records console errors and uncaught exceptions, and the test
fails at teardown if there were any it did not expect. Screenshots go to the
test's temporary folder and, when ``LIVEGEN_SCREENSHOTS`` names a folder, there
too; measurements are printed at the end of the run (and saved beside the
screenshots as ``measurements.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from server.app import LivegenServer
from tests.conftest import StartServer, servers_on_loopback
from tests.helpers import WAIT_S, http_url

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The webcam page: Chromium's synthetic camera, granted without a prompt, and
    # WebRTC host candidates on loopback too (a test server offers only 127.0.0.1).
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
WAIT_MS = WAIT_S * 1000
DESKTOP = {"width": 1360, "height": 860}
PHONE = {"width": 390, "height": 844}

# Instruments every page before its own scripts run: how late pointer handlers
# start after the input event (pointermove is held to the next animation frame;
# pointerrawupdate, which the sketch draws on where it exists, is not), long
# tasks, and each output frame drawn, with the time of the pointer event before it.
PROBE = """
(() => {
  const probe = { inputDelays: { pointermove: [], pointerrawupdate: [] }, longTasks: [],
                  lastPointerAt: null, paints: [] };
  window.__probe = probe;
  const seen = (event) => { probe.lastPointerAt = event.timeStamp; };
  addEventListener("pointerdown", seen, { capture: true });
  for (const type of ["pointermove", "pointerrawupdate"]) {
    addEventListener(type, (event) => {
      probe.inputDelays[type].push(performance.now() - event.timeStamp);
      seen(event);
    }, { capture: true });
  }
  document.addEventListener("framepaint", (event) => {
    const paint = { ...event.detail, pointerAt: probe.lastPointerAt, nextFrameAt: null };
    probe.paints.push(paint);
    requestAnimationFrame(() => { paint.nextFrameAt = performance.now(); });
  }, { capture: true });
  try {
    new PerformanceObserver((list) => {
      for (const task of list.getEntries()) probe.longTasks.push(task.duration);
    }).observe({ type: "longtask", buffered: true });
  } catch {}
})();
"""

RESULTS: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    """Keep a measurement for the end-of-run summary (and ``measurements.json``)."""
    RESULTS[name] = value
    folder = os.environ.get("LIVEGEN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "measurements.json").write_text(json.dumps(RESULTS, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("browser measurements")
        for name, value in RESULTS.items():
            terminalreporter.write_line(f"{name}: {json.dumps(value)}")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium: missing, these tests are skipped, or fail under CI."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `bash tests/setup.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


# One browser for the whole run (it takes a second to start), so the browser
# tests share one event loop: each module marks its tests with LOOP.
LOOP = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=WAIT_MS * 3
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Problems:
    """Console errors and uncaught exceptions seen on one page."""

    expected: list[re.Pattern[str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Exception) -> None:
        self.seen.append(f"uncaught: {error}")

    def unexpected(self) -> list[str]:
        return [p for p in self.seen if not any(e.search(p) for e in self.expected)]


@pytest_asyncio.fixture(loop_scope="session")
async def start_server() -> AsyncIterator[StartServer]:
    """``tests/conftest.py``'s fixture of the same name, in the browser tests' event loop."""
    async with servers_on_loopback() as start:
        yield start


OpenPage = Callable[..., Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """``await open_page(server, path="/", viewport=DESKTOP, state="open", init_script=None,
    **context_options)``.

    ``init_script`` runs before the page's own scripts (say, to stand in for a
    browser API). The page is loaded and its client is in ``state`` (its session
    live) when this returns. After the
    test, any console error or uncaught exception fails it, except those
    matching a pattern in ``page.problems.expected``.
    """
    opened: list[tuple[Page, Problems]] = []

    async def open_(
        server: LivegenServer,
        path: str = "/",
        viewport: dict[str, int] = DESKTOP,
        state: str | None = "open",
        init_script: str | None = None,
        **options: Any,
    ) -> Page:
        context = await browser.new_context(viewport=viewport, **options)
        await context.add_init_script(PROBE)
        if init_script is not None:
            await context.add_init_script(init_script)
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        problems = Problems()
        page.on("console", problems.on_console)
        page.on("pageerror", problems.on_page_error)
        page.problems = problems  # type: ignore[attr-defined]
        opened.append((page, problems))
        await page.goto(http_url(server, path))
        if state is not None:  # None: a page without a session client (watch.html)
            await wait_for_state(page, state)
        return page

    yield open_
    for page, _ in opened:
        await page.context.close()
    unexpected = [p for _, problems in opened for p in problems.unexpected()]
    assert not unexpected, "errors in the browser console:\n" + "\n".join(unexpected)


async def wait_for_state(page: Page, state: str) -> None:
    await page.wait_for_function(
        "state => window.livegen?.client?.state === state", arg=state, timeout=WAIT_MS
    )


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[[Page, str], Awaitable[Path]]:
    """``await shoot(page, name)``: a screenshot, in tmp_path and in $LIVEGEN_SCREENSHOTS."""

    def save(name: str, image: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(image)
        folder = os.environ.get("LIVEGEN_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_bytes(image)
        return path

    async def take(page: Page, name: str, full_page: bool = False) -> Path:
        image = await page.screenshot(full_page=full_page, animations="disabled")
        return await asyncio.to_thread(save, f"{name}.png", image)

    return take
