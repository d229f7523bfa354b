"""Replicas that come and go behind the entry, while clients stream through it.

A replica killed with SIGKILL: its clients notice within a second, their
resumes get ``session_not_found`` and fresh sessions start on a live replica.
A replica drained with SIGTERM: its sessions hear ``session.closing``, close
with 1001, and new sessions go elsewhere. A replica added and the entry
reloaded: no live socket drops, new sessions reach the new replica, and every
resume still finds its owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from livegen_client import LivegenClient
from stream.errors import CloseCode
from stream.messages import FrameOut, SessionClosing
from tests.helpers import WAIT_S
from tests.scaleout.cluster import Cluster, haproxy_available
from tests.scaleout.test_entry import close_all, owner

pytestmark = pytest.mark.skipif(not haproxy_available(), reason="needs haproxy (tests/setup.sh)")

MAX_SESSIONS = 3


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, MAX_SESSIONS)
    try:
        cluster.start_replicas(2)
        cluster.start_entry()
        yield cluster
    finally:
        cluster.stop()


async def stream_until_dropped(
    client: LivegenClient, image: bytes, streaming: asyncio.Event
) -> float:
    """Send frames one after another until the connection drops; when it dropped.

    ``streaming`` is set once the first frame has come back.
    """
    try:
        while True:
            await client.send_frame(image)
            await asyncio.wait_for(client.next_frame(), WAIT_S)
            streaming.set()
    except ConnectionClosed:
        return time.monotonic()


async def test_a_killed_replicas_clients_notice_within_a_second_and_start_fresh(
    cluster, jpeg: Callable[..., bytes]
):
    clients = [await LivegenClient.connect(cluster.url) for _ in range(MAX_SESSIONS)]
    streaming = [asyncio.Event() for _ in clients]
    streams = [
        asyncio.create_task(stream_until_dropped(client, jpeg(seed=1), event))
        for client, event in zip(clients, streaming, strict=True)
    ]
    for event in streaming:
        await asyncio.wait_for(event.wait(), WAIT_S)

    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, cluster.replicas[0])
    noticed_at = await asyncio.wait_for(asyncio.gather(*streams), WAIT_S)
    old_ids = [client.session_id for client in clients]
    for client in clients:
        await client.reconnect()
    await clients[0].send_frame(jpeg(seed=2))
    frame = await asyncio.wait_for(clients[0].next_frame(), WAIT_S)
    await close_all(clients)

    assert {owner_id.partition(".")[0] for owner_id in old_ids} == {"livegen-0"}
    assert max(noticed_at) - killed_at < 1.0
    assert all(not client.started.resumed for client in clients)
    assert {owner(client) for client in clients} == {"livegen-1"}
    assert isinstance(frame, FrameOut)


async def test_a_drained_replica_closes_its_sessions_going_away_and_gets_no_new_ones(
    cluster, jpeg: Callable[..., bytes]
):
    clients = [await LivegenClient.connect(cluster.url) for _ in range(2)]
    for index, client in enumerate(clients):
        await client.send_frame(jpeg(seed=index))
        await asyncio.wait_for(client.next_frame(), WAIT_S)

    cluster.terminate(cluster.replicas[0])
    heard: list[list[object]] = []
    for client in clients:
        messages: list[object] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                messages.append(await asyncio.wait_for(client.recv(), WAIT_S))
        messages.append(closed.value.rcvd.code if closed.value.rcvd else None)
        heard.append(messages)
    newcomers = [await LivegenClient.connect(cluster.url) for _ in range(2)]
    await close_all(newcomers)

    for messages in heard:
        assert isinstance(messages[0], SessionClosing) and messages[0].reason == "shutdown"
        assert messages[-1] == CloseCode.GOING_AWAY
    assert {owner(client) for client in newcomers} == {"livegen-1"}
    assert await asyncio.to_thread(cluster.replicas[0].process.wait, WAIT_S) == 0


async def test_a_replica_added_and_the_entry_reloaded_drops_no_socket_and_resumes_find_owners(
    cluster, jpeg: Callable[..., bytes]
):
    live = [await LivegenClient.connect(cluster.url) for _ in range(MAX_SESSIONS + 1)]

    await asyncio.to_thread(cluster.start_replicas, 1)
    await asyncio.to_thread(cluster.reload_entry)
    # The old worker still carries the live sockets: each sends and gets its frame back.
    for index, client in enumerate(live):
        await client.send_frame(jpeg(seed=index))
        await asyncio.wait_for(client.next_frame(), WAIT_S)
    # The new worker counts none of them: the full livegen-0 refuses the newcomer
    # itself (503) and the entry tries the next replica.
    newcomer = await LivegenClient.connect(cluster.url)
    everyone = [*live, newcomer]
    owners = {client.session_id: owner(client) for client in everyone}
    for client in everyone:
        await client.websocket.close()
    for client in everyone:
        await client.reconnect()
    await close_all(everyone)

    assert owner(newcomer) == "livegen-1"
    assert all(client.started.resumed for client in everyone)
    assert {client.session_id: owner(client) for client in everyone} == owners
    assert "livegen-2 127.0.0.1" in (cluster.work / "haproxy.cfg").read_text()
