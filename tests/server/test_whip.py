"""WHIP ingest and WHEP playback: real HTTP to a real server, real aiortc peers.

The pipeline shades the bottom half by ``strength`` and keeps the top half,
where the test video writes each frame's number (tests/rtc.py).
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from livegen_client import LivegenClient
from server.tokens import mint_token
from tests.helpers import WAIT_S, ShadingPipeline, wait_until, ws_url
from tests.rtc import Caller, MarkedTrack
from tests.server.test_webrtc import CALL_WAIT_S, bottom_mean, native_threads, udp_sockets
from tests.whip import Publisher, Viewer, request, sdp_headers

API_KEY = "whip-test-key-0123456789abcdef"


def base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_a_sendrecv_offer_gets_201_an_answer_and_generated_video_back(start_server):
    server = await start_server(ShadingPipeline())
    publisher = await Publisher.start(base(server), query="?strength=0.5&prompt=a%20fox")
    frame = await publisher.frames(10, CALL_WAIT_S)
    answer = publisher.answer
    [session] = server.sessions
    await publisher.delete()

    assert answer.headers["Content-Type"] == "application/sdp"
    assert answer.headers["Location"].startswith("/whip/")
    assert answer.headers["ETag"].startswith('"')
    assert answer.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert answer.headers["Livegen-Session-Id"] == session.id
    assert answer.headers["Livegen-Whep"] == f"/whep/{session.id}"
    assert "a=candidate:" in answer.text  # every candidate in the answer: no trickle needed
    assert session.params.prompt == "a fox" and session.params.strength == 0.5
    assert abs(bottom_mean(frame) - 128) < 12  # the pipeline's work, through VP8
    assert len(publisher.received.latencies_s) >= 5


async def test_a_sendonly_publisher_is_watched_by_two_whep_viewers(start_server):
    server = await start_server(ShadingPipeline())
    publisher = await Publisher.start(base(server), query="?strength=1.0", sendrecv=False)
    viewers = [
        await Viewer.watch(base(server), publisher.session_id, publisher.track) for _ in range(2)
    ]
    frames = await asyncio.gather(*(viewer.frames(5, CALL_WAIT_S) for viewer in viewers))
    for viewer in viewers:
        answer = await viewer.delete()
        assert answer.status == 200
    sent_back = publisher.received.count
    await publisher.delete()

    assert sent_back == 0  # send-only: its video goes out through WHEP only
    assert all(bottom_mean(frame) > 235 for frame in frames)
    assert all(len(viewer.received.latencies_s) >= 2 for viewer in viewers)


async def test_an_obs_like_offer_h264_only_with_audio_is_taken_and_watched(start_server):
    # OBS offers H.264 and Opus, send-only; the server's own codec (VP8) is not offered.
    server = await start_server(ShadingPipeline())
    publisher = await Publisher.start(
        base(server), query="?strength=1", sendrecv=False, codec="H264", audio=True
    )
    viewer = await Viewer.watch(base(server), publisher.session_id, publisher.track)
    frame = await viewer.frames(5, CALL_WAIT_S)
    answer = publisher.answer.text
    await viewer.delete()
    await publisher.delete()

    video, audio = answer.split("m=video")[1], answer.split("m=audio")[1].split("m=video")[0]
    assert "H264/90000" in video
    assert "a=inactive" in audio  # sound is refused, so nothing decodes it into a queue
    assert bottom_mean(frame) > 235


async def test_params_changed_over_the_websocket_show_in_the_whep_video(start_server):
    server = await start_server(ShadingPipeline())
    publisher = await Publisher.start(base(server), query="?strength=0", sendrecv=False)
    viewer = await Viewer.watch(base(server), publisher.session_id, publisher.track)
    await viewer.until(lambda f: bottom_mean(f) < 20, CALL_WAIT_S)
    resume = (publisher.session_id, publisher.answer.headers["Livegen-Resume-Token"])
    client = await LivegenClient.connect(ws_url(server), resume=resume)
    resumed = client.started.resumed
    await client.update_params(strength=1.0)
    light = await viewer.until(lambda f: bottom_mean(f) > 235, CALL_WAIT_S)
    await client.close(end_session=False)
    await wait_until(lambda: not server.connections)
    # The WebSocket left; the WHIP resource still holds the session: no grace period.
    await viewer.frames(3, CALL_WAIT_S)
    [session] = server.sessions
    held = session.expires_at is None
    # A client that ends the session (session.close) ends its WHIP and WHEP resources.
    async with await LivegenClient.connect(ws_url(server), resume=resume):
        pass
    await wait_until(lambda: len(server.media) == 0)
    gone = await request("DELETE", publisher.resource_url)
    await viewer.hang_up()
    await publisher.hang_up()

    assert resumed and held
    assert bottom_mean(light) > 235
    assert gone.status == 404
    assert not list(server.sessions)


def resources() -> tuple[int, int, int]:
    return udp_sockets(), len(asyncio.all_tasks()), native_threads()


async def test_delete_frees_the_session_the_call_and_its_sockets(start_server):
    server = await start_server(ShadingPipeline())
    warm = await Publisher.start(base(server))  # executors reach their working size
    await warm.frames(1, CALL_WAIT_S)
    await warm.delete()
    await wait_until(lambda: not list(server.sessions))
    before = resources()
    publisher = await Publisher.start(base(server))
    await publisher.frames(1, CALL_WAIT_S)
    viewer = await Viewer.watch(base(server), publisher.session_id, publisher.track)
    await viewer.frames(1, CALL_WAIT_S)

    answer = await publisher.delete()
    await viewer.hang_up()
    await wait_until(
        lambda: all(now <= then for now, then in zip(resources(), before, strict=True))
    )

    assert answer.status == 200
    assert not list(server.sessions)
    assert len(server.media) == 0  # the viewer went with the session
    again = await request("DELETE", publisher.resource_url)
    assert again.status == 404


async def test_an_offer_without_candidates_connects_with_candidates_trickled_by_patch(
    start_server,
):
    server = await start_server(ShadingPipeline())
    pc = RTCPeerConnection()
    track = MarkedTrack()
    pc.addTransceiver(track, direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    full = pc.localDescription.sdp
    bare = "".join(line + "\r\n" for line in full.splitlines() if "a=candidate" not in line)
    bare = bare.replace("a=end-of-candidates\r\n", "")
    created = await request("POST", f"{base(server)}/whip", bare, sdp_headers())
    assert created.status == 201, created.text
    url = base(server) + created.headers["Location"]
    ufrag = next(line for line in full.splitlines() if line.startswith("a=ice-ufrag:"))
    pwd = next(line for line in full.splitlines() if line.startswith("a=ice-pwd:"))
    candidates = [line for line in full.splitlines() if line.startswith("a=candidate:")]
    fragment = "\r\n".join([ufrag, pwd, "a=mid:0", *candidates, "a=end-of-candidates", ""])
    headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    mismatch = await request("PATCH", url, fragment, {**headers, "If-Match": '"stale"'})
    patched = await request(
        "PATCH", url, fragment, {**headers, "If-Match": created.headers["ETag"]}
    )
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(created.text, "answer"))
    [resource] = server.media._resources.values()
    await wait_until(lambda: resource.call.connected)
    await pc.close()
    await request("DELETE", url)

    assert mismatch.status == 412
    assert patched.status == 204


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({"Content-Type": "text/plain"}, "v=0\r\n", 415, "Content-Type: application/sdp"),
        ({"Content-Type": "application/sdp"}, "hello", 400, "not an SDP session description"),
        ({"Content-Type": "application/sdp"}, "", 400, "the body is empty"),
        ({"Content-Type": "application/sdp"}, "x" * (65 * 1024), 413, "the limit is"),
    ],
    ids=["content-type", "not-sdp", "empty", "huge"],
)
async def test_a_bad_post_gets_its_status_and_a_reason(start_server, headers, body, status, says):
    server = await start_server(ShadingPipeline())
    answer = await request("POST", f"{base(server)}/whip", body, headers)

    assert answer.status == status
    assert says in answer.text
    assert not list(server.sessions)


async def test_an_offer_with_no_video_is_not_acceptable(start_server):
    server = await start_server(ShadingPipeline())
    pc = RTCPeerConnection()
    pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await request("POST", f"{base(server)}/whip", pc.localDescription.sdp, sdp_headers())
    await pc.close()

    assert answer.status == 406
    assert "the offer has no video" in answer.text
    assert not list(server.sessions)


async def test_unknown_resources_methods_and_sessions(start_server):
    server = await start_server(ShadingPipeline())
    url = base(server)
    patch = await request(
        "PATCH", f"{url}/whip/nope", "a=end-of-candidates\r\n", {"Content-Type": "x"}
    )
    delete = await request("DELETE", f"{url}/whip/nope")
    get = await request("GET", f"{url}/whip")
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    whep = await request("POST", f"{url}/whep/nobody", pc.localDescription.sdp, sdp_headers())
    await pc.close()

    assert (patch.status, delete.status, whep.status) == (404, 404, 404)
    assert get.status == 405 and get.headers["Allow"] == "POST, OPTIONS"
    assert "no session 'nobody'" in whep.text


async def test_params_in_the_query_are_checked_as_params_update(start_server):
    server = await start_server(ShadingPipeline())
    publisher = Publisher(MarkedTrack())
    publisher.pc.addTransceiver(publisher.track, direction="sendonly")
    await publisher.pc.setLocalDescription(await publisher.pc.createOffer())
    offer = publisher.pc.localDescription.sdp
    url = f"{base(server)}/whip"
    bad_type = await request("POST", f"{url}?strength=lots", offer, sdp_headers())
    out_of_range = await request("POST", f"{url}?strength=2", offer, sdp_headers())
    unknown = await request("POST", f"{url}?colour=red", offer, sdp_headers())
    await publisher.pc.close()

    assert (bad_type.status, out_of_range.status, unknown.status) == (400, 400, 400)
    assert "param 'strength' must be a number" in bad_type.text
    assert "param 'strength' must be in [0.0, 1.0], got 2.0" in out_of_range.text
    assert "unknown param 'colour'" in unknown.text
    assert not list(server.sessions)


async def test_options_answers_cors_and_the_ice_servers(start_server):
    servers = '[{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}]'
    server = await start_server(ShadingPipeline(), ice_servers=servers)
    origin = f"http://127.0.0.1:{server.port}"
    answer = await request(
        "OPTIONS",
        f"{base(server)}/whip",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    foreign = await request("OPTIONS", f"{base(server)}/whip", headers={"Origin": "http://evil"})

    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]
    assert answer.headers["Accept-Post"] == "application/sdp"
    assert answer.headers["Link"] == (
        '<turn:127.0.0.1:3478>; rel="ice-server"; username="u"; credential="c"; '
        'credential-type="password"'
    )
    assert foreign.status == 403 and "--allowed-origins http://evil" in foreign.text


async def test_auth_takes_a_bearer_key_or_token_and_refuses_others(start_server):
    server = await start_server(ShadingPipeline(), api_keys=API_KEY, auth="on")
    pc = RTCPeerConnection()
    pc.addTransceiver(MarkedTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    url = f"{base(server)}/whip"
    missing = await request("POST", url, offer, sdp_headers())
    wrong = await request("POST", url, offer, sdp_headers("not-a-token"))
    fal_only = mint_token(API_KEY, ["someone/app"], 60)
    other_app = await request("POST", url, offer, sdp_headers(fal_only))
    await pc.close()
    token = mint_token(API_KEY, ["livegen"], 60)
    publisher = await Publisher.start(base(server), sendrecv=False, token=token)
    viewer_refused = await request(
        "POST", f"{base(server)}/whep/{publisher.session_id}", offer, sdp_headers()
    )
    delete_refused = await request("DELETE", publisher.resource_url)
    deleted = await publisher.delete(token=API_KEY)

    assert missing.status == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
    assert wrong.status == 401
    assert other_app.status == 403 and "not /whip" in other_app.text
    assert viewer_refused.status == 401 and delete_refused.status == 401
    assert deleted.status == 200
    assert not list(server.sessions)


async def test_a_resource_whose_peer_never_connects_is_freed(start_server):
    server = await start_server(ShadingPipeline(), session_start_timeout_s=0.5)
    pc = RTCPeerConnection()
    pc.addTransceiver(MarkedTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    created = await request("POST", f"{base(server)}/whip", pc.localDescription.sdp, sdp_headers())
    await pc.close()  # never takes the answer: nothing connects
    await wait_until(lambda: len(server.media) == 0)

    assert created.status == 201
    assert not list(server.sessions)


async def test_a_publisher_that_closes_without_delete_is_cleaned_up(start_server):
    server = await start_server(ShadingPipeline())
    sockets_before = udp_sockets()
    publisher = await Publisher.start(base(server))
    await publisher.frames(1, CALL_WAIT_S)
    await publisher.hang_up()  # the peer connection goes; no DELETE
    await wait_until(lambda: len(server.media) == 0)
    await wait_until(lambda: udp_sockets() == sockets_before)

    assert not list(server.sessions)


async def test_a_websocket_session_with_a_call_is_watched_through_whep(start_server):
    server = await start_server(ShadingPipeline())
    async with await LivegenClient.connect(ws_url(server), params={"strength": 1.0}) as client:
        caller = await Caller.start(client)
        await caller.frames(1, CALL_WAIT_S)
        viewer = await Viewer.watch(base(server), client.started.session_id, caller.track)
        frame = await viewer.frames(3, CALL_WAIT_S)
        await caller.frames(3, CALL_WAIT_S)  # the caller's own video goes on beside the viewer
        await viewer.delete()
        await caller.hang_up()

    assert bottom_mean(frame) > 235


async def test_a_client_that_expects_100_continue_gets_it_before_sending_its_offer(
    start_server,
):
    # curl, which OBS posts with, holds a larger body back until "100 Continue".
    server = await start_server(ShadingPipeline())
    pc = RTCPeerConnection()
    pc.addTransceiver(MarkedTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST /whip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(offer)}\r\nExpect: 100-continue\r\n\r\n"
    )
    writer.write(head.encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    writer.write(offer)
    answer = await asyncio.wait_for(reader.read(), WAIT_S)  # Connection: close
    writer.close()
    await writer.wait_closed()
    await pc.close()
    location = answer.split(b"\r\nLocation: ")[1].split(b"\r\n")[0].decode()
    deleted = await request("DELETE", base(server) + location)

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert deleted.status == 200


async def test_a_bad_patch_gets_its_status_and_the_call_goes_on(start_server):
    server = await start_server(ShadingPipeline())
    publisher = await Publisher.start(base(server))
    await publisher.frames(1, CALL_WAIT_S)
    url, etag = publisher.resource_url, publisher.answer.headers["ETag"]
    fragment = {"Content-Type": "application/trickle-ice-sdpfrag"}
    restart = await request(
        "PATCH", url, "a=ice-ufrag:new\r\na=ice-pwd:newpassword\r\n", {**fragment, "If-Match": "*"}
    )
    new_credentials = await request("PATCH", url, "a=ice-ufrag:new\r\n", fragment)
    wrong_type = await request("PATCH", url, "a=end-of-candidates\r\n", {"If-Match": etag})
    not_sdp = await request("PATCH", url, "candidate 1 2 3", fragment)
    bad_candidate = await request("PATCH", url, "a=mid:0\r\na=candidate:garbage\r\n", fragment)
    await publisher.frames(3, CALL_WAIT_S)  # nothing above disturbed the call
    await publisher.delete()

    assert (restart.status, new_credentials.status) == (422, 422)
    assert "ICE restarts are not supported" in restart.text
    assert (
        wrong_type.status == 415 and wrong_type.headers["Accept-Patch"] == fragment["Content-Type"]
    )
    assert not_sdp.status == 400 and "is not an SDP line" in not_sdp.text
    assert bad_candidate.status == 400 and "is not an ICE candidate line" in bad_candidate.text
