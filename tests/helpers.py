"""Helpers for tests: test frames, server addresses, and pipelines a test can steer."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from pipelines.base import FrameRequest, PipelineOptions
from pipelines.passthrough import PassthroughPipeline
from server.app import LivegenServer

# Bound on every wait in a test: nothing on loopback should take this long.
WAIT_S = 10.0


def make_pixels(width: int, height: int, seed: int) -> np.ndarray:
    """A frame with structure (gradients and a block), different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 56, size=3)
    pixels = np.stack(
        [
            base[0] + x * 199 // max(1, width - 1),
            base[1] + y * 199 // max(1, height - 1),
            np.full_like(x, base[2] * 4),
        ],
        axis=-1,
    ).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, size=3)
    return pixels


def encode(pixels: np.ndarray, image_format: str = "JPEG", **options: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return buffer.getvalue()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait for server-side state that has no event of its own, at most ``WAIT_S``."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.01)


async def get(url: str) -> tuple[int, str, bytes]:
    def fetch() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=WAIT_S) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    return await asyncio.to_thread(fetch)


def ws_url(server: LivegenServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def http_url(server: LivegenServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


class GatedPipeline(PassthroughPipeline):
    """Passthrough that holds every batch until the test opens the gate.

    ``entered`` is set when a batch reaches the pipeline, so a test knows the
    inference thread is busy before it sends more frames.
    """

    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.batches: list[int] = []

    def warmup(self) -> None:
        """Nothing to warm; the gate is for the frames of the test."""

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        self.batches.append(len(requests))
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        return super().__call__(requests)


class FailingPipeline(PassthroughPipeline):
    """Passthrough that fails on the prompts ``explode`` (raises) and ``floats`` (bad output).

    It also refuses the prompt ``forbidden`` in ``check_params``.
    """

    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))

    def check_params(self, params: Any) -> None:
        if params.prompt == "forbidden":
            raise ValueError("this pipeline refuses the prompt 'forbidden'")

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        if any(request.params.prompt == "explode" for request in requests):
            raise RuntimeError("boom")
        outputs = super().__call__(requests)
        if any(request.params.prompt == "floats" for request in requests):
            return [output.astype(np.float32) for output in outputs]
        return outputs


class ModelLikePassthrough(PassthroughPipeline):
    """Passthrough that says, as a model would, that it uses every param: the pages
    keep all their controls live for a test to drive."""

    def __init__(self) -> None:
        super().__init__(PipelineOptions(device="cpu"))

    def ignored_params(self) -> frozenset[str]:
        return frozenset()


class ShadingPipeline(ModelLikePassthrough):
    """Passthrough whose bottom half is grey at ``strength``, after ``cost_s`` of work.

    A param change shows in the frames, the top half (where test video carries
    its frame number) goes through unchanged, and the fixed cost makes the
    pipeline slower than a camera when a test needs that.
    """

    def __init__(self, cost_s: float = 0.0) -> None:
        super().__init__()
        self.cost_s = cost_s

    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        if self.cost_s:
            time.sleep(self.cost_s)
        outputs = []
        for request, image in zip(requests, super().__call__(requests), strict=True):
            shaded = image.copy()
            shaded[image.shape[0] // 2 :] = round(request.params.strength * 255)
            outputs.append(shaded)
        return outputs
