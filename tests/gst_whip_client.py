"""A WHIP publisher on GStreamer's WebRTC stack (webrtcbin), for test_whip_gstreamer.py.

Run by Debian's own Python with its GStreamer bindings (python3-gi; the
project's virtualenv has none): ``/usr/bin/python3 tests/gst_whip_client.py
URL SECONDS``. It sends a moving test pattern in VP8, posts webrtcbin's offer
to ``URL`` without waiting for candidates, trickles each candidate with PATCH
as webrtcbin finds it, streams for ``SECONDS`` and ends with DELETE. Each step
prints one JSON line: what the server answered.

Debian 12's ``simple-whip-client`` would be the natural choice, but it aborts
at start (it links libsoup 2, and GStreamer's libnice pulls in libsoup 3).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from urllib.parse import urljoin

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
    "! videoconvert ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 "
    "! application/x-rtp,media=video,encoding-name=VP8,payload=96 "
    "! webrtcbin name=publisher bundle-policy=max-bundle"
)


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def send(method: str, url: str, body: str = "", content_type: str = "") -> tuple[int, dict, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, body.encode(), headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


class Publisher:
    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.resource: str | None = None
        self.early: list[tuple[int, str]] = []  # candidates found before the resource
        self.mids: list[str] = []
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(PIPELINE)
        self.webrtc = self.pipeline.get_by_name("publisher")
        # libnice leaves loopback out unless told; the test server offers only loopback.
        self.ice = self.webrtc.get_property("ice-agent")  # kept: GI drops a reference too many
        self.ice.emit("add-local-ip-address", "127.0.0.1")
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self.on_ice_candidate)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        GLib.timeout_add(int(seconds * 1000), self.finish)

    def run(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)

    def on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        made = Gst.Promise.new_with_change_func(self.on_offer, webrtc)
        webrtc.emit("create-offer", None, made)

    def on_offer(self, promise: Gst.Promise, webrtc: Gst.Element) -> None:
        reply = promise.get_reply()  # kept: the offer lives inside it
        offer = reply.get_value("offer")
        text = offer.sdp.as_text()
        self.mids = [line[6:] for line in text.splitlines() if line.startswith("a=mid:")]
        webrtc.emit("set-local-description", offer, Gst.Promise.new())
        status, headers, body = send("POST", self.url, text, "application/sdp")
        report(
            step="post",
            status=status,
            location=headers.get("Location"),
            session=headers.get("Livegen-Session-Id"),
            body=body if status != 201 else "",
        )
        if status != 201:
            self.loop.quit()
            return
        self.resource = urljoin(self.url, headers["Location"])
        _, sdp = GstSdp.SDPMessage.new_from_text(body)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        for index, candidate in self.early:
            self.trickle(index, candidate)

    def on_ice_candidate(self, webrtc: Gst.Element, index: int, candidate: str) -> None:
        if self.resource is None:
            self.early.append((index, candidate))
        else:
            self.trickle(index, candidate)

    def trickle(self, index: int, candidate: str) -> None:
        assert self.resource is not None
        fragment = f"a=mid:{self.mids[index]}\r\na={candidate}\r\n"
        status, _, body = send("PATCH", self.resource, fragment, "application/trickle-ice-sdpfrag")
        report(step="patch", status=status, body=body)

    def on_connection_state(self, webrtc: Gst.Element, _: object) -> None:
        state = webrtc.get_property("connection-state")
        report(step="state", state=state.value_nick)

    def finish(self) -> bool:
        if self.resource is not None:
            status, _, _ = send("DELETE", self.resource)
            report(step="delete", status=status)
        self.loop.quit()
        return False


if __name__ == "__main__":
    Gst.init(None)
    Publisher(sys.argv[1], float(sys.argv[2])).run()
