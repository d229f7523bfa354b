"""A GStreamer WHIP publisher (webrtcbin, tests/gst_whip_client.py) against the real server.

GStreamer's WebRTC stack is what OBS-style and command-line WHIP tools use. It
trickles its candidates with PATCH, and its DTLS side has an RSA certificate,
which aiortc as a DTLS client cannot talk to: this checks that livegen answers
so that it connects. The generated frames are read back through WHEP.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ShadingPipeline, wait_until
from tests.rtc import MarkedTrack
from tests.server.test_webrtc import CALL_WAIT_S, bottom_mean
from tests.whip import Viewer

CLIENT = Path(__file__).parent.parent / "gst_whip_client.py"
SYSTEM_PYTHON = "/usr/bin/python3"
STREAM_S = 8


def gstreamer_python() -> str:
    """Debian's Python with GStreamer's bindings (tests/setup.sh installs them)."""
    probe = "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import GstWebRTC"
    if shutil.which(SYSTEM_PYTHON):
        found = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, check=False)
        if found.returncode == 0:
            return SYSTEM_PYTHON
    message = "GStreamer's Python bindings are missing: run `bash tests/setup.sh`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def test_a_gstreamer_publisher_trickles_connects_and_is_watched(start_server):
    python = gstreamer_python()
    server = await start_server(ShadingPipeline())
    url = f"http://127.0.0.1:{server.port}/whip?strength=1.0"
    publisher = await asyncio.create_subprocess_exec(
        python, str(CLIENT), url, str(STREAM_S), stdout=asyncio.subprocess.PIPE
    )
    assert publisher.stdout is not None
    steps: list[dict] = []

    async def next_step() -> dict:
        line = await asyncio.wait_for(publisher.stdout.readline(), CALL_WAIT_S)
        steps.append(json.loads(line))
        return steps[-1]

    posted = await next_step()
    assert posted["status"] == 201, posted
    viewer = await Viewer.watch(f"http://127.0.0.1:{server.port}", posted["session"], MarkedTrack())
    frame = await viewer.frames(10, CALL_WAIT_S)
    while (await next_step())["step"] != "delete":
        pass
    await asyncio.wait_for(publisher.wait(), CALL_WAIT_S)
    await viewer.hang_up()
    await wait_until(lambda: len(server.media) == 0)

    patches = [step for step in steps if step["step"] == "patch"]
    assert patches and all(step["status"] == 204 for step in patches)
    assert {"step": "state", "state": "connected"} in steps
    assert steps[-1] == {"step": "delete", "status": 200}
    assert frame.shape == (240, 320, 3)
    assert bottom_mean(frame) > 235  # the pipeline's work on GStreamer's video
    assert not list(server.sessions)


# aioice declares a connection lost after six unanswered consent checks, 5 s apart.
ICE_FAILURE_S = 45.0


@pytest.mark.slow
async def test_a_publisher_that_vanishes_without_delete_is_freed_when_ice_fails(start_server):
    python = gstreamer_python()
    server = await start_server(ShadingPipeline())
    url = f"http://127.0.0.1:{server.port}/whip"
    publisher = await asyncio.create_subprocess_exec(
        python, str(CLIENT), url, "600", stdout=asyncio.subprocess.PIPE
    )
    assert publisher.stdout is not None
    async with asyncio.timeout(CALL_WAIT_S):
        while b'"connected"' not in await publisher.stdout.readline():
            pass
    publisher.kill()  # gone at once: no DELETE, no DTLS goodbye
    await publisher.wait()
    async with asyncio.timeout(ICE_FAILURE_S):
        while len(server.media):  # noqa: ASYNC110 - the server has no event to wait on
            await asyncio.sleep(0.5)

    assert not list(server.sessions)
