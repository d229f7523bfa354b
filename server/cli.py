"""The ``livegen`` command. ``livegen serve`` runs the server until SIGINT or SIGTERM;
``livegen token`` mints a token for fal clients from an API key.

Mistakes on the command line get argparse's usage line and exit 2; a configuration
that parses but cannot run (weights not there, a folder that holds something else)
gets ``livegen: error: ...`` and exit 2 as well, without the usage. Both are found
before the server listens, and local paths before torch is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from server.config import ServerConfig, add_arguments, is_loopback
from server.default_model import with_default_model
from server.http import WEBSOCKET_PATH
from server.tokens import add_token_command, token_command

if TYPE_CHECKING:
    from server.app import LivegenServer

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
    config, default_model = server_config(parser, namespace)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # websockets and the hub's HTTP client (httpx2) log every request at INFO, aioice every
    # ICE check: noise.
    for chatty in ("websockets", "httpx2", "aioice", "aiortc"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config.check_files()
        if default_model:
            config = with_default_model(config)
        print(f"livegen configuration:\n{config.describe()}", flush=True)
        # Imported only now: the pipelines bring torch, seconds before anything else can fail.
        from server.app import LivegenServer

        server = LivegenServer(config)
    except ValueError as exc:  # missing weights, an unknown pipeline, options it cannot take
        fail(parser, str(exc))
    return run(serve(server))


def server_config(
    parser: argparse.ArgumentParser, namespace: argparse.Namespace
) -> tuple[ServerConfig, bool]:
    """The configuration the flags and variables give, and whether --pipeline was left unset.

    Unset, the server serves the default model when it can (``with_default_model``) and
    passthrough when it cannot; an explicit ``--pipeline`` never falls back.
    """
    args = dict(vars(namespace))
    args.pop("command")
    default_model = args["pipeline"] is None
    if default_model:
        if args["model"] is not None:
            parser.error("--model needs --pipeline, the family that loads it: sd-turbo or lcm")
        args["pipeline"] = "passthrough"  # unless the default model's weights are here
    try:
        return ServerConfig(**args), default_model
    except ValueError as exc:
        parser.error(str(exc))


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit 2 with ``livegen: error: message`` and no usage line: the command line was fine."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


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
