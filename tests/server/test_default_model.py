"""``livegen serve`` with no --pipeline: SD-Turbo with TAESD from the hub cache, else passthrough.

Each test runs the real CLI in a subprocess on a free loopback port, with its own
Hugging Face cache and no way to reach the hub: either HF_HUB_OFFLINE, or the hub's
endpoint at a closed loopback port, so that any request fails at once and never
leaves the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from livegen_client import LivegenClient
from tests.conftest import TinyModels

ROOT = Path(__file__).resolve().parents[2]
# Loading diffusers in a fresh process alone takes seconds on a small machine.
PROCESS_WAIT_S = 120.0
FALLBACK = "serving passthrough, which returns each input unchanged"


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as huggingface_hub's cache holds a download of ``repo_id``: the
    files in ``blobs/``, linked from ``snapshots/<commit>/``, and ``refs/main`` naming it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@asynccontextmanager
async def livegen_serve(hub: dict[str, str]) -> AsyncIterator[tuple[int, list[str]]]:
    """``livegen serve`` with no pipeline and the hub settings ``hub``: its port and what it
    logged before it listened. SIGTERM on leaving; the test checks it exits 0."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HF_")}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"),
        env=env | hub,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(PROCESS_WAIT_S):
            while listening := await process.stdout.readline():
                lines.append(listening.decode())
                if port := re.search(r"serving \S+ on http://127\.0\.0\.1:(\d+)/", lines[-1]):
                    break
            else:
                raise AssertionError("livegen exited before it listened:\n" + "".join(lines))
        yield int(port.group(1)), lines
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), PROCESS_WAIT_S)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("hub", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_ENDPOINT": "http://127.0.0.1:{port}"}, "the hub does not answer for"),
    ],
    ids=["offline", "hub unreachable"],
)
async def test_without_the_default_weights_it_serves_passthrough_and_says_so_once(
    tmp_path, jpeg, hub, reason
):
    hub = {name: value.format(port=closed_port()) for name, value in hub.items()}
    hub |= {"HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")}
    async with livegen_serve(hub) as (port, logged):
        async with await LivegenClient.connect(f"ws://127.0.0.1:{port}/ws") as client:
            await client.send_frame(jpeg(seed=1), frame_id=1)
            frame = await asyncio.wait_for(client.next_frame(), PROCESS_WAIT_S)

    (said,) = [line for line in logged if FALLBACK in line]
    assert reason in said
    assert "`hf download stabilityai/sd-turbo` and `hf download madebyollin/taesd`" in said
    assert "livegen serving passthrough on" in logged[-1]
    assert client.started.pipeline == "passthrough" and frame.id == 1


async def test_with_the_default_weights_in_the_hub_cache_it_generates_with_them(
    tmp_path, tiny_models: TinyModels
):
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "stabilityai/sd-turbo", tiny_models.sd_turbo)
    add_to_hub_cache(cache, "madebyollin/taesd", tiny_models.taesd)
    # No HF_HUB_OFFLINE: the cache alone must do, and the hub is not reachable anyway.
    hub = {
        "HF_HOME": str(tmp_path),
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
    }
    async with livegen_serve(hub) as (port, logged):
        url = f"ws://127.0.0.1:{port}/ws"
        async with await LivegenClient.connect(url, params={"width": 64, "height": 64}) as client:
            await client.update_params(prompt="a lighthouse at dawn")
            frame = await asyncio.wait_for(client.next_frame(), PROCESS_WAIT_S)

    assert not [line for line in logged if FALLBACK in line]
    assert any(
        "serving the default, sd-turbo with stabilityai/sd-turbo and --tiny-vae "
        "madebyollin/taesd" in line
        for line in logged
    )
    assert client.started.pipeline == "sd-turbo"
    assert (frame.id, frame.width, frame.height) == (0, 64, 64)  # text to image: no input
