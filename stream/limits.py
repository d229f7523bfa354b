"""Protocol limits, and the token bucket that enforces the message rate.

Limits are part of the protocol: the server sends them in ``session.started`` so
a client knows them before it breaks one. Breaking one is a clear error, never a
crash and never a silent drop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIB = 1 << 20
# How deep maps and arrays may nest in one message, the message's own map counted:
# the stack of msgpack's C unpacker, fixed at build time, so not an option.
MAX_NESTING_DEPTH = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 8 * MIB
    max_image_pixels: int = 2048 * 2048
    max_map_len: int = 32
    max_array_len: int = 32
    max_str_len: int = 32 * 1024  # room for an SDP offer with many candidates
    # Generous: the input box makes a flood cheap; this bounds parsing work, not the UX.
    messages_per_s: float = 1000.0
    message_burst: int = 200

    def to_wire(self) -> dict[str, Any]:
        # The rate goes as a float even when it was configured as a whole number.
        rate = float(self.messages_per_s)
        return asdict(self) | {"messages_per_s": rate, "max_nesting_depth": MAX_NESTING_DEPTH}


class TokenBucket:
    """Allows ``rate_per_s`` events a second on average and ``burst`` at once.

    The clock is the caller's: pass ``now`` in seconds from any monotonic source.
    """

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_s)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
