"""Trickle ICE fragments (RFC 8840) as WHIP and WHEP clients PATCH them."""

from __future__ import annotations

import pytest

from stream.sdpfrag import MAX_FRAGMENT_LINES, TrickledCandidate, parse_sdpfrag

CANDIDATE = "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host"


def test_a_fragment_gives_credentials_candidates_by_mid_and_the_end() -> None:
    fragment = parse_sdpfrag(
        "a=ice-options:trickle\r\n"
        "a=group:BUNDLE 0\r\n"
        "a=ice-ufrag:abcd\r\n"
        "a=ice-pwd:secret:with:colons\r\n"
        f"a={CANDIDATE}\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=mid:0\r\n"
        f"a={CANDIDATE} generation 0\r\n"
        "\r\n"
        "a=end-of-candidates\r\n"
    )

    assert fragment.ice_ufrag == "abcd"
    assert fragment.ice_pwd == "secret:with:colons"
    assert fragment.candidates == [
        TrickledCandidate(None, CANDIDATE),
        TrickledCandidate("0", f"{CANDIDATE} generation 0"),
    ]
    assert fragment.end_of_candidates


def test_an_empty_fragment_says_nothing() -> None:
    fragment = parse_sdpfrag("")

    assert fragment.ice_ufrag is None and fragment.ice_pwd is None
    assert fragment.candidates == [] and not fragment.end_of_candidates


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("candidate:1 1 udp", "line 1 ('candidate:1 1 udp') is not an SDP line"),
        ("a=mid:0\nab=c", "line 2 ('ab=c') is not an SDP line"),
        ("1=x", "line 1 ('1=x') is not an SDP line"),
        ("a=x\n" * (MAX_FRAGMENT_LINES + 1), f"at most {MAX_FRAGMENT_LINES}"),
    ],
    ids=["no-equals", "long-type", "digit-type", "too-long"],
)
def test_text_that_is_not_a_fragment_is_refused_naming_the_line(text: str, mention: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_sdpfrag(text)

    assert mention in str(refused.value)
