"""Fixtures shared by every test package: test frames and a real server on loopback."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton's interpreter runs the kernels on CPU tensors (tests/kernels).
# Triton reads this when a kernel is defined, so before anything imports livegen_kernels;
# the pipelines still take the references on the CPU (livegen_kernels/dispatch.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
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


@contextlib.asynccontextmanager
async def servers_on_loopback() -> AsyncIterator[StartServer]:
    """``await start(instance=None, ready_s=WAIT_S, **config)``: a ready server; all drain
    on leaving.

    ``instance`` is a pipeline object to serve; without one the server loads
    ``config["pipeline"]`` itself, as ``livegen serve`` does (give a model's load and
    warm-up a longer ``ready_s`` on a busy machine).
    """
    servers: list[LivegenServer] = []

    async def start(
        instance: Pipeline | None = None, ready_s: float = WAIT_S, **config: Any
    ) -> LivegenServer:
        config.setdefault("codec_threads", 2)
        server = LivegenServer(ServerConfig(host="127.0.0.1", port=0, **config), instance)
        await server.start()
        servers.append(server)
        await asyncio.wait_for(server.ready.wait(), ready_s)
        return server

    yield start
    for server in servers:
        await asyncio.wait_for(server.drain(), WAIT_S)


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``await start_server(instance=None, **config)``: see :func:`servers_on_loopback`."""
    async with servers_on_loopback() as start:
        yield start


@dataclass(frozen=True)
class TinyModels:
    """Folders of tiny random-weight models built from the published configs, saved with
    ``save_pretrained`` (see tests/models.py), and LoRA files for them."""

    sd_turbo: Path
    sdxl_turbo: Path
    lcm: Path  # LCM_Dreamshaper_v7: LCMScheduler and a guidance-embedding UNet
    sd_base: Path  # Stable Diffusion 1.5
    sdxl_base: Path  # SDXL base 1.0
    taesd: Path
    taesdxl: Path
    lora: Path  # a style LoRA for SD 1.5's UNet (sd_base, and lcm's, which has its layers)
    lcm_lora_sd: Path  # an LCM-LoRA for sd_base
    lcm_lora_sdxl: Path  # an LCM-LoRA for sdxl_base


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    # Imported here: diffusers takes seconds to import, and most tests never need it.
    from tests.models import save_lcm_lora, save_lora, save_model, save_tiny_autoencoder

    root = tmp_path_factory.mktemp("models")
    folders = {
        family.replace("-", "_"): save_model(root / family, family=family)
        for family in ("sd-turbo", "sdxl-turbo", "lcm", "sd-base", "sdxl-base")
    }
    return TinyModels(
        **folders,
        taesd=save_tiny_autoencoder(root / "taesd", family="sd"),
        taesdxl=save_tiny_autoencoder(root / "taesdxl", family="sdxl"),
        lora=save_lora(root / "sketchy.safetensors", folders["sd_base"]),
        lcm_lora_sd=save_lcm_lora(root / "lcm-lora-sd.safetensors", folders["sd_base"]),
        lcm_lora_sdxl=save_lcm_lora(root / "lcm-lora-sdxl.safetensors", folders["sdxl_base"]),
    )


@dataclass(frozen=True)
class TinyControls:
    """A tiny ControlNet and T2I-Adapter for the sd_turbo model of :class:`TinyModels`."""

    controlnet: Path
    t2i_adapter: Path


@pytest.fixture(scope="session")
def tiny_controls(
    tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> TinyControls:
    from tests.models import save_controlnet, save_t2i_adapter

    root = tmp_path_factory.mktemp("controls")
    return TinyControls(
        controlnet=save_controlnet(root / "lines", tiny_models.sd_turbo),
        t2i_adapter=save_t2i_adapter(root / "sketch", tiny_models.sd_turbo),
    )
