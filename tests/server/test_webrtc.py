"""WebRTC calls with a real aiortc peer on loopback sending synthetic moving video.

Signalling goes over the session's WebSocket; frames come back over RTP. The
pipeline shades the bottom half by ``strength`` and keeps the top half, where
the test video writes each frame's number, so latency is measured per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
from pathlib import Path

import msgpack
import pytest
from aiortc import RTCPeerConnection

from livegen_client import LivegenClient, ServerError
from stream.codec import pack
from stream.errors import ErrorCode
from stream.messages import WebRTCCandidate, WebRTCClose, WebRTCOffer
from tests.helpers import WAIT_S, ShadingPipeline, wait_until, ws_url
from tests.rtc import Caller, MarkedTrack

# A call needs ICE, DTLS and the first keyframe before frames flow.
CALL_WAIT_S = 20.0


def bottom_mean(frame) -> float:
    return float(frame[frame.shape[0] * 3 // 4 :].mean())


async def test_a_call_sends_video_in_and_gets_generated_video_back(start_server):
    server = await start_server(ShadingPipeline())
    params = {"strength": 0.5}
    async with await LivegenClient.connect(ws_url(server), params=params) as client:
        caller = await Caller.start(client)
        frame = await caller.frames(10, CALL_WAIT_S)
        await caller.hang_up()

    assert frame.shape == (256, 256, 3)
    assert abs(bottom_mean(frame) - 128) < 12  # the pipeline's work, through VP8
    assert len(caller.received.latencies_s) >= 5  # the frame numbers came back readable


async def test_params_changed_mid_call_show_in_later_frames(start_server):
    server = await start_server(ShadingPipeline())
    async with await LivegenClient.connect(ws_url(server), params={"strength": 0.0}) as client:
        caller = await Caller.start(client)
        dark = await caller.until(lambda f: bottom_mean(f) < 20, CALL_WAIT_S)
        await client.update_params(strength=1.0)
        light = await caller.until(lambda f: bottom_mean(f) > 235, CALL_WAIT_S)
        await caller.hang_up()

    assert bottom_mean(dark) < 20 and bottom_mean(light) > 235


@pytest.mark.slow
async def test_a_pipeline_slower_than_the_camera_drops_frames_and_latency_stays_flat(
    start_server,
):
    cost_s = 0.1  # 10 fps against a 30 fps camera
    pipeline = ShadingPipeline(cost_s=cost_s)
    server = await start_server(pipeline)
    async with await LivegenClient.connect(ws_url(server)) as client:
        caller = await Caller.start(client, MarkedTrack(fps=30))
        await caller.frames(5, CALL_WAIT_S)  # connected and flowing
        rss_start = resident_bytes()
        caller.received.latencies_s.clear()
        await asyncio.sleep(6.0)  # noqa: ASYNC110 - measuring over wall time is the point
        rss_end = resident_bytes()
        await caller.hang_up()
        session = next(iter(server.sessions))

    latencies = [latency for _, latency in caller.received.latencies_s]
    third = len(latencies) // 3
    first, last = statistics.median(latencies[:third]), statistics.median(latencies[-third:])
    assert len(latencies) >= 30
    # A queue would add a second of latency every second here (30 frames in, 10
    # out); the bounds leave room for a busy machine's noise, not for that.
    assert last < first + 0.25, f"latency grew from {first:.3f} s to {last:.3f} s"
    assert max(latencies) < 2 * cost_s + 1.0
    assert session.inbox.dropped > 30  # camera frames replaced, not queued
    assert rss_end - rss_start < 64 << 20


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def udp_sockets() -> int:
    """This process's open UDP sockets: ICE's, for the calls of both sides."""
    inodes = {line.split()[9] for line in Path("/proc/net/udp").read_text().splitlines()[1:]}
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sum(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def own_threads() -> int:
    """Threads, less the event loop's default executor (a bounded pool aiortc encodes on)."""
    return sum(not t.name.startswith("asyncio_") for t in threading.enumerate())


