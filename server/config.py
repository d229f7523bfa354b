"""Server configuration: every option is a CLI flag and a ``LIVEGEN_*`` variable.

A flag wins over the environment, which wins over the default. The whole
configuration is printed once at start. Nothing here imports torch: a mistake
in the flags, or a model folder that is not there, is reported in a second,
before the model code loads.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipelines.sources import names_a_local_folder, not_a_folder
from server.default_model import DEFAULT_MODEL, DEFAULT_PIPELINE, DEFAULT_TINY_VAE
from server.webrtc_options import CODECS, WebRTCOptions, parse_ice_servers
from stream.limits import Limits
from stream.routing import check_replica_id, replica_id_from_host_name

if TYPE_CHECKING:
    from pipelines.base import PipelineOptions


_DEFAULT_LIMITS = Limits()
DEFAULT_MAX_SESSIONS = 64
DEFAULT_WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"


def parse_max_sessions(value: str) -> int | Literal["auto"]:
    """``auto`` or a whole number of sessions, at least 1."""
    if value == "auto":
        return "auto"
    try:
        sessions = int(value)
    except ValueError:
        sessions = 0
    if sessions < 1:
        raise ValueError(f"expected a number of sessions (1 or more) or auto, got {value!r}")
    return sessions


class MissingFile(ValueError):
    """A model, tiny VAE, LoRA or TLS file the options name is not there."""


def _option(
    help_text: str,
    default: Any = None,
    *,
    unset: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A config field; ``unset`` says what ``livegen serve`` does when neither the flag nor
    the variable is given (the flag then parses to None), where that differs from ``default``.
    """
    return field(default=default, metadata={"help": help_text, "unset": unset, "parse": parse})


