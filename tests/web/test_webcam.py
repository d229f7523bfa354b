"""The webcam page in Chromium: its synthetic camera goes to a real server over
WebRTC and comes back restyled in the page's <video>; strength and prompt apply
live; Stop hangs up; a dropped connection brings the call back; a refused
camera and a call that cannot connect each say so. The client's message tags
and error codes mirror stream/'s, WebRTC's included.

The ShadingPipeline greys the bottom half of each frame at ``strength``, so
sampling the received video's pixels shows a param change arrive mid-call.
"""

from __future__ import annotations

import time
import typing

from server.app import LivegenServer
from stream.errors import ErrorCode
from stream.messages import ClientMessage, ServerMessage
from tests.helpers import ShadingPipeline, wait_until
from tests.web.conftest import LOOP, PHONE, record
from tests.web.test_layout import NO_SIDEWAYS_SCROLL, PHONE_OPTIONS, box
from tests.web.test_sketch import SLIDE

pytestmark = LOOP

# Mean grey level (0 to 255) of the received video's top and bottom bands, read
# through a 64 px canvas (drawImage takes the frame as decoded, without the
# page's mirroring).
VIDEO_BANDS = """() => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 64;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(document.querySelector("#output"), 0, 0, 64, 64);
  const data = context.getImageData(0, 0, 64, 64).data;
  const mean = (from, to) => {
    let total = 0;
    for (let i = from * 64 * 4; i < to * 64 * 4; i += 4) {
      total += (data[i] + data[i + 1] + data[i + 2]) / 3;
    }
    return total / ((to - from) * 64);
  };
  return { top: mean(0, 24), bottom: mean(40, 64) };
}"""
SHADE_TOLERANCE = 12  # grey levels: VP8 and the YUV round trip blur a flat grey this little

# A stand-in for a browser that refuses the camera (or, told so, has none).
REFUSE_CAMERA = """
window.__cameraError = "NotAllowedError";
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("the camera is not available", window.__cameraError);
};
"""

# A network where the browser's WebRTC packets never reach the server: no
# candidate of the browser's is trickled, and the server's point at a dead port.
BLOCK_ICE = r"""
(() => {
  const Native = RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    set onicecandidate(listener) {
      super.onicecandidate = listener && ((event) => event.candidate || listener(event));
    }
    get onicecandidate() {
      return super.onicecandidate;
    }
    setRemoteDescription(description) {
      const sdp = description.sdp.replace(/^(a=candidate:\S+ \d+ \S+ \d+ \S+ )\d+/gm, "$19");
      return super.setRemoteDescription({ type: description.type, sdp });
    }
  };
})();
"""


async def presented(page) -> int:
    return int(await page.evaluate("window.livegen.counter.presented"))


async def wait_for_frames(page, count: int) -> None:
    """Wait until ``count`` more restyled frames have been presented in the <video>."""
    after = await presented(page) + count
    await page.wait_for_function("n => window.livegen.counter.presented >= n", arg=after)


async def wait_for_shade(page, strength: float) -> dict[str, float]:
    """Wait until the video's bottom band is the grey ``strength`` gives; its bands."""
    await page.wait_for_function(
        f"([grey, tolerance]) => Math.abs(({VIDEO_BANDS})().bottom - grey) < tolerance",
        arg=[strength * 255, SHADE_TOLERANCE],
        polling=30,
    )
    return dict(await page.evaluate(VIDEO_BANDS))


async def wait_for_message(page, title: str) -> None:
    """Wait until the output stage shows the message ``title``."""
    await page.locator("#placeholder").wait_for()
    await page.wait_for_function(
        "title => document.querySelector('#message-title').textContent === title", arg=title
    )


def only_connection(server: LivegenServer):
    [connection] = server.connections
    return connection


