"""Sessions outlive their socket: resume, take-over, expiry and explicit close."""

from __future__ import annotations

import asyncio
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegen_client import LivegenClient, ServerError
from stream.codec import decode_server_message, pack
from stream.errors import CloseCode, ErrorCode
from stream.messages import Error, SessionStart
from tests.helpers import WAIT_S, FailingPipeline, wait_until, ws_url


async def test_reconnect_resumes_the_session_with_its_params(start_server, jpeg):
    server = await start_server()
    client = await LivegenClient.connect(ws_url(server), params={"prompt": "a red fox"})
    session_id = client.session_id
    await client.send_frame(jpeg(seed=1))
    await asyncio.wait_for(client.next_frame(), WAIT_S)
    await client.websocket.close()  # the network drops; the session is not ended
    await wait_until(lambda: not server.attached)

    await client.reconnect()
    await client.send_frame(jpeg(seed=2))
    frame = await asyncio.wait_for(client.next_frame(), WAIT_S)
    await client.close()

    assert client.session_id == session_id and client.started.resumed
    assert client.started.params["prompt"] == "a red fox"
    assert frame.id == 2  # the input sequence carried on across connections


async def test_resume_with_a_wrong_token_is_refused_and_the_connection_can_start_anew(
    start_server,
):
    server = await start_server()
    client = await LivegenClient.connect(ws_url(server))
    await client.close(end_session=False)

    with pytest.raises(ServerError) as refused:
        await LivegenClient.connect(ws_url(server), resume=(client.session_id, "not-the-token"))
    fresh = await LivegenClient.connect(ws_url(server))
    await fresh.close()

    assert refused.value.code == ErrorCode.SESSION_NOT_FOUND and not refused.value.fatal
    assert fresh.session_id != client.session_id


async def test_resume_on_a_second_connection_takes_the_session_over(start_server, jpeg):
    server = await start_server()
    first = await LivegenClient.connect(ws_url(server))
    second = await LivegenClient.connect(
        ws_url(server), resume=(first.session_id, first.resume_token)
    )

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(first.recv(), WAIT_S)
    await second.send_frame(jpeg(seed=1))
    frame = await asyncio.wait_for(second.next_frame(), WAIT_S)
    await second.close()

    assert closed.value.rcvd.code == CloseCode.SESSION_TAKEN_OVER
    assert frame.id == 1


async def test_a_detached_session_expires_after_the_grace_period(start_server):
    server = await start_server(session_grace_s=0.2)
    client = await LivegenClient.connect(ws_url(server))
    await client.close(end_session=False)
    await wait_until(lambda: len(server.sessions) == 0)

    with pytest.raises(ServerError) as refused:
        await LivegenClient.connect(ws_url(server), resume=(client.session_id, client.resume_token))
    assert refused.value.code == ErrorCode.SESSION_NOT_FOUND


async def test_session_close_frees_the_session_at_once(start_server):
    server = await start_server(session_grace_s=60)
    client = await LivegenClient.connect(ws_url(server))
    await client.close()  # sends session.close
    await wait_until(lambda: len(server.sessions) == 0)

    with pytest.raises(ServerError):
        await LivegenClient.connect(ws_url(server), resume=(client.session_id, client.resume_token))


async def test_a_session_past_the_maximum_that_slipped_past_the_handshake_gets_try_again_later(
    start_server,
):
    server = await start_server(max_sessions=2)
    held = [await LivegenClient.connect(ws_url(server)) for _ in range(2)]

    # A sid passes the handshake's capacity check (it says "resume"), but this
    # connection starts a new session: the race the handshake cannot see.
    async with connect(f"{ws_url(server)}?sid=nobody.here") as websocket:
        await websocket.send(pack(SessionStart()))
        refused = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), WAIT_S)
    for client in held:
        await client.close()

    assert isinstance(refused, Error) and refused.code == ErrorCode.SERVER_BUSY and refused.fatal
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.TRY_AGAIN_LATER


async def test_a_refused_resume_leaves_the_session_detached_to_expire(start_server):
    server = await start_server(FailingPipeline(), session_grace_s=0.2)
    client = await LivegenClient.connect(ws_url(server))
    await client.close(end_session=False)

    with pytest.raises(ServerError) as refused:
        resume = (client.session_id, client.resume_token)
        await LivegenClient.connect(ws_url(server), resume=resume, params={"prompt": "forbidden"})
    await wait_until(lambda: len(server.sessions) == 0)

    assert refused.value.code == ErrorCode.INVALID_PARAMS


async def test_fifty_sessions_come_and_go_without_leaving_anything_behind(start_server, jpeg):
    server = await start_server(session_grace_s=0.1)
    warm = await LivegenClient.connect(ws_url(server))  # start the codec threads once
    await warm.send_frame(jpeg(seed=0))
    await asyncio.wait_for(warm.next_frame(), WAIT_S)
    await warm.close()
    await wait_until(lambda: not server.connections)
    tasks, threads = len(asyncio.all_tasks()), threading.active_count()

    for cycle in range(50):
        client = await LivegenClient.connect(ws_url(server))
        await client.send_frame(jpeg(seed=cycle))
        await asyncio.wait_for(client.next_frame(), WAIT_S)
        # Half end their session, half just drop the socket and expire.
        await client.close(end_session=cycle % 2 == 0)
    await wait_until(lambda: not server.sessions and not server.connections)

    assert not server.attached
    assert len(asyncio.all_tasks()) == tasks
    assert threading.active_count() == threads


async def test_a_connection_that_never_starts_a_session_is_closed(start_server):
    server = await start_server(session_start_timeout_s=0.2)
    async with connect(ws_url(server)) as websocket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), WAIT_S)

    assert closed.value.rcvd.code == CloseCode.POLICY_VIOLATION
    assert "no session started" in closed.value.rcvd.reason


async def test_a_full_server_makes_room_by_evicting_dropped_sessions(start_server):
    server = await start_server(max_sessions=2, session_grace_s=60)
    dropped = [await LivegenClient.connect(ws_url(server)) for _ in range(2)]
    for client in dropped:
        await client.close(end_session=False)
    await wait_until(lambda: not server.attached)

    newcomer = await LivegenClient.connect(ws_url(server))
    with pytest.raises(ServerError) as refused:
        first = dropped[0]
        await LivegenClient.connect(ws_url(server), resume=(first.session_id, first.resume_token))
    await newcomer.close()

    assert refused.value.code == ErrorCode.SESSION_NOT_FOUND  # it made room for the newcomer
