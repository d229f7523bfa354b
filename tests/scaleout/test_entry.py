"""Three ``livegen serve`` replicas behind a real HAProxy with the rendered config.

New sessions pack onto the first replica with room, resumes find their owner
through the entry, every replica full gives 503 with ``Retry-After``, a replica
filled behind HAProxy's back answers 503 itself and the entry tries the next,
and a WebRTC call signalled through the entry sends its media straight to the
replica, as WHIP and WHEP requests reach the replica their path names. The
tests that kill, drain or add replicas are in test_changes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livegen_client import LivegenClient
from stream.codec import decode_server_message, pack
from stream.errors import ErrorCode
from stream.messages import Error, SessionStart, SessionStarted
from tests.helpers import WAIT_S
from tests.rtc import Caller
from tests.scaleout.cluster import QUEUE_TIMEOUT_S, Cluster, haproxy_available
from tests.whip import Publisher, Viewer

pytestmark = pytest.mark.skipif(not haproxy_available(), reason="needs haproxy (tests/setup.sh)")

MAX_SESSIONS = 40  # per replica: room for the 100 resumes on three
CALL_WAIT_S = 20.0  # ICE, DTLS and the first VP8 frames, on a loaded machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), MAX_SESSIONS)
    try:
        cluster.start_replicas(3)
        cluster.start_entry()
        yield cluster
    finally:
        cluster.stop()


def owner(client: LivegenClient) -> str:
    return client.session_id.partition(".")[0]


async def close_all(clients: list[LivegenClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def test_new_sessions_fill_the_first_replica_then_the_next(cluster, jpeg):
    clients = [await LivegenClient.connect(cluster.url) for _ in range(MAX_SESSIONS + 2)]
    await clients[-1].send_frame(jpeg(seed=1))
    frame = await asyncio.wait_for(clients[-1].next_frame(), WAIT_S)
    await close_all(clients)

    assert [owner(c) for c in clients] == ["livegen-0"] * MAX_SESSIONS + ["livegen-1"] * 2
    assert frame.id == 1


async def test_a_hundred_sessions_dropped_and_resumed_through_the_entry_find_their_owner(
    cluster, jpeg
):
    clients = list(await asyncio.gather(*(LivegenClient.connect(cluster.url) for _ in range(100))))
    owners = {client.session_id: owner(client) for client in clients}
    for client in clients:
        await client.websocket.close()  # the network drops; the sessions wait to resume

    await asyncio.gather(*(client.reconnect() for client in clients))
    await clients[0].send_frame(jpeg(seed=2))
    frame = await asyncio.wait_for(clients[0].next_frame(), WAIT_S)
    await close_all(clients)

    assert all(client.started.resumed for client in clients)
    assert {client.session_id: owner(client) for client in clients} == owners
    assert set(owners.values()) == {"livegen-0", "livegen-1", "livegen-2"}
    assert frame.id == 1


async def test_every_replica_full_gives_503_with_retry_after_within_the_queue_timeout(cluster):
    clients = list(
        await asyncio.gather(*(LivegenClient.connect(cluster.url) for _ in range(3 * MAX_SESSIONS)))
    )
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        await connect(cluster.url)
    waited_s = time.monotonic() - started
    # Bypassing the entry: the replica's own handshake refuses the same way.
    with pytest.raises(InvalidStatus) as refused_directly:
        await connect(cluster.replicas[0].url)
    await close_all(clients)

    answer = refused.value.response
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert b"server busy" in answer.body
    assert QUEUE_TIMEOUT_S - 0.05 <= waited_s <= QUEUE_TIMEOUT_S + 1.0
    direct = refused_directly.value.response
    assert direct.status_code == 503 and direct.headers["Retry-After"] == "1"


async def test_a_replica_filled_behind_the_entrys_back_refuses_and_the_entry_tries_the_next(
    cluster,
):
    # Sessions made straight on livegen-0: HAProxy counts none of them.
    direct = [await LivegenClient.connect(cluster.replicas[0].url) for _ in range(MAX_SESSIONS)]
    through_entry = await LivegenClient.connect(cluster.url)
    await close_all([*direct, through_entry])

    assert owner(through_entry) == "livegen-1"


async def test_a_client_waits_for_room_and_gets_in_when_a_session_ends(cluster):
    clients = list(
        await asyncio.gather(*(LivegenClient.connect(cluster.url) for _ in range(3 * MAX_SESSIONS)))
    )
    waiting = asyncio.create_task(LivegenClient.connect(cluster.url, busy_timeout_s=WAIT_S))
    leaving = clients.pop()
    await leaving.close()
    newcomer = await asyncio.wait_for(waiting, WAIT_S)
    await close_all([*clients, newcomer])

    assert owner(newcomer) == owner(leaving)


@pytest.mark.parametrize(
    "sid", ["", "garbage", "livegen-9.x", "livegen-0.", "%ff%00", "a" * 4000, "livegen-1.%2e%2e"]
)
async def test_no_sid_breaks_the_entry_and_a_bad_one_starts_fresh(cluster, sid):
    async with connect(f"{cluster.url}?sid={sid}") as websocket:
        await websocket.send(pack(SessionStart(session_id=sid or "x.y", resume_token="t")))
        refused = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
        await websocket.send(pack(SessionStart()))
        started = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))

    assert isinstance(refused, Error) and refused.code == ErrorCode.SESSION_NOT_FOUND
    assert isinstance(started, SessionStarted) and not started.resumed


def test_the_rendered_config_passes_haproxy_check(cluster):
    config = Path(cluster.work / "haproxy.cfg").read_text()

    assert "balance first" in config and "option http-no-delay" in config
    for replica in cluster.replicas:
        assert f"server {replica.replica_id} 127.0.0.1:{replica.port}" in config
        rule = f"use-server {replica.replica_id} if {{ urlp(sid) -m beg {replica.replica_id}. }}"
        assert rule in config


def udp_ports_of(pid: int) -> set[int]:
    """The UDP ports process ``pid`` has open (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


async def test_a_call_signalled_through_the_entry_sends_media_straight_to_the_replica(cluster):
    async with await LivegenClient.connect(cluster.url) as client:
        caller = await Caller.start(client)
        frame = await caller.frames(5, CALL_WAIT_S)
        (transceiver,) = caller.pc.getTransceivers()
        pairs = transceiver.receiver.transport.transport._connection._nominated.values()
        remote_ports = {pair.remote_candidate.port for pair in pairs}
        replica = next(r for r in cluster.replicas if r.replica_id == owner(client))
        replica_ports = udp_ports_of(replica.process.pid)
        await caller.hang_up()

    assert frame.shape == (256, 256, 3)
    assert remote_ports and remote_ports <= replica_ports  # the replica's own UDP sockets
    assert cluster.entry_port not in remote_ports


async def test_whip_and_whep_requests_through_the_entry_reach_the_sessions_replica(cluster):
    replica = cluster.replicas[1]
    publisher = await Publisher.start(f"http://127.0.0.1:{replica.port}", sendrecv=False)
    entry = f"http://127.0.0.1:{cluster.entry_port}"
    # The viewer's offer and its DELETE, and the publisher's DELETE, all go to the entry.
    viewer = await Viewer.watch(entry, publisher.session_id, publisher.track)
    frame = await viewer.frames(3, CALL_WAIT_S)
    viewer_deleted = await viewer.delete()
    location = publisher.answer.headers["Location"]
    publisher.resource_url = entry + location
    publisher_deleted = await publisher.delete()

    assert publisher.session_id.startswith("livegen-1.")
    assert location.startswith(f"/whip/{publisher.session_id}/")
    assert frame.shape == (256, 256, 3)
    assert viewer_deleted.status == 200 and publisher_deleted.status == 200
