"""Limits and the token bucket, driven by an injected clock."""

from __future__ import annotations

from stream.limits import MIB, Limits, TokenBucket


def take_all(bucket: TokenBucket, now: float) -> int:
    """How many takes succeed at ``now`` before the first refusal."""
    taken = 0
    while bucket.take(now):
        taken += 1
    return taken


def test_limits_go_on_the_wire_as_a_plain_map() -> None:
    assert Limits(max_map_len=8).to_wire() == {
        "max_message_bytes": 8 * MIB,
        "max_image_pixels": 2048 * 2048,
        "max_map_len": 8,
        "max_array_len": 32,
        "max_str_len": 32768,
        "messages_per_s": 1000.0,
        "message_burst": 200,
        "max_nesting_depth": 1024,
    }


def test_the_message_rate_goes_as_a_float_even_when_given_as_an_int() -> None:
    rate = Limits(messages_per_s=5).to_wire()["messages_per_s"]
    assert rate == 5.0 and isinstance(rate, float)


def test_a_new_bucket_allows_a_full_burst_then_refuses() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5, now=100.0)
    assert take_all(bucket, now=100.0) == 5
    assert not bucket.take(now=100.0)


def test_tokens_refill_at_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5, now=0.0)
    take_all(bucket, now=0.0)
    assert not bucket.take(now=0.05)
    assert bucket.take(now=0.1)
    assert not bucket.take(now=0.1)
    assert take_all(bucket, now=0.35) == 2


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5, now=0.0)
    take_all(bucket, now=0.0)
    assert take_all(bucket, now=3600.0) == 5


def test_a_clock_that_steps_back_neither_adds_nor_removes_tokens() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=2, now=10.0)
    assert bucket.take(now=10.0)
    assert bucket.take(now=5.0)
    assert not bucket.take(now=5.0)
