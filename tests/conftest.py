"""Fixtures shared by every test package: test frames and a real server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pipelines import Pipeline
from server.app import LivegenServer
from server.config import ServerConfig
from tests.helpers import WAIT_S, encode, make_pixels

StartServer = Callable[..., Awaitable[LivegenServer]]


@pytest.fixture
def jpeg() -> Callable[..., bytes]:
    """``jpeg(seed, width=64, height=64)``: JPEG bytes of a distinct test frame."""

    def make(seed: int = 0, width: int = 64, height: int = 64) -> bytes:
        return encode(make_pixels(width, height, seed), quality=95)

    return make


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``await start_server(pipeline=None, **config)``: a ready server; all stop at teardown."""
    servers: list[LivegenServer] = []

    async def start(pipeline: Pipeline | None = None, **config: Any) -> LivegenServer:
        config.setdefault("codec_threads", 2)
        server = LivegenServer(ServerConfig(host="127.0.0.1", port=0, **config), pipeline)
        await server.start()
        servers.append(server)
        await asyncio.wait_for(server.ready.wait(), WAIT_S)
        return server

    yield start
    for server in servers:
        await asyncio.wait_for(server.drain(), WAIT_S)
