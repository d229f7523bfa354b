"""How WebRTC calls are set up: ICE servers, the codec, the bitrate, the media addresses.

Kept apart from :mod:`server.webrtc` so that reading the configuration does not
import aiortc (and PyAV, OpenSSL's bindings...): a server loads those with its
first call (:func:`load_webrtc`), not at start.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CODECS = ("vp8", "h264")


@dataclass(frozen=True, slots=True)
class WebRTCOptions:
    ice_servers: Sequence[dict[str, Any]]
    codec: str
    bitrate_bps: int
    # The addresses aioice offers as host candidates; None offers every interface's.
    host_addresses: Sequence[str] | None = None


async def load_webrtc() -> None:
    """Import :mod:`server.webrtc` (and aiortc) on a thread: the first time takes about a
    second, which the event loop, serving every other session, must not wait out."""
    if "server.webrtc" not in sys.modules:
        await asyncio.to_thread(importlib.import_module, "server.webrtc")


def parse_ice_servers(value: str) -> list[dict[str, Any]]:
    """``--ice-servers``: a JSON list of RTCIceServer maps (urls, username, credential)."""
    try:
        servers = json.loads(value or "[]")
    except json.JSONDecodeError as exc:
        raise ValueError(f"--ice-servers must be JSON: {exc}") from None
    if not isinstance(servers, list) or not all(
        isinstance(s, dict) and "urls" in s for s in servers
    ):
        raise ValueError('--ice-servers takes a JSON list like [{"urls": "stun:host:3478"}]')
    return servers