async def test_the_camera_comes_back_restyled_and_follows_the_controls_live(
    start_server, open_page, shoot
):
    server = await start_server(ShadingPipeline())
    page = await open_page(server, "/webcam.html")
    # Set before Start: held, and sent when the call begins.
    await page.locator("#strength").evaluate(SLIDE, "0.2")
    await page.locator("#prompt").fill("watercolor portrait, soft light")

    await page.locator("#call").click()
    await page.locator("#output:not(.empty)").wait_for()
    await wait_for_frames(page, 10)
    dark = await wait_for_shade(page, 0.2)
    timing = await page.evaluate("window.livegen.timing")
    size = await page.locator("#output").evaluate("video => [video.videoWidth, video.videoHeight]")
    start_count, changed = await presented(page), time.perf_counter()
    await page.locator("#strength").evaluate(SLIDE, "0.9")
    light = await wait_for_shade(page, 0.9)
    strength_to_video_ms = (time.perf_counter() - changed) * 1000
    await page.locator("#prompt").press_sequentially(", at night", delay=10)
    connection = only_connection(server)
    await wait_until(lambda: connection.session.params.prompt.endswith("at night"))
    call_on_server = connection.call
    # Frames shown per second while the strength and the prompt changed (a second or more).
    await page.wait_for_function("document.querySelector('#fps').textContent !== '–'")
    fps = (await presented(page) - start_count) / (time.perf_counter() - changed)
    await shoot(page, "webcam-shading-desktop")

    await page.locator("#call").click()  # Stop: hang up, camera off
    await wait_until(lambda: connection.call is None)
    after_stop = await page.evaluate(
        """() => ({
          camera: window.livegen.camera,
          call: window.livegen.call,
          button: document.querySelector('#call').textContent.trim(),
          state: document.querySelector('#workspace').dataset.call,
        })"""
    )

    record(
        "webcam: Start to first restyled frame shown (ms)",
        round(timing["firstFrameAt"] - timing["startedAt"]),
    )
    record("webcam: restyled frames shown per second (fake camera)", round(fps, 1))
    record("webcam: strength change to the video's new shade (ms)", round(strength_to_video_ms))
    assert size[0] > 0 and size[1] > 0
    assert abs(dark["bottom"] - 0.2 * 255) < SHADE_TOLERANCE
    assert abs(light["bottom"] - 0.9 * 255) < SHADE_TOLERANCE
    assert abs(light["top"] - light["bottom"]) > 20  # the top is the camera's picture
    assert fps > 2  # frames keep coming (the fake camera sends 20 a second; CI may be busy)
    assert call_on_server is not None
    assert connection.session.params.strength == 0.9
    assert connection.session.params.prompt == "watercolor portrait, soft light, at night"
    assert after_stop == {"camera": None, "call": None, "button": "Start", "state": "idle"}
    assert await page.locator("#message-title").inner_text() == "Your camera, restyled live"


async def test_the_call_comes_back_after_the_connection_drops_on_a_phone(
    start_server, open_page, shoot
):
    server = await start_server()  # passthrough
    page = await open_page(server, "/webcam.html", **PHONE_OPTIONS)
    await page.locator("#call").click()
    await page.locator("#output:not(.empty)").wait_for()
    await wait_for_frames(page, 5)
    session_id = await page.evaluate("window.livegen.client.sessionId")

    dropped = time.perf_counter()
    only_connection(server).websocket.transport.abort()  # the network drops: no close frame
    await page.wait_for_function("window.livegen.call.offers === 2")
    await page.wait_for_function("window.livegen.call.state === 'connected'")
    await page.locator("#output:not(.empty)").wait_for()
    back_ms = (time.perf_counter() - dropped) * 1000
    await wait_for_frames(page, 10)
    connection = only_connection(server)
    output, prompt = await box(page, ".panel-output"), await box(page, ".panel-prompt")
    selfview = await box(page, "#selfview")
    await page.wait_for_function("document.querySelector('#fps').textContent !== '–'")
    await shoot(page, "webcam-phone", full_page=True)

    record("webcam: connection dropped to restyled video back (ms)", round(back_ms))
    assert await page.evaluate("window.livegen.client.session.resumed") is True
    assert await page.evaluate("window.livegen.client.sessionId") == session_id
    assert connection.call is not None
    assert await page.evaluate(NO_SIDEWAYS_SCROLL)
    assert output["y"] + output["height"] <= prompt["y"]  # stacked
    assert output["width"] >= 0.9 * PHONE["width"]
    assert not await page.locator(".panel-camera").is_visible()  # the self-view instead
    assert output["x"] < selfview["x"] < output["x"] + output["width"]

    # The server finds the connection failed (aiortc's "failed" state): the page says so.
    connection._call_ended(
        connection.call, "the WebRTC connection failed (network lost or blocked)"
    )
    await wait_for_message(page, "The video connection dropped")
    await wait_until(lambda: connection.call is None)
    assert await page.evaluate("window.livegen.camera") is None  # the camera is off again


