"""How WebRTC calls are set up: ICE servers, the codec, the bitrate, the media addresses.

Kept apart from :mod:`server.webrtc` so that reading the configuration does not
import aiortc (and PyAV, OpenSSL's bindings...): a server loads those with its
first call, not at start.
"""

from __future__ import annotations

import json
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
