"""Fixtures for running fal's published clients against livegen on loopback.

Each client runs in its own process, as an app would: ``fal-client`` (PyPI) under
this virtualenv's Python, ``@fal-ai/client`` (npm, installed by ``npm ci`` into
``tests/fal/js/node_modules``) under Node. Neither is modified; they reach livegen
through the settings the README documents. Nothing may leave the machine: the
Python client gets a dead proxy for every host but loopback, and the Node harness
refuses non-loopback URLs itself. Both clients are put through the same round trip
(:func:`round_trip_plan`), and their results must agree with one check.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from server.app import LivegenServer
from tests.fal.certificates import make_certificate
from tests.helpers import encode, make_pixels

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
# A Python client or Node start, connect and exchange a few frames well within this.
CLIENT_WAIT_S = 60.0
# Where the Python client's requests to any other host go: a port nothing listens on.
DEAD_PROXY = "http://127.0.0.1:9"
# The API key the tests' servers accept, and the fal app the clients ask for.
KEY = "test-api-key"
APP = "fal-ai/fast-lcm-diffusion"

RunClient = Callable[..., Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    return Tls(*make_certificate(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="session")
def sketch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x64 JPEG test frame on disk, as an app would send from a file."""
    path = tmp_path_factory.mktemp("images") / "sketch.jpg"
    path.write_bytes(encode(make_pixels(64, 64, seed=3), quality=95))
    return path


@pytest.fixture
def round_trip_plan(sketch: Path) -> dict[str, Any]:
    """Three image-to-image inputs in a row, for either client.

    The sketch as bytes with ``sync_mode`` and a seed, as a data URI with a
    seed, and as bytes with ``sync_mode`` off and no seed.
    :func:`assert_round_trip_results` checks what comes back.
    """
    image = {"$bytes": str(sketch)}
    return {
        "app": APP,
        "inputs": [
            {
                "prompt": "a fox",
                "image_url": image,
                "sync_mode": True,
                "seed": 42,
                "request_id": "1",
            },
            {"prompt": "an owl", "image_url": {"$data_uri": str(sketch)}, "seed": 43},
            {"prompt": "a cat", "image_url": image, "sync_mode": False},
        ],
    }


def assert_round_trip_results(results: Sequence[dict[str, Any]]) -> None:
    """A client's results for :func:`round_trip_plan`'s inputs, in order."""
    first, second, third = results
    assert first["content_is_bytes"] and first["content_head"] == "ffd8ff"
    assert (first["width"], first["height"], first["content_type"]) == (64, 64, "image/jpeg")
    assert first["url_head"] == "data:image/jpeg;base64,"
    assert (first["seed"], first["prompt"], first["request_id"]) == (42, "a fox", "1")
    assert first["has_nsfw_concepts"] == [False] and "inference" in first["timings"]
    assert (second["seed"], second["prompt"]) == (43, "an owl")
    assert third["url_head"] is None  # sync_mode false: the bytes alone
    assert isinstance(third["seed"], int)  # drawn by the server, and told


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> list[str]:
    """The command that runs the Node harness, with @fal-ai/client installed from npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _missing("node and npm are missing: run `bash tests/setup.sh`")
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True
        )
        if installed.returncode != 0:
            _missing(f"npm ci in {JS_DIR} failed:\n{installed.stderr}")
    # Node 20 has a global WebSocket only behind a flag; 22 and later always do.
    check = "process.exit(+(typeof WebSocket > 'u'))"
    for flags in ([], ["--experimental-websocket"]):
        if subprocess.run([node, *flags, "-e", check], capture_output=True).returncode == 0:
            return [node, *flags, "--import", (JS_DIR / "loopback-guard.mjs").as_uri()]
    _missing(f"{node} has no WebSocket; the fal client tests need Node 20.10 or later")


async def run_command(
    command: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run a client to the end: its exit status, stdout and stderr."""
    # A developer's own fal credentials and hosts stay out of the tests.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("FAL_")}
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**inherited, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLIENT_WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def run_process(
    command: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> list[dict[str, Any]]:
    """Run a client harness to the end; the JSON lines it printed, one per event.

    A run whose connection died before any HTTP status came back is run once more:
    on a loaded CI machine a fresh process's TLS handshake can outlast the server's
    opening-handshake timeout (seen once in CI), which says nothing about the client.
    """
    _, stdout, stderr = await run_command(command, env, cwd)
    if "connection closed while reading HTTP status line" in stderr:
        _, stdout, stderr = await run_command(command, env, cwd)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"the client printed no events:\n{stdout}\n{stderr}"
    return [json.loads(line) for line in lines]


def python_client_env(server: LivegenServer, tls: Tls, key: str | None) -> dict[str, str]:
    """What the README tells a fal_client app to set to reach ``server``."""
    env = {
        "FAL_RUN_HOST": f"127.0.0.1:{server.port}",
        "SSL_CERT_FILE": str(tls.cert),
        "HTTPS_PROXY": DEAD_PROXY,
        "HTTP_PROXY": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if key is not None:
        env["FAL_KEY"] = key
    return env


@pytest.fixture
def run_python_client(tls: Tls) -> RunClient:
    """``await run_python_client(server, plan, key=...)``: tests/fal/py_realtime.py's events."""

    async def run(
        server: LivegenServer, plan: dict[str, Any], key: str | None = None
    ) -> list[dict[str, Any]]:
        command = [sys.executable, str(HERE / "py_realtime.py"), json.dumps(plan)]
        return await run_process(command, python_client_env(server, tls, key))

    return run


@pytest.fixture
def run_js_client(node: list[str]) -> RunClient:
    """``await run_js_client(server, plan, key=...)``: tests/fal/js/realtime.mjs's events."""

    async def run(
        server: LivegenServer, plan: dict[str, Any], key: str | None = None
    ) -> list[dict[str, Any]]:
        env = {"LIVEGEN_URL": f"http://127.0.0.1:{server.port}"}
        if key is not None:
            env["FAL_KEY"] = key
        command = [*node, str(JS_DIR / "realtime.mjs"), json.dumps(plan)]
        return await run_process(command, env, cwd=JS_DIR)

    return run
