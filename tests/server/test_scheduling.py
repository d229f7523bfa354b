"""The inference thread: latest-wins under a slow pipeline, batching, failures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from websockets.asyncio.client import connect

from livegen_client import LivegenClient, ServerError
from stream.codec import decode_server_message, pack
from stream.errors import ErrorCode
from stream.messages import Frame, SessionStart
from tests.helpers import WAIT_S, FailingPipeline, GatedPipeline, encode, wait_until, ws_url


async def test_a_slow_pipeline_drops_stale_inputs_and_answers_the_newest(start_server, jpeg):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    async with await LivegenClient.connect(ws_url(server)) as client:
        await client.send_frame(jpeg(seed=0), frame_id=0)
        assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)
        for frame_id in range(1, 10):
            await client.send_frame(jpeg(seed=frame_id), frame_id=frame_id)
        await wait_until(lambda: server.metrics.frames_dropped.labels("input")._value.get() == 8)
        pipeline.gate.set()
        received = [await asyncio.wait_for(client.next_frame(), WAIT_S)]
        while received[-1].id != 9:
            received.append(await asyncio.wait_for(client.next_frame(), WAIT_S))

    assert pipeline.batches == [1, 1]  # frame 0, then straight to frame 9
    # The output of frame 0 may itself be replaced by 9's if both are ready before a send.
    assert [frame.id for frame in received] in ([0, 9], [9])
    assert received[-1].dropped == 8


async def test_ready_sessions_share_one_batched_pipeline_call(start_server, jpeg):
    pipeline = GatedPipeline()
    server = await start_server(pipeline)
    clients = [await LivegenClient.connect(ws_url(server)) for _ in range(4)]
    await clients[0].send_frame(jpeg(seed=0))
    assert await asyncio.to_thread(pipeline.entered.wait, WAIT_S)
    for client in clients[1:]:
        await client.send_frame(jpeg(seed=1))
    await wait_until(lambda: sum(bool(s.inbox) for s in server.sessions) == 3)
    pipeline.gate.set()
    frames = [await asyncio.wait_for(client.next_frame(), WAIT_S) for client in clients]
    for client in clients:
        await client.close()

    assert pipeline.batches == [1, 3]
    assert [frame.id for frame in frames] == [1, 1, 1, 1]


@pytest.mark.parametrize(("prompt", "words"), [("explode", "boom"), ("floats", "uint8")])
async def test_a_failing_batch_reports_to_its_sessions_and_the_server_goes_on(
    start_server, jpeg, prompt, words
):
    server = await start_server(FailingPipeline())
    async with await LivegenClient.connect(ws_url(server), params={"prompt": prompt}) as client:
        await client.send_frame(jpeg(seed=0), frame_id=5)
        try:
            await asyncio.wait_for(client.next_frame(), WAIT_S)
        except ServerError as error:
            failure = error
        await client.update_params(prompt="calm")
        await client.send_frame(jpeg(seed=0), frame_id=6)
        # The new params may first rerun frame 5's input (answered as 5), unless 6 wins.
        recovered = await asyncio.wait_for(client.next_frame(), WAIT_S)
        if recovered.id == 5:
            recovered = await asyncio.wait_for(client.next_frame(), WAIT_S)

    assert failure.code == ErrorCode.PIPELINE_FAILED and failure.frame_id == 5
    assert words in str(failure)
    assert recovered.id == 6


async def test_params_the_pipeline_refuses_are_an_error_and_keep_the_old_params(start_server, jpeg):
    server = await start_server(FailingPipeline())
    async with await LivegenClient.connect(ws_url(server), params={"prompt": "fine"}) as client:
        await client.update_params(prompt="forbidden")
        refusal = await asyncio.wait_for(client.recv(), WAIT_S)
        session = server.attached[client.session_id].session

    assert refusal.code == ErrorCode.INVALID_PARAMS and "forbidden" in refusal.message
    assert session.params.prompt == "fine"


async def test_a_client_that_stops_reading_gets_its_stale_outputs_replaced(start_server):
    server = await start_server()
    # Noise PNGs are big, so the socket buffers fill after a few outputs.
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    image = encode(noise, "PNG")
    websocket = await connect(ws_url(server), max_size=None, max_queue=1, compression=None)
    await websocket.send(pack(SessionStart(params={"output_format": "png"})))
    decode_server_message(await websocket.recv())
    (session,) = server.sessions

    for frame_id in range(1, 21):
        await websocket.send(pack(Frame(image=image, id=frame_id)))
        await wait_until(lambda: session.frames_in == frame_id)  # noqa: B023 - awaited here
        assert await asyncio.to_thread(server.worker.wait_idle, WAIT_S)
    received = []
    while not received or received[-1] != 20:
        message = decode_server_message(await asyncio.wait_for(websocket.recv(), WAIT_S))
        received.append(message.id)
    await websocket.close()

    dropped = server.metrics.frames_dropped.labels("output")._value.get()
    assert received == sorted(received) and len(received) < 20
    assert dropped == 20 - len(received)
    assert session.inbox.dropped == 0  # every input ran; only outputs were replaced
