"""WHIP and WHEP clients for tests and benchmarks: real HTTP, real aiortc peers.

:func:`request` sends one HTTP request (the standard library's client, on a
thread). A :class:`Publisher` posts a camera's offer to ``/whip``; a
:class:`Viewer` posts a receive-only offer to a session's ``/whep/<id>``; both
read back the video livegen sends them (tests/rtc.py's :class:`Peer`).
"""

from __future__ import annotations

import asyncio
import http.client
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiortc import AudioStreamTrack, RTCRtpSender, RTCSessionDescription

from tests.rtc import MarkedTrack, Peer

HTTP_WAIT_S = 20.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def request(
    method: str, url: str, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> Answer:
    """One request on a connection of its own."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    data = body.encode() if isinstance(body, str) else body

    def send() -> Answer:
        connection = http.client.HTTPConnection(parts.netloc, timeout=HTTP_WAIT_S)
        try:
            connection.request(method, target, data, headers or {})
            answer = connection.getresponse()
            return Answer(answer.status, answer.headers, answer.read())
        finally:
            connection.close()

    return await asyncio.to_thread(send)


def sdp_headers(token: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class HttpPeer(Peer):
    """A peer whose offer goes in an HTTP POST and whose resource ends with DELETE."""

    def __init__(self, track: MarkedTrack) -> None:
        super().__init__(track)
        self.answer: Answer | None = None
        self.resource_url = ""

    async def _post(self, url: str, token: str | None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.answer = await request("POST", url, self.pc.localDescription.sdp, sdp_headers(token))
        assert self.answer.status == 201, (self.answer.status, self.answer.text)
        location = self.answer.headers["Location"]
        self.resource_url = f"{url.split('/wh')[0]}{location}"
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer.text, "answer"))

    async def delete(self, token: str | None = None) -> Answer:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        answer = await request("DELETE", self.resource_url, headers=headers)
        await self.hang_up()
        return answer


class Publisher(HttpPeer):
    """A WHIP client: ``await Publisher.start(base_url)``, then ``delete`` or ``hang_up``."""

    @classmethod
    async def start(
        cls,
        base_url: str,
        *,
        query: str = "",
        sendrecv: bool = True,
        token: str | None = None,
        track: MarkedTrack | None = None,
        codec: str | None = None,
        audio: bool = False,
    ) -> Publisher:
        """``codec`` ("H264", "VP8") limits the offer to it; ``audio`` adds a silent
        send-only audio line, as OBS's offer has."""
        publisher = cls(track or MarkedTrack())
        transceiver = publisher.pc.addTransceiver(
            publisher.track, direction="sendrecv" if sendrecv else "sendonly"
        )
        if codec is not None:
            capabilities = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in capabilities if c.mimeType == f"video/{codec}"]
            )
        if audio:
            publisher.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await publisher._post(f"{base_url}/whip{query}", token)
        return publisher

    @property
    def session_id(self) -> str:
        assert self.answer is not None
        return self.answer.headers["Livegen-Session-Id"]


class Viewer(HttpPeer):
    """A WHEP client: a receive-only offer for a session's generated video."""

    @classmethod
    async def watch(
        cls, base_url: str, session_id: str, source: MarkedTrack, token: str | None = None
    ) -> Viewer:
        viewer = cls(source)
        viewer.pc.addTransceiver("video", direction="recvonly")
        await viewer._post(f"{base_url}/whep/{session_id}", token)
        return viewer