def executor_threads() -> int:
    return sum(t.name.startswith("asyncio_") for t in threading.enumerate())


@pytest.mark.slow
async def test_fifty_calls_leave_no_tasks_threads_or_files_behind(start_server):
    server = await start_server(ShadingPipeline())

    async def one_call(index: int) -> None:
        client = await LivegenClient.connect(ws_url(server))
        caller = await Caller.start(client)
        await caller.frames(1, CALL_WAIT_S)
        if index % 2:
            await client.websocket.send(pack(WebRTCClose()))  # hang up, keep the session
            await caller.hang_up()
            await client.close()
        else:
            await client.websocket.close()  # a closed tab: no goodbye
            await caller.hang_up()
        await wait_until(lambda: not server.connections)

    for index in range(3):  # executors and caches reach their working size
        await one_call(index)
    before = (len(asyncio.all_tasks()), own_threads(), open_files())
    for index in range(50):
        await one_call(index)
    await wait_until(lambda: len(asyncio.all_tasks()) <= before[0])

    after = (len(asyncio.all_tasks()), own_threads(), open_files())
    assert after == before
    assert executor_threads() <= min(32, (os.cpu_count() or 1) + 4)  # the pool's bound


async def test_closing_the_websocket_closes_the_call(start_server):
    server = await start_server(ShadingPipeline())
    client = await LivegenClient.connect(ws_url(server))
    caller = await Caller.start(client)
    await caller.frames(1, CALL_WAIT_S)
    [connection] = server.connections
    call = connection.call
    session = connection.session

    await client.websocket.close()
    await wait_until(lambda: not server.connections)
    await caller.hang_up()

    assert call is not None and call.pc.connectionState == "closed"
    assert session is not None and not session.inbox


async def test_a_hang_up_then_a_closed_socket_at_once_still_closes_the_call(start_server):
    # The README client's ending: webrtc.close, then the WebSocket closes before the
    # server has finished closing the peer connection; it must still finish.
    server = await start_server(ShadingPipeline())
    sockets_before = udp_sockets()
    client = await LivegenClient.connect(ws_url(server))
    caller = await Caller.start(client)
    await caller.frames(1, CALL_WAIT_S)
    assert udp_sockets() > sockets_before

    await client.websocket.send(pack(WebRTCClose()))
    await client.websocket.close()
    await wait_until(lambda: not server.connections)
    await caller.hang_up()

    assert udp_sockets() == sockets_before


async def test_a_bad_offer_is_refused_and_the_session_goes_on(start_server, jpeg):
    server = await start_server(ShadingPipeline())
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.websocket.send(pack(WebRTCOffer(sdp="not sdp")))
        with pytest.raises(ServerError) as refused:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.websocket.send(pack(WebRTCCandidate(candidate="candidate:1 1 udp")))
        with pytest.raises(ServerError) as early:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        await client.send_frame(jpeg(seed=1), frame_id=3)
        frame = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert refused.value.code == ErrorCode.INVALID_FIELD
    assert "webrtc.offer refused: the offer is not an SDP session description" in str(refused.value)
    assert "send webrtc.offer before webrtc.candidate" in str(early.value)
    assert frame.id == 3


async def test_a_candidate_that_does_not_parse_is_refused_with_words(start_server):
    server = await start_server(ShadingPipeline())
    async with await LivegenClient.connect(ws_url(server)) as client:
        caller = await Caller.start(client)
        await client.websocket.send(pack(WebRTCCandidate(candidate="candidate:garbage")))
        with pytest.raises(ServerError) as refused:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        await caller.hang_up()

    message = str(refused.value)
    assert "webrtc.candidate refused: 'candidate:garbage' is not an ICE candidate line" in message


