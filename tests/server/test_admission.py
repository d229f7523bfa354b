"""Admission at the handshake, and the routing contract a proxy in front relies on.

A new connection to a replica with no room is refused with HTTP 503 and
``Retry-After`` before any WebSocket opens; a connection with ``sid`` (a resume)
never is. Session ids name the replica, and a ``sid`` that is malformed or
names another replica's session gets ``session_not_found`` on a connection that
stays usable for a fresh start.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livegen_client import LivegenClient
from livegen_client.client import with_sid
from stream.codec import decode_server_message, pack
from stream.errors import ErrorCode
from stream.messages import Error, SessionStart, SessionStarted
from tests.helpers import WAIT_S, get, http_url, wait_until, ws_url


async def test_session_ids_name_the_replica(start_server):
    server = await start_server(replica_id="gpu-3")
    client = await LivegenClient.connect(ws_url(server))
    await client.close()

    replica, dot, random_part = client.session_id.partition(".")
    assert (replica, dot) == ("gpu-3", ".") and len(random_part) >= 16


async def test_a_full_replica_refuses_new_connections_with_503_and_retry_after(start_server):
    server = await start_server(max_sessions=2)
    held = [await LivegenClient.connect(ws_url(server)) for _ in range(2)]

    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(server))
    status, _, body = await get(http_url(server, "/ws"))  # what a browser page can ask
    for client in held:
        await client.close()
    await wait_until(lambda: not server.attached)
    after = await LivegenClient.connect(ws_url(server))
    await after.close()

    answer = refused.value.response
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert b"server busy" in answer.body
    assert status == 503 and b"server busy" in body
    assert after.started.session_id  # room again once sessions end


async def test_connections_still_starting_count_against_the_maximum(start_server):
    server = await start_server(max_sessions=1)
    async with connect(ws_url(server)):
        await wait_until(lambda: len(server.connections) == 1)
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(server))

    assert refused.value.response.status_code == 503


async def test_a_detached_session_leaves_room_for_a_new_one(start_server):
    server = await start_server(max_sessions=1, session_grace_s=60)
    dropped = await LivegenClient.connect(ws_url(server))
    await dropped.close(end_session=False)
    await wait_until(lambda: not server.attached)

    newcomer = await LivegenClient.connect(ws_url(server))
    await newcomer.close()

    assert newcomer.session_id != dropped.session_id


async def test_a_resume_is_never_refused_for_capacity(start_server, jpeg):
    server = await start_server(max_sessions=1, session_grace_s=60)
    client = await LivegenClient.connect(ws_url(server))
    await client.send_frame(jpeg(seed=1))
    await asyncio.wait_for(client.next_frame(), WAIT_S)
    # A second connection for the same session while the first still holds it (a
    # client that noticed the drop before the server did): it takes the session over.
    resumed = await LivegenClient.connect(
        ws_url(server), resume=(client.session_id, client.resume_token)
    )
    await resumed.send_frame(jpeg(seed=2))
    frame = await asyncio.wait_for(resumed.next_frame(), WAIT_S)
    await resumed.close()

    assert resumed.started.resumed and frame.id == 2


async def test_the_python_client_resumes_with_sid_in_the_url(start_server):
    server = await start_server()
    client = await LivegenClient.connect(f"{ws_url(server)}?token=x")
    await client.websocket.close()
    await wait_until(lambda: not server.attached)

    await client.reconnect()
    (connection,) = server.connections
    await client.close()

    assert client.started.resumed
    assert connection.sid == client.session_id
    assert with_sid("ws://h/ws?token=x&sid=old", "r.new") == "ws://h/ws?token=x&sid=r.new"


async def test_the_python_client_waits_out_a_full_server(start_server, caplog):
    caplog.set_level(logging.INFO, "livegen_client")
    server = await start_server(max_sessions=1)
    holder = await LivegenClient.connect(ws_url(server))

    waiting = asyncio.create_task(LivegenClient.connect(ws_url(server), busy_timeout_s=WAIT_S))
    await wait_until(lambda: "server busy; retrying in 1 s" in caplog.text)
    with pytest.raises(InvalidStatus):
        await LivegenClient.connect(ws_url(server))  # without a busy timeout: at once
    await holder.close()
    client = await asyncio.wait_for(waiting, WAIT_S)
    await client.close()

    assert client.session_id != holder.session_id


async def test_the_python_client_starts_anew_when_its_session_is_gone(start_server):
    first = await start_server(replica_id="livegen-0")
    second = await start_server(replica_id="livegen-1")
    client = await LivegenClient.connect(ws_url(first), params={"prompt": "a heron"})
    await client.close(end_session=False)

    # The replica died; the proxy sends the resume to another one.
    client.url = ws_url(second)
    await client.reconnect()
    await client.close()

    assert not client.started.resumed and client.session_id.startswith("livegen-1.")
    assert client.started.params["prompt"] == "a heron"


@pytest.mark.parametrize(
    "sid",
    [
        "",
        "no-dot",
        "UPPER.case",
        "livegen-9.abcdef",  # another replica's session
        "x" * 4000,
        "%00%ff%2e",
        "livegen-0.",
    ],
)
async def test_a_bad_sid_gets_session_not_found_and_the_connection_starts_fresh(start_server, sid):
    server = await start_server(replica_id="livegen-0")
    async with connect(f"{ws_url(server)}?sid={sid}") as websocket:
        await websocket.send(pack(SessionStart(session_id=sid or "x", resume_token="t")))
        refused = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
        await websocket.send(pack(SessionStart(params={"prompt": "fresh"})))
        started = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))

    assert isinstance(refused, Error) and refused.code == ErrorCode.SESSION_NOT_FOUND
    assert not refused.fatal
    assert isinstance(started, SessionStarted) and not started.resumed
    assert started.session_id.startswith("livegen-0.")


async def test_a_resume_must_name_the_session_its_url_names(start_server):
    server = await start_server()
    owner = await LivegenClient.connect(ws_url(server))
    await owner.close(end_session=False)

    other = f"{server.config.replica_id}.other"
    async with connect(with_sid(ws_url(server), other)) as websocket:
        resume = SessionStart(session_id=owner.session_id, resume_token=owner.resume_token)
        await websocket.send(pack(resume))
        refused = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))

    assert isinstance(refused, Error) and refused.code == ErrorCode.SESSION_NOT_FOUND
    assert "URL's sid" in refused.message


@pytest.mark.parametrize("replica_id", ["Bad_Name", "a.b", ""])
async def test_a_bad_replica_id_is_refused_at_start(start_server, replica_id):
    with pytest.raises(ValueError, match="a-z, 0-9 and '-'"):
        await start_server(replica_id=replica_id)


async def test_a_draining_replica_refuses_with_retry_after(start_server):
    server = await start_server()
    server.draining = True  # as drain() sets first; the drain itself is tested elsewhere
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(server))
    finally:
        server.draining = False

    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"