@dataclass(frozen=True)
class ServerConfig:
    host: str = _option("address to bind; anything but loopback exposes the server", "127.0.0.1")
    port: int = _option("port for WebSocket and HTTP (0 picks a free one)", 8000)
    pipeline: str = _option(
        "pipeline to serve: passthrough, sd-turbo or lcm (pipelines/registry.py)",
        "passthrough",
        unset=f"{DEFAULT_PIPELINE} with {DEFAULT_MODEL} and {DEFAULT_TINY_VAE}, fetched once, "
        "or passthrough when they are neither cached nor downloadable",
    )
    model: str | None = _option("local folder or hub id of the model weights; needs --pipeline")
    device: str = _option("torch device: auto, cuda, cuda:1, mps or cpu", "auto")
    dtype: str = _option(
        "torch dtype: auto (float16 on a GPU, bfloat16 on a CPU with AMX, else float32), "
        "float16, bfloat16 or float32",
        "auto",
    )
    tiny_vae: str | None = _option(
        "folder or hub id of a tiny autoencoder (TAESD) to decode and encode with"
    )
    lora: str = _option("LoRA adapters sessions may pick: NAME=FILE.safetensors,...", "")
    controlnet: str = _option(
        "ControlNets sessions may pick (the controlnet param): NAME=FOLDER_OR_HUB_ID,...", ""
    )
    t2i_adapter: str = _option(
        "T2I-Adapters sessions may pick (the controlnet param): NAME=FOLDER_OR_HUB_ID,...", ""
    )
    channels_last: bool = _option("run the UNet and VAE in channels-last memory format", True)
    prepack_weights: bool = _option(
        "CPU: reorder convolution and linear weights for oneDNN once per input size, not on "
        "every call",
        True,
    )
    compile: bool = _option("torch.compile the UNet (worth it on CUDA; slow to warm up)", False)
    cpu_lanes: int = _option(
        "CPU: run a batch as this many lanes at once, each on its share of the threads "
        "(1: one call for the whole batch)",
        2,
    )
    prompt_cache_size: int = _option("prompt embeddings kept, shared by all sessions", 256)
    ice_servers: str = _option(
        'STUN/TURN servers for WebRTC, JSON: [{"urls": "turn:host", "username": ..., '
        '"credential": ...}]',
        "",
    )
    ice_addresses: str = _option(
        "addresses WebRTC media may use, comma-separated (default: follow --host; "
        "all interfaces when --host is 0.0.0.0)",
        "",
    )
    webrtc_codec: str = _option("video codec sent over WebRTC: vp8 or h264", "vp8")
    webrtc_bitrate: int = _option("WebRTC video bitrate in bit/s", 3_000_000)
    max_sessions: int | Literal["auto"] = _option(
        "sessions held at once, attached or in their grace period; auto: as many as the "
        "device memory left after warm-up holds, by the measured cost of one (CUDA; the "
        f"default {DEFAULT_MAX_SESSIONS} on a CPU or MPS, which have no memory of their own)",
        DEFAULT_MAX_SESSIONS,
        parse=parse_max_sessions,
    )
    replica_id: str = _option(
        "this replica's name in session ids (<replica-id>.<random>), which a proxy routes "
        "resumes by: a-z, 0-9 and '-' (a pod name)",
        replica_id_from_host_name(socket.gethostname()),
    )
    session_grace_s: float = _option("how long a disconnected session is kept for resume", 30.0)
    session_start_timeout_s: float = _option(
        "how long a new connection may wait before its session.start", 10.0
    )
    max_batch: int = _option("most requests the pipeline runs in one call", 8)
    codec_threads: int = _option("threads for image decode and encode", min(4, os.cpu_count() or 1))
    drain_timeout_s: float = _option("on SIGTERM, how long to wait for in-flight frames", 10.0)
    max_message_bytes: int = _option(
        "largest WebSocket message accepted", _DEFAULT_LIMITS.max_message_bytes
    )
    max_image_pixels: int = _option(
        "largest input image, in pixels", _DEFAULT_LIMITS.max_image_pixels
    )
    messages_per_s: float = _option(
        "sustained messages a second per connection", _DEFAULT_LIMITS.messages_per_s
    )
    message_burst: int = _option(
        "messages a connection may send at once above that rate", _DEFAULT_LIMITS.message_burst
    )
    allowed_origins: str = _option(
        "comma-separated browser origins that may connect besides livegen's own pages, or *", ""
    )
    web_root: Path = _option("folder served at /", DEFAULT_WEB_ROOT)
    fal_apps: str = _option(
        "fal app ids served at /{owner}/{alias}/.../realtime, comma-separated "
        "(owner/alias, a deeper path, or a bare alias), or * for any",
        "*",
    )
    auth: str = _option(
        "auth on every WebSocket route (/ws and fal's): auto (on unless bound to loopback "
        "without --api-keys), on or off",
        "auto",
    )
    api_keys: str = _option(
        "API keys, comma-separated: they mint tokens and connect with 'Authorization: Key' "
        "(prefer the variable: flags show in the process list)",
        "",
    )
    token_max_ttl_s: float = _option("longest token lifetime accepted, in seconds", 3600.0)
    tls_cert: str | None = _option(
        "PEM certificate (chain) to serve https and wss, which fal's Python client needs"
    )
    tls_key: str | None = _option("PEM private key of --tls-cert")
    log_level: str = _option("debug, info, warning or error", "info")

    def __post_init__(self) -> None:
        # Malformed values fail here, before any weights load.
        for flag in ("lora", "controlnet", "t2i_adapter"):
            parse_named(getattr(self, flag), flag)
        parse_ice_servers(self.ice_servers)
        if self.webrtc_codec not in CODECS:
            raise ValueError(f"--webrtc-codec must be one of {', '.join(CODECS)}")
        if self.auth not in ("auto", "on", "off"):
            raise ValueError("--auth must be auto, on or off")
        if self.auth_enabled and not self.api_key_list:
            reason = "--auth on" if self.auth == "on" else f"--host {self.host} is not loopback"
            raise ValueError(
                f"auth is on ({reason}) but no --api-keys are set, so no client could "
                "connect: set LIVEGEN_API_KEYS and give clients tokens (livegen token), "
                "or pass --auth off on a network you trust"
            )
        check_replica_id(self.replica_id)
        try:
            parse_max_sessions(str(self.max_sessions))
        except ValueError as exc:
            raise ValueError(f"--max-sessions: {exc}") from None
        if self.cpu_lanes < 1:
            raise ValueError(f"--cpu-lanes must be at least 1, got {self.cpu_lanes}")
        if (self.tls_cert is None) is not (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def auth_enabled(self) -> bool:
        """Whether WebSocket clients need a key or token (server/auth.py)."""
        if self.auth == "auto":
            return bool(self.api_key_list) or not is_loopback(self.host)
        return self.auth == "on"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_image_pixels=self.max_image_pixels,
            messages_per_s=self.messages_per_s,
            message_burst=self.message_burst,
        )

    def check_files(self) -> None:
        """Raise :class:`MissingFile` for a local folder or file the options name that is not
        there: a typo fails in a second, not after torch and diffusers load. Hub ids are
        looked up later, when the pipeline loads."""
        folders = [("model", self.model), ("tiny VAE", self.tiny_vae)]
        for kind, option in (("ControlNet", "controlnet"), ("T2I-Adapter", "t2i_adapter")):
            named = parse_named(getattr(self, option), option)
            folders += [(f"{kind} {name!r}", where) for name, where in named.items()]
        for what, name in folders:
            if name and names_a_local_folder(name) and not Path(name).expanduser().is_dir():
                raise MissingFile(not_a_folder(what, name))
        files: dict[str, str | None] = {
            f"LoRA {name!r}": path for name, path in parse_named(self.lora, "lora").items()
        }
        files |= {"--tls-cert": self.tls_cert, "--tls-key": self.tls_key}
        for what, file in files.items():
            if file and not Path(file).expanduser().is_file():
                raise MissingFile(f"{what}: no file at {Path(file).expanduser().resolve()}")

    @property
    def pipeline_options(self) -> PipelineOptions:
        from pipelines.base import PipelineOptions  # here: importing pipelines loads torch

        return PipelineOptions(
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            tiny_vae=self.tiny_vae,
            loras=parse_named(self.lora, "lora"),
            controlnets=parse_named(self.controlnet, "controlnet"),
            t2i_adapters=parse_named(self.t2i_adapter, "t2i_adapter"),
            channels_last=self.channels_last,
            prepack_weights=self.prepack_weights,
            compile=self.compile,
            cpu_lanes=self.cpu_lanes,
            prompt_cache_size=self.prompt_cache_size,
        )

    @property
    def webrtc_options(self) -> WebRTCOptions:
        return WebRTCOptions(
            ice_servers=parse_ice_servers(self.ice_servers),
            codec=self.webrtc_codec,
            bitrate_bps=self.webrtc_bitrate,
            host_addresses=self.media_addresses,
        )

    @property
    def media_addresses(self) -> list[str] | None:
        """Where WebRTC media may flow; None for every interface."""
        if self.ice_addresses:
            return [a.strip() for a in self.ice_addresses.split(",") if a.strip()]
        if self.host in ("", "0.0.0.0", "::"):
            return None
        return ["127.0.0.1" if self.host == "localhost" else self.host]

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to serve with, or None for plain http and ws."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    def describe(self) -> str:
        def shown(name: str) -> object:
            value = getattr(self, name)
            if name == "ice_servers" and "credential" in value:
                return "(set; credentials not shown)"
            if name == "api_keys" and value:
                return f"({len(value.split(','))} set; not shown)"
            return value

        return "\n".join(f"  {f.name:<18} {shown(f.name)}" for f in fields(self))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_named(value: str, option: str) -> dict[str, str]:
    """``NAME=WHERE,...`` (``--lora``, ``--controlnet``, ``--t2i-adapter``) -> {NAME: WHERE}."""
    named: dict[str, str] = {}
    flag = "--" + option.replace("_", "-")
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, separator, where = item.partition("=")
        if not separator or not name.strip() or not where.strip():
            shape = "NAME=FILE" if option == "lora" else "NAME=FOLDER_OR_HUB_ID"
            raise ValueError(f"{flag} takes {shape} items, got {item!r}")
        named[name.strip()] = where.strip()
    return named


def _parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse, whose usage error then carries parse's own words."""

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """One flag per field of :class:`ServerConfig`, defaulting to its ``LIVEGEN_*`` variable."""
    for f in fields(ServerConfig):
        env_name = "LIVEGEN_" + f.name.upper()
        unset = f.metadata["unset"]
        kind: dict[str, Any]
        if f.metadata["parse"] is not None:
            kind = {"type": _argument_type(f.metadata["parse"])}
        elif isinstance(f.default, bool):
            # A bare --compile turns it on; --compile=false and the variable also work.
            kind = {"type": _parse_bool, "nargs": "?", "const": True}
        else:
            # argparse converts a string default with ``type``, so a bad variable
            # gets the same clear error as a bad flag.
            kind = {"type": str if f.default is None else type(f.default)}
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=environ.get(env_name, None if unset else f.default),
            help=f"{f.metadata['help']} (env {env_name}, default {unset or f.default})",
            **kind,
        )
