"""The ``livegen`` command. ``livegen serve`` runs the server until SIGINT or SIGTERM;
``livegen token`` mints a token for fal clients from an API key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from server.app import LivegenServer
from server.config import ServerConfig, add_arguments, is_loopback
from server.http import WEBSOCKET_PATH
from server.tokens import add_token_command, token_command

log = logging.getLogger("livegen")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livegen", description="Real-time generative media server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve a pipeline over WebSocket and HTTP")
    add_arguments(serve_parser, environ)
    add_token_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(os.environ)
    namespace = parser.parse_args(argv)
    if namespace.command == "token":
        return token_command(namespace, os.environ)
    args = vars(namespace)
    args.pop("command")
    try:
        config = ServerConfig(**args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # websockets logs every HTTP request at INFO, aioice every ICE check: noise.
    for chatty in ("websockets", "aioice", "aiortc"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    print(f"livegen configuration:\n{config.describe()}", flush=True)
    try:
        server = LivegenServer(config)
    except ValueError as exc:  # an unknown pipeline, missing weights, options it cannot take
        parser.error(str(exc))
    return run(serve(server))


def run(main_coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    result: int = uvloop.run(main_coroutine)
    return result


async def serve(server: LivegenServer) -> int:
    config = server.config
    try:
        await server.start()
    except OSError as exc:  # most often: the port is taken
        log.error("cannot listen on %s port %d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if server.draining:
            log.warning("second signal: exiting without waiting for the drain")
            os._exit(1)
        server.request_drain()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    host = f"[{config.host}]" if ":" in config.host else config.host
    secure = "s" if config.tls_cert else ""
    print(
        f"livegen serving {config.pipeline} on http{secure}://{host}:{server.port}/ "
        f"(WebSocket ws{secure}://{host}:{server.port}{WEBSOCKET_PATH}); Ctrl-C stops",
        flush=True,
    )
    if config.auth_enabled:
        log.info(
            "auth is on: clients need an API key or a token (livegen token --app livegen); "
            "open the pages with ?token=..."
        )
    elif not is_loopback(config.host):
        log.warning("bound to %s with --auth off: anyone who can reach it can use it", config.host)
    await server.wait_stopped()
    return 1 if server.warmup_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