async def test_a_refused_or_missing_camera_says_what_to_do(start_server, open_page, shoot):
    server = await start_server()
    page = await open_page(server, "/webcam.html", init_script=REFUSE_CAMERA)
    await shoot(page, "webcam-idle-desktop")
    await page.locator("#call").click()
    await wait_for_message(page, "Camera access was refused")
    refused = await page.locator("#message-action").inner_text()
    await shoot(page, "webcam-camera-refused-desktop")

    await page.evaluate("window.__cameraError = 'NotFoundError'")
    await page.locator("#message-action").click()  # Try again
    await wait_for_message(page, "No camera found")

    assert refused == "Try again"
    assert await page.locator("#call").inner_text() == "Start"
    assert await page.evaluate("window.livegen.call") is None
    assert only_connection(server).call is None


async def test_a_call_that_cannot_connect_says_so(start_server, open_page, shoot):
    server = await start_server()
    page = await open_page(server, "/webcam.html", init_script=BLOCK_ICE, color_scheme="dark")
    await page.evaluate("window.livegen.callOptions.connectTimeoutMs = 1500")
    await page.locator("#call").click()
    await wait_for_message(page, "The video could not connect")
    connection = only_connection(server)
    await wait_until(lambda: connection.call is None)  # the page hung up the server's side
    assert "--host 0.0.0.0" in await page.locator("#message-command").inner_text()
    await shoot(page, "webcam-cannot-connect-desktop-dark")

    # No answer at all (the offer is lost on the way): the client gives up in time.
    failure = await page.evaluate(
        """async () => {
          const { client } = window.livegen;
          const send = client.send.bind(client);
          client.send = (message) => message.type === "webrtc.offer" || send(message);
          const camera = await navigator.mediaDevices.getUserMedia({ video: true });
          const call = client.call(camera, { answerTimeoutMs: 300 });
          try {
            await call.connected;
            return null;
          } catch (error) {
            return { code: error.code, reason: error.reason, state: call.state };
          } finally {
            camera.getTracks().forEach((track) => track.stop());
          }
        }"""
    )
    assert failure == {"code": "webrtc_failed", "reason": "no_answer", "state": "failed"}


async def test_the_client_mirrors_the_protocol_tag_for_tag(start_server, open_page):
    server = await start_server()
    page = await open_page(server, "/webcam.html")
    client = await page.evaluate(
        """async () => {
          const { MessageType, ErrorCode } = await import("/livegen.js");
          return { types: Object.values(MessageType), codes: Object.values(ErrorCode) };
        }"""
    )
    messages = typing.get_args(ClientMessage) + typing.get_args(ServerMessage)

    assert sorted(client["types"]) == sorted(message.TYPE for message in messages)
    assert set(client["codes"]) - {code.value for code in ErrorCode} == {
        "input_failed",  # the client's own
        "connection_lost",
    }
    assert {code.value for code in ErrorCode} <= set(client["codes"])
