"""HTTP routes on the WebSocket port: health, readiness, metrics, the web client."""

from __future__ import annotations

import asyncio
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livegen_client import LivegenClient
from pipelines.base import PipelineOptions
from pipelines.passthrough import PassthroughPipeline
from server.app import LivegenServer
from server.config import ServerConfig
from tests.helpers import WAIT_S, get, http_url, ws_url


class SlowWarmup(PassthroughPipeline):
    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))
        self.release = threading.Event()

    def warmup(self) -> None:
        self.release.wait(WAIT_S)


async def test_readyz_turns_ready_only_after_warmup_while_healthz_answers_at_once():
    pipeline = SlowWarmup()
    server = LivegenServer(ServerConfig(host="127.0.0.1", port=0), pipeline)
    await server.start()
    health_before = await get(http_url(server, "/healthz"))
    ready_before = await get(http_url(server, "/readyz"))
    pipeline.release.set()
    await asyncio.wait_for(server.ready.wait(), WAIT_S)
    ready_after = await get(http_url(server, "/readyz"))
    await server.drain()

    assert health_before[0] == 200
    assert ready_before[0] == 503
    assert ready_after[0] == 200


class ThreadRecording(PassthroughPipeline):
    """Records which threads warm it up and run its frames."""

    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))
        self.warmup_threads: set[int] = set()
        self.frame_threads: set[int] = set()

    def warmup(self) -> None:
        self.warmup_threads.add(threading.get_ident())

    def __call__(self, requests):
        self.frame_threads.add(threading.get_ident())
        return super().__call__(requests)


async def test_warmup_runs_on_the_thread_that_runs_the_frames(start_server, jpeg):
    # What a compiled model keeps per thread (CUDA graphs) must be recorded where it is used.
    pipeline = ThreadRecording()
    server = await start_server(pipeline)
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.send_frame(jpeg())
        await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert len(pipeline.warmup_threads) == 1
    assert pipeline.frame_threads == pipeline.warmup_threads


class FailingWarmup(PassthroughPipeline):
    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))

    def warmup(self) -> None:
        raise RuntimeError("no GPU memory left")


async def test_a_failed_warmup_stops_the_server_and_is_reported():
    server = LivegenServer(ServerConfig(host="127.0.0.1", port=0), FailingWarmup())
    await server.start()
    await asyncio.wait_for(server.wait_stopped(), WAIT_S)

    assert isinstance(server.warmup_error, RuntimeError)
    assert not server.ready.is_set()
    assert not any(t.name == "livegen-inference" for t in threading.enumerate())


async def test_metrics_count_frames_and_stage_latencies(start_server, jpeg):
    server = await start_server()
    async with await LivegenClient.connect(ws_url(server)) as client:
        for seed in range(3):
            await client.send_frame(jpeg(seed=seed))
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        status, content_type, body = await get(http_url(server, "/metrics"))
    text = body.decode()

    assert status == 200 and content_type.startswith("text/plain")
    assert "livegen_frames_in_total 3.0" in text
    assert "livegen_frames_out_total 3.0" in text
    assert 'livegen_sessions{state="attached"} 1.0' in text
    for stage in ("queue", "decode", "infer", "encode", "total"):
        assert f'livegen_stage_seconds_count{{stage="{stage}"}} 3.0' in text


async def test_root_serves_the_web_client(start_server):
    server = await start_server()
    status, content_type, body = await get(http_url(server, "/"))
    missing = await get(http_url(server, "/nope.js"))

    assert status == 200 and content_type.startswith("text/html")
    assert b"livegen" in body
    assert missing[0] == 404


async def test_websocket_on_an_unknown_path_is_refused(start_server):
    server = await start_server()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{server.port}/elsewhere")
    assert refused.value.response.status_code == 404


@pytest.mark.parametrize(
    ("allowed", "origin", "accepted"),
    [
        ("", None, True),  # not a browser
        ("", "http://127.0.0.1:{port}", True),  # a page livegen served
        ("", "https://evil.example", False),
        ("https://app.example", "https://app.example", True),
        ("https://app.example, https://b.example", "https://b.example", True),
        ("https://app.example", "https://evil.example", False),
        ("*", "https://anything.example", True),
    ],
)
async def test_browser_origins_other_than_livegens_own_need_allowing(
    start_server, allowed, origin, accepted
):
    server = await start_server(allowed_origins=allowed)
    headers = {} if origin is None else {"Origin": origin.format(port=server.port)}
    await check_handshake(server, headers, accepted)


async def check_handshake(server, headers: dict[str, str], accepted: bool) -> None:
    try:
        async with connect(ws_url(server), additional_headers=headers):
            status = 101
    except InvalidStatus as refused:
        status = refused.response.status_code

    assert status == (101 if accepted else 403)


async def test_a_plain_get_on_the_websocket_path_asks_for_an_upgrade(start_server):
    server = await start_server()
    status, _, body = await get(http_url(server, "/ws"))

    assert status == 426 and b"WebSocket" in body


async def test_a_rebound_domain_cannot_pass_as_livegens_own_origin(start_server):
    # DNS rebinding: the attacker's name resolves to this machine, so the browser
    # sends an Origin and a Host that agree. Only addresses and localhost count.
    server = await start_server()
    url = f"ws://evil.example:{server.port}/ws"
    headers = {"Origin": f"http://evil.example:{server.port}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, host="127.0.0.1", port=server.port, additional_headers=headers):
            pass
    async with connect(
        f"ws://localhost:{server.port}/ws",
        host="127.0.0.1",
        port=server.port,
        additional_headers={"Origin": f"http://localhost:{server.port}"},
    ):
        pass

    assert refused.value.response.status_code == 403