@pytest.mark.parametrize(
    ("offer_what", "mention"),
    [
        # A data channel only: nothing to restyle.
        (lambda pc: pc.createDataChannel("chat"), "the offer has no video"),
        # Video that only receives would connect and then never see a frame.
        (
            lambda pc: pc.addTransceiver("video", direction="recvonly"),
            "the offer's video only receives: send a camera track",
        ),
    ],
    ids=["no-video", "receive-only"],
)
async def test_an_offer_without_a_camera_to_restyle_is_refused(start_server, offer_what, mention):
    server = await start_server(ShadingPipeline())
    pc = RTCPeerConnection()
    offer_what(pc)
    await pc.setLocalDescription(await pc.createOffer())
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.websocket.send(pack(WebRTCOffer(sdp=pc.localDescription.sdp)))
        with pytest.raises(ServerError) as refused:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
    await pc.close()

    assert mention in str(refused.value)


async def test_the_configured_codec_is_the_one_answered(start_server):
    server = await start_server(ShadingPipeline(), webrtc_codec="h264")
    async with await LivegenClient.connect(ws_url(server)) as client:
        caller = await Caller.start(client)
        description = caller.pc.remoteDescription
        await caller.hang_up()

    video = description.sdp.split("m=video")[1]
    assert "H264/90000" in video and "VP8/90000" not in video


async def test_session_started_tells_the_client_its_ice_servers(start_server):
    servers = '[{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}]'
    server = await start_server(ShadingPipeline(), ice_servers=servers)
    async with await LivegenClient.connect(ws_url(server)) as client:
        started = client.started

    assert started.ice_servers == msgpack.unpackb(
        msgpack.packb([{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}])
    )


async def test_a_peer_that_closes_its_side_ends_the_call_and_the_session_goes_on(
    start_server, jpeg
):
    server = await start_server(ShadingPipeline())
    async with await LivegenClient.connect(ws_url(server)) as client:
        caller = await Caller.start(client)
        await caller.frames(1, CALL_WAIT_S)
        [connection] = server.connections
        await caller.hang_up()  # no webrtc.close: the peer connection just goes away
        await wait_until(lambda: connection.call is None)
        await client.send_frame(jpeg(seed=1), frame_id=5)
        frame = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert frame.id == 5  # frames go back to frame.out once the call is over


async def test_the_configured_bitrate_is_where_a_calls_encoders_start(start_server):
    from aiortc.codecs import vpx

    server = await start_server(ShadingPipeline(), webrtc_bitrate=4_000_000)
    async with await LivegenClient.connect(ws_url(server)) as client:
        caller = await Caller.start(client)  # aiortc is set up with the first call
        await caller.frames(1, CALL_WAIT_S)
        await caller.hang_up()

    assert vpx.Vp8Encoder().target_bitrate == 4_000_000


def native_threads() -> int:
    """Threads the interpreter does not know of: the video codecs' own (FFmpeg's)."""
    return len(os.listdir("/proc/self/task")) - threading.active_count()


@pytest.mark.parametrize("ending", ["webrtc.close", "socket-dropped"])
async def test_a_hang_up_frees_the_calls_decoder_threads_though_the_session_stays(
    start_server, ending
):
    # The session keeps its last camera input to rerun on a params edit; that input
    # must not keep the call's decoder (and its threads) alive after the call.
    server = await start_server(ShadingPipeline())
    before = native_threads()
    client = await LivegenClient.connect(ws_url(server))
    caller = await Caller.start(client)
    await caller.frames(5, CALL_WAIT_S)
    during = native_threads()
    [connection] = server.connections
    session = connection.session
    if ending == "webrtc.close":
        await client.websocket.send(pack(WebRTCClose()))
        await wait_until(lambda: connection.call is None)
    else:
        await client.websocket.close()
        await wait_until(lambda: not server.connections)
    await caller.hang_up()
    await wait_until(lambda: native_threads() <= before)
    assert session is not None
    kept = session.last_decoded
    if ending == "webrtc.close":
        await client.close()

    assert during > before
    assert kept is not None and kept.video is not None  # a params edit can still rerun it
    assert kept.video().shape == (256, 256, 3)
