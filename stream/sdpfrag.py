"""Trickled ICE candidates in an SDP fragment (``application/trickle-ice-sdpfrag``).

A WHIP or WHEP client that finds its candidates after its offer went out sends
them in a PATCH as an SDP fragment (RFC 8840, as RFC 9725 uses it): the ICE
username fragment and password of the session, then per media section its
``a=mid`` and ``a=candidate`` lines, and ``a=end-of-candidates`` once gathering
is done. A fragment whose username fragment differs from the offer's asks for
an ICE restart. Lines this parser has no use for (``a=group``,
``a=ice-options``, ``m=``) are skipped; a line that is not SDP is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_FRAGMENT_LINES = 256


@dataclass(frozen=True, slots=True)
class TrickledCandidate:
    mid: str | None  # the media section's a=mid; None before any
    line: str  # "candidate:..." without its "a="


@dataclass(frozen=True, slots=True)
class SdpFragment:
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[TrickledCandidate] = field(default_factory=list)
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFragment:
    """Read a trickle fragment; raises ``ValueError`` naming the line that is not SDP."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_FRAGMENT_LINES:
        raise ValueError(f"the fragment has {len(lines)} lines; at most {MAX_FRAGMENT_LINES}")
    ufrag = pwd = mid = None
    candidates: list[TrickledCandidate] = []
    end = False
    for number, line in enumerate(lines, 1):
        kind, equals, value = line.partition("=")
        if not equals or len(kind) != 1 or not kind.isalpha():
            raise ValueError(
                f"line {number} ({line[:40]!r}) is not an SDP line (like a=candidate:...)"
            )
        if kind != "a":
            continue
        name, _, attribute = value.partition(":")
        if name == "ice-ufrag":
            ufrag = attribute
        elif name == "ice-pwd":
            pwd = attribute
        elif name == "mid":
            mid = attribute
        elif name == "candidate":
            candidates.append(TrickledCandidate(mid, value))
        elif name == "end-of-candidates":
            end = True
    return SdpFragment(ufrag, pwd, candidates, end)
