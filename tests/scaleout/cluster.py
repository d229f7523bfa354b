"""Replicas behind a real HAProxy, on loopback: what the README's "Scaling out" describes.

Each replica is a ``livegen serve`` process (passthrough pipeline) with its own
``--replica-id``; the entry is Debian's ``haproxy`` in master-worker mode, running
the config ``deploy/haproxy/render.py`` renders for these ports. Tests start,
kill, drain and add replicas and reload the entry, as an operator would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import WAIT_S

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "haproxy" / "render.py"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
QUEUE_TIMEOUT_S = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_status(url: str) -> int | None:
    """The status a GET of ``url`` answers, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_for(condition: object, what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition()`` (a process outside this test's event loop) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        time.sleep(0.05)


@dataclass
class Replica:
    replica_id: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"replica {self.replica_id} exited with {self.process.returncode}")
        return http_status(self.http("/readyz")) == 200


@dataclass
class Cluster:
    """Replicas and the entry; :meth:`stop` ends whatever is still running."""

    work: Path
    max_sessions: int
    replicas: list[Replica] = field(default_factory=list)
    entry_port: int = field(default_factory=free_port)
    entry: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.entry_port}/ws"

    def start_replicas(self, count: int, **options: str) -> list[Replica]:
        """Start ``count`` more replicas at once and wait until all are ready."""
        started = [self._spawn(f"livegen-{len(self.replicas) + i}", options) for i in range(count)]
        self.replicas += started
        wait_for(lambda: all(r.ready() for r in started), "replicas ready", 60.0)
        return started

    def _spawn(self, replica_id: str, options: dict[str, str]) -> Replica:
        port = free_port()
        flags = {
            "pipeline": "passthrough",
            "port": str(port),
            "replica-id": replica_id,
            "max-sessions": str(self.max_sessions),
            "session-grace-s": "60",
            "codec-threads": "1",
            "log-level": "warning",
        } | options
        argv = [sys.executable, "-m", "server", "serve"]
        for name, value in flags.items():
            argv += [f"--{name}", value]
        with (self.work / f"{replica_id}.log").open("wb") as log:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return Replica(replica_id, port, process)

    def render(self) -> Path:
        config = self.work / "haproxy.cfg"
        argv = [sys.executable, str(RENDER), "--bind", f"127.0.0.1:{self.entry_port}"]
        argv += ["--max-sessions", str(self.max_sessions), "--queue-timeout", str(QUEUE_TIMEOUT_S)]
        argv += ["--check-interval", "200ms", "-o", str(config)]
        for replica in self.replicas:
            argv += ["--server", f"{replica.replica_id}=127.0.0.1:{replica.port}"]
        subprocess.run(argv, check=True, cwd=ROOT)
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], check=True)
        return config

    def start_entry(self) -> None:
        config = self.render()
        # -W: master-worker, so SIGUSR2 reloads the config; -db: stay in the foreground.
        with (self.work / "haproxy.log").open("wb") as log:
            self.entry = subprocess.Popen(
                [HAPROXY, "-W", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._entry_answers, "the entry answering")

    def _entry_answers(self) -> bool:
        assert self.entry is not None
        if self.entry.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.entry.returncode}")
        return http_status(f"http://127.0.0.1:{self.entry_port}/healthz") == 200

    def reload_entry(self) -> None:
        """Render for the replicas now listed and reload: live sockets stay with the old worker."""
        assert self.entry is not None
        self.render()
        loaded = self._loads()
        self.entry.send_signal(signal.SIGUSR2)
        wait_for(lambda: self._loads() > loaded, "the entry reloading")

    def _loads(self) -> int:
        """How many times the master has loaded its config so far (from its log)."""
        return (self.work / "haproxy.log").read_bytes().count(b"Loading success")

    def kill(self, replica: Replica) -> None:
        replica.process.kill()
        replica.process.wait(WAIT_S)

    def terminate(self, replica: Replica) -> None:
        replica.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        processes = [r.process for r in self.replicas] + ([self.entry] if self.entry else [])
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(WAIT_S)


def haproxy_available() -> bool:
    return os.access(HAPROXY, os.X_OK)
