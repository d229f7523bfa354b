"""Device memory: a batch that runs out of it is split, not lost; --max-sessions auto.

The pipeline here runs out of memory the way CUDA's allocator does, by raising
torch's own ``torch.cuda.OutOfMemoryError``, once a batch's input pixels pass a
budget; a real server serves it to real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import numpy as np
import torch

import server.worker
from livegen_client import LivegenClient, ServerError
from pipelines.base import FrameRequest
from server.app import LivegenServer
from server.config import ServerConfig
from stream.errors import ErrorCode
from tests.conftest import TinyModels
from tests.helpers import WAIT_S, GatedPipeline, get, http_url, wait_until, ws_url

SMALL_PX = 32  # a 32x32 frame costs 1,024 pixels of the budget


class OutOfMemoryPipeline(GatedPipeline):
    """Gated passthrough whose device holds ``budget_pixels`` of input at once.

    A batch over the budget raises ``torch.cuda.OutOfMemoryError``. Each session
    caches a tensor, as a diffusion pipeline's state does.
    """

    def __init__(self, budget_pixels: int) -> None:
        super().__init__()
        self.budget_pixels = budget_pixels

    def new_state(self) -> torch.Tensor:
        return torch.zeros(256)

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        outputs = super().__call__(requests)  # records the batch; waits for the gate
        pixels = sum(output.shape[0] * output.shape[1] for output in outputs)
        if pixels > self.budget_pixels:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {pixels} pixels\nmore detail"
            )
        return outputs


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} is not in /metrics"
    return float(match.group(1))


async def metrics_text(server) -> str:
    status, _, body = await get(http_url(server, "/metrics"))
    assert status == 200
    return body.decode()


async def run_one_batch(server, pipeline, clients, frames: Sequence[bytes]) -> None:
    """Hold the pipeline on a first frame, so that ``frames`` (one per client) form one batch."""
    await clients[0].send_frame(frames[0])
    assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)
    for client, frame in zip(clients[1:], frames[1:], strict=True):
        await client.send_frame(frame)
    await wait_until(lambda: sum(bool(s.inbox) for s in server.sessions) == len(clients) - 1)
    pipeline.gate.set()


async def test_a_batch_out_of_memory_is_split_and_every_frame_arrives(start_server, jpeg):
    pipeline = OutOfMemoryPipeline(budget_pixels=2 * SMALL_PX * SMALL_PX)
    server = await start_server(pipeline)
    clients = [await LivegenClient.connect(ws_url(server)) for _ in range(5)]
    small = jpeg(seed=1, width=SMALL_PX, height=SMALL_PX)
    await run_one_batch(server, pipeline, clients, [small] * 5)
    frames = [await asyncio.wait_for(client.next_frame(), WAIT_S) for client in clients]
    text = await metrics_text(server)
    for client in clients:
        await client.close()

    # The first frame alone, then the four that waited: 4 -> 2 + 2.
    assert pipeline.batches == [1, 4, 2, 2]
    assert [(frame.id, frame.width) for frame in frames] == [(1, SMALL_PX)] * 5
    assert metric(text, 'livegen_out_of_memory_total{outcome="split"}') == 1
    assert metric(text, 'livegen_out_of_memory_total{outcome="refused"}') == 0


async def test_batches_stay_at_the_size_that_fit_then_grow_back(start_server, jpeg, monkeypatch):
    monkeypatch.setattr(server.worker, "RECOVER_AFTER_BATCHES", 3)
    pipeline = OutOfMemoryPipeline(budget_pixels=2 * SMALL_PX * SMALL_PX)
    server_ = await start_server(pipeline)
    clients = [await LivegenClient.connect(ws_url(server_)) for _ in range(5)]
    small = jpeg(seed=1, width=SMALL_PX, height=SMALL_PX)
    for _ in range(3):
        pipeline.gate.clear()
        pipeline.entered.clear()
        await run_one_batch(server_, pipeline, clients, [small] * 5)
        for client in clients:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
    text = await metrics_text(server_)
    for client in clients:
        await client.close()

    assert pipeline.batches == [
        *(1, 4, 2, 2),  # out of memory: halves, and batches of at most 2 from now on
        *(1, 2, 2),  # no failed try; the third batch of 2 that fits lifts the limit
        *(1, 4, 2, 2),  # so 4 are tried again
    ]
    assert metric(text, 'livegen_out_of_memory_total{outcome="split"}') == 2


async def test_only_a_request_too_big_alone_is_refused_and_the_others_go_on(start_server, jpeg):
    pipeline = OutOfMemoryPipeline(budget_pixels=3 * SMALL_PX * SMALL_PX)
    server = await start_server(pipeline)
    clients = [await LivegenClient.connect(ws_url(server)) for _ in range(4)]
    small = jpeg(seed=1, width=SMALL_PX, height=SMALL_PX)
    big = jpeg(seed=2, width=4 * SMALL_PX, height=SMALL_PX)  # four times the budget's share
    await run_one_batch(server, pipeline, clients, [small, small, big, small])
    served = [await asyncio.wait_for(clients[i].next_frame(), WAIT_S) for i in (0, 1, 3)]
    try:
        await asyncio.wait_for(clients[2].next_frame(), WAIT_S)
    except ServerError as error:
        refusal = error
    # The refused session goes on with a frame that fits; so does the server.
    await clients[2].send_frame(small)
    recovered = await asyncio.wait_for(clients[2].next_frame(), WAIT_S)
    status, _, _ = await get(http_url(server, "/readyz"))
    text = await metrics_text(server)
    for client in clients:
        await client.close()

    # 3 -> 1 + 2 -> 1 + 1: the big one, alone after memory was freed, is refused;
    # then the frame that fits.
    assert pipeline.batches == [1, 3, 1, 2, 1, 1, 1]
    assert [frame.id for frame in served] == [1, 1, 1]
    assert refusal.code == ErrorCode.PIPELINE_FAILED and refusal.frame_id == 1
    assert "out of device memory: this 128x32 frame does not fit" in str(refusal)
    assert "smaller width and height" in str(refusal)
    assert "Tried to allocate 4096 pixels" in str(refusal) and "more detail" not in str(refusal)
    assert recovered.id == 2
    assert status == 200
    assert metric(text, 'livegen_out_of_memory_total{outcome="split"}') == 2
    assert metric(text, 'livegen_out_of_memory_total{outcome="retried"}') == 0
    assert metric(text, 'livegen_out_of_memory_total{outcome="refused"}') == 1
    assert metric(text, 'livegen_errors_total{code="pipeline_failed"}') == 1


async def test_out_of_memory_drops_the_cached_tensors_of_detached_sessions_only(start_server, jpeg):
    pipeline = OutOfMemoryPipeline(budget_pixels=SMALL_PX * SMALL_PX)
    server = await start_server(pipeline)
    small = jpeg(seed=1, width=SMALL_PX, height=SMALL_PX)
    pipeline.gate.set()
    leaving = await LivegenClient.connect(ws_url(server))
    await leaving.send_frame(small)
    await asyncio.wait_for(leaving.next_frame(), WAIT_S)
    await leaving.close(end_session=False)
    staying = await LivegenClient.connect(ws_url(server))
    await staying.send_frame(small)
    await asyncio.wait_for(staying.next_frame(), WAIT_S)
    held = {session.id: session for session in server.sessions}
    await wait_until(lambda: held[leaving.session_id].expires_at is not None)

    # A frame twice the budget, alone: memory is freed, it is tried once more, refused.
    with_big = jpeg(seed=2, width=2 * SMALL_PX, height=SMALL_PX)
    await staying.send_frame(with_big)
    try:
        await asyncio.wait_for(staying.next_frame(), WAIT_S)
    except ServerError as error:
        assert error.code == ErrorCode.PIPELINE_FAILED
    detached_state = held[leaving.session_id].pipeline_state
    attached_state = held[staying.session_id].pipeline_state
    # The detached session resumes, cold, and is served.
    await leaving.reconnect()
    await leaving.send_frame(small)
    resumed = await asyncio.wait_for(leaving.next_frame(), WAIT_S)
    text = await metrics_text(server)
    await leaving.close()
    await staying.close()

    assert detached_state is None
    assert isinstance(attached_state, torch.Tensor)
    assert leaving.started.resumed and resumed.id == 2
    assert pipeline.batches == [1, 1, 1, 1, 1]
    assert metric(text, "livegen_session_states_freed_total") == 1
    assert metric(text, 'livegen_out_of_memory_total{outcome="retried"}') == 1
    assert metric(text, 'livegen_out_of_memory_total{outcome="refused"}') == 1


async def test_memory_pressure_and_the_session_limit_are_in_the_metrics(start_server):
    server = await start_server(max_sessions=7)
    text = await metrics_text(server)

    assert metric(text, "livegen_max_sessions") == 7
    # On a CPU: the host's memory.
    assert 0.0 < metric(text, "livegen_memory_pressure") < 1.0
    assert (
        0
        < metric(text, 'livegen_memory_bytes{kind="available"}')
        < metric(text, 'livegen_memory_bytes{kind="total"}')
    )
    assert metric(text, 'livegen_memory_bytes{kind="process"}') > 10 * 2**20


async def test_max_sessions_auto_on_a_cpu_measures_a_session_and_keeps_the_default(
    tiny_models: TinyModels, caplog
):
    caplog.set_level("INFO", logger="server.app")
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        pipeline="sd-turbo",
        model=str(tiny_models.sd_turbo),
        device="cpu",
        max_sessions="auto",
        codec_threads=2,
    )
    server = LivegenServer(config)
    await server.start()
    try:
        # Warm-up, then one more 512 px frame to measure: longer than WAIT_S on a busy CPU.
        await asyncio.wait_for(server.ready.wait(), 6 * WAIT_S)
        text = await metrics_text(server)
    finally:
        await asyncio.wait_for(server.drain(), WAIT_S)

    assert server.sessions.max_sessions == 64
    assert metric(text, "livegen_max_sessions") == 64
    # One 512x512 image-to-image session caches at least its input's and output's pixels.
    assert metric(text, "livegen_session_state_bytes") >= 2 * 512 * 512 * 3
    assert any(
        "--max-sessions auto: 64" in r.message and "no memory of its own" in r.message
        for r in caplog.records
    )
