"""The routing contract: replica ids, session ids that name their replica, ``?sid=``."""

from __future__ import annotations

import pytest

from stream.routing import (
    check_replica_id,
    replica_id_from_host_name,
    replica_of,
    requested_sid,
    session_id,
)


@pytest.mark.parametrize("replica_id", ["livegen-0", "a", "gpu7", "x" * 63])
def test_a_dns_label_is_a_replica_id(replica_id: str) -> None:
    assert check_replica_id(replica_id) == replica_id


@pytest.mark.parametrize(
    "replica_id", ["", "Livegen-0", "livegen.0", "-a", "a-", "a_b", "x" * 64, "é"]
)
def test_anything_else_is_refused_with_the_rule(replica_id: str) -> None:
    with pytest.raises(ValueError, match="a-z, 0-9 and '-'"):
        check_replica_id(replica_id)


@pytest.mark.parametrize(
    ("host_name", "replica_id"),
    [
        ("livegen-0", "livegen-0"),
        ("GPU-Box.example.com", "gpu-box"),
        ("my_host", "my-host"),
        ("--", "livegen"),
        ("x" * 70, "x" * 63),
        ("a" * 62 + "_b", "a" * 62),
    ],
)
def test_the_default_replica_id_is_the_host_name_made_to_fit(
    host_name: str, replica_id: str
) -> None:
    assert replica_id_from_host_name(host_name) == replica_id
    check_replica_id(replica_id)


def test_a_session_id_names_its_replica() -> None:
    assert session_id("livegen-3", "Ab-_9") == "livegen-3.Ab-_9"
    assert replica_of("livegen-3.Ab-_9") == "livegen-3"


@pytest.mark.parametrize("sid", ["", "nodot", "livegen-0.", ".abc", "Bad.abc", "a_b.c", "é.x"])
def test_a_sid_that_names_no_replica_gives_none(sid: str) -> None:
    assert replica_of(sid) is None


@pytest.mark.parametrize(
    ("path", "sid"),
    [
        ("/ws", None),
        ("/ws?token=t", None),
        ("/ws?sid=livegen-0.abc", "livegen-0.abc"),
        ("/ws?token=t&sid=r.x&sid=r.y", "r.x"),
        ("/ws?sid=", ""),
        ("/ws?sid=%00%ff", "\x00\ufffd"),
    ],
)
def test_the_sid_is_read_from_the_url(path: str, sid: str | None) -> None:
    assert requested_sid(path) == sid
