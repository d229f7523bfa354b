"""Eyevinn's published WHIP and WHEP browser clients, unmodified, in Chromium.

``@eyevinn/whip-web-client`` publishes Chromium's fake camera to ``/whip``;
``@eyevinn/webrtc-player`` plays the session through ``/whep/<id>`` in a second
page. Both come from npm at the versions tests/web/whip_js's lock file pins
(``bash tests/setup.sh`` installs them) and are bundled for the page with
esbuild. The ShadingPipeline greys the bottom half at ``strength``, so the
player's pixels show the model ran on the published video.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ShadingPipeline, wait_until
from tests.web.conftest import LOOP
from tests.web.test_watch import wait_for_video
from tests.web.test_webcam import SHADE_TOLERANCE

pytestmark = LOOP

CLIENTS = Path(__file__).parent / "whip_js"

PUBLISH = """async (endpoint) => {
  const camera = await navigator.mediaDevices.getUserMedia({
    video: { width: 512, height: 512, frameRate: 15 },
    audio: false,
  });
  const client = new WHIPClient({ endpoint, opts: { iceGatheringTimeout: 2000 } });
  await client.ingest(camera);
  window.publisher = client;
}"""

PLAY = """async (url) => {
  const video = document.createElement("video");
  video.id = "output";
  video.className = "empty";
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  video.addEventListener("loadeddata", () => video.classList.remove("empty"));
  document.body.append(video);
  const player = new WebRTCPlayer({ video, type: "whep" });
  await player.load(new URL(url));
  window.player = player;
}"""


@pytest.fixture(scope="session")
def eyevinn_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Both clients in one script that sets ``window.WHIPClient`` and ``window.WebRTCPlayer``."""
    if not (CLIENTS / "node_modules").is_dir():
        message = f"{CLIENTS}/node_modules is missing: run `bash tests/setup.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bundle = tmp_path_factory.mktemp("eyevinn") / "eyevinn.js"
    subprocess.run(
        [
            "npx",
            "--no-install",
            "esbuild",
            "entry.mjs",
            "--bundle",
            "--format=iife",
            "--platform=browser",
            f"--outfile={bundle}",
            "--log-level=warning",
        ],
        cwd=CLIENTS,
        check=True,
        timeout=120,
    )
    return bundle.read_text()


async def test_eyevinns_clients_publish_a_camera_and_play_it_back_restyled(
    start_server, open_page, eyevinn_bundle, shoot
):
    server = await start_server(ShadingPipeline())
    base = f"http://127.0.0.1:{server.port}"
    # Blank pages on the server's origin (the clients' requests are then same-origin);
    # Chromium asks a plain-text page for /favicon.ico, which livegen does not have.
    favicon = re.compile(r"status of 404 .*/favicon\.ico")
    publisher = await open_page(server, "/healthz", state=None)
    publisher.problems.expected.append(favicon)
    # This client version cannot trickle the candidates Chromium finds (its own
    # complaint, logged as an error); the answer's candidates connect regardless.
    publisher.problems.expected.append(re.compile("cannot send trickle ICE candidate"))
    await publisher.add_script_tag(content=eyevinn_bundle)
    await publisher.evaluate(PUBLISH, f"{base}/whip?strength=0.7")
    await wait_until(lambda: len(list(server.sessions)) == 1)
    [session] = server.sessions
    viewer = await open_page(server, "/healthz", state=None)
    viewer.problems.expected.append(favicon)
    await viewer.add_script_tag(content=eyevinn_bundle)
    await viewer.evaluate(PLAY, f"{base}/whep/{session.id}")
    bands = await wait_for_video(viewer, 0.7)
    await shoot(viewer, "eyevinn-player")
    viewers_before_unload = len(server.media)
    await viewer.evaluate("() => window.player.unload()")  # DELETE the viewer
    await publisher.evaluate("() => window.publisher.destroy()")  # DELETE the publisher
    await wait_until(lambda: len(server.media) == 0)

    assert viewers_before_unload == 2
    assert abs(bands["bottom"] - 0.7 * 255) < SHADE_TOLERANCE
    assert not list(server.sessions)
