"""SessionRegistry: create, resume with the token, keep detached sessions for a grace period."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stream.errors import CloseCode, ErrorCode, ServerBusy, SessionNotFound
from stream.params import Params
from stream.registry import SessionRegistry
from stream.session import Session


def test_create_makes_distinct_sessions_with_the_given_params() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=4)
    first, second = registry.create(Params(seed=1)), registry.create(Params())
    assert first.params == Params(seed=1)
    assert first.id != second.id and first.resume_token != second.resume_token
    assert len(first.resume_token) >= 32
    assert len(registry) == 2
    assert list(registry) == [first, second]


def test_create_beyond_max_sessions_is_refused_with_server_busy() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=1)
    registry.create(Params())
    with pytest.raises(ServerBusy, match="maximum of 1 sessions") as caught:
        registry.create(Params())
    assert caught.value.code == ErrorCode.SERVER_BUSY
    assert caught.value.close_code == CloseCode.TRY_AGAIN_LATER
    assert len(registry) == 1


def test_find_with_the_right_token_returns_the_session_and_attach_stops_its_expiry() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=4)
    session = registry.create(Params())
    registry.detach(session, now=100.0)
    assert session.expires_at == 130.0
    assert registry.find(session.id, session.resume_token) is session
    assert session.expires_at == 130.0  # finding alone changes nothing
    registry.attach(session)
    assert session.expires_at is None
    assert registry.expire(now=1000.0) == []


@pytest.mark.parametrize(
    "credentials",
    [
        lambda session: ("unknown", session.resume_token),
        lambda session: (session.id, "wrong"),
        lambda session: (session.id, ""),
        lambda session: (session.id, session.resume_token[:-1]),
    ],
    ids=["unknown id", "wrong token", "empty token", "token prefix"],
)
def test_resume_with_an_unknown_id_or_a_wrong_token_is_refused_alike(
    credentials: Callable[[Session], tuple[str, str]],
) -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=4)
    session = registry.create(Params())
    registry.detach(session, now=0.0)
    session_id, token = credentials(session)
    with pytest.raises(SessionNotFound) as caught:
        registry.find(session_id, token)
    assert caught.value.code == ErrorCode.SESSION_NOT_FOUND
    assert not caught.value.fatal
    assert f"no session {session_id!r} to resume" in str(caught.value)
    assert session.expires_at == 30.0


def test_expire_removes_only_detached_sessions_whose_grace_has_passed() -> None:
    registry = SessionRegistry(grace_s=10.0, max_sessions=4)
    attached, early, late = (registry.create(Params()) for _ in range(3))
    registry.detach(early, now=0.0)
    registry.detach(late, now=5.0)
    assert registry.expire(now=9.9) == []
    assert registry.expire(now=10.0) == [early]
    assert list(registry) == [attached, late]
    assert registry.expire(now=100.0) == [late]
    assert list(registry) == [attached]


def test_an_expired_session_cannot_be_resumed() -> None:
    registry = SessionRegistry(grace_s=10.0, max_sessions=4)
    session = registry.create(Params())
    registry.detach(session, now=0.0)
    registry.expire(now=10.0)
    with pytest.raises(SessionNotFound):
        registry.find(session.id, session.resume_token)


def test_remove_frees_the_slot_and_a_later_detach_does_nothing() -> None:
    registry = SessionRegistry(grace_s=10.0, max_sessions=1)
    session = registry.create(Params())
    registry.remove(session)
    registry.remove(session)
    registry.detach(session, now=0.0)
    assert session.expires_at is None
    assert len(registry) == 0
    assert registry.create(Params()) is not session


def test_sessions_can_be_removed_while_iterating() -> None:
    registry = SessionRegistry(grace_s=10.0, max_sessions=4)
    for _ in range(3):
        registry.create(Params())
    for session in registry:
        registry.remove(session)
    assert len(registry) == 0


def test_make_room_at_capacity_evicts_the_detached_session_nearest_expiry() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=3)
    attached, later, sooner = (registry.create(Params()) for _ in range(3))
    registry.detach(later, now=20.0)
    registry.detach(sooner, now=10.0)

    assert registry.make_room() is sooner
    assert registry.make_room() is None  # room now: nothing more goes
    registry.create(Params())
    assert registry.make_room() is later
    assert attached in list(registry)


def test_make_room_never_evicts_attached_sessions() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=2)
    registry.create(Params())
    registry.create(Params())

    assert registry.make_room() is None
    assert len(registry) == 2


def test_session_ids_name_the_replica() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=2, replica_id="livegen-7")
    assert registry.create(Params()).id.startswith("livegen-7.")


def test_a_wrong_replica_reads_as_not_found_and_says_where_it_looked() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=2, replica_id="livegen-1")
    session = registry.create(Params())
    with pytest.raises(SessionNotFound, match="on replica 'livegen-1'"):
        registry.find(session.id.replace("livegen-1", "livegen-0"), session.resume_token)


def test_new_sessions_are_admitted_while_attached_and_starting_ones_leave_room() -> None:
    registry = SessionRegistry(grace_s=30.0, max_sessions=2)
    assert registry.admits_new() and registry.admits_new(starting=1)
    assert not registry.admits_new(starting=2)
    first = registry.create(Params())
    registry.create(Params())
    assert registry.attached == 2 and not registry.admits_new()
    # A detached session would be evicted for a new one: it leaves room.
    registry.detach(first, now=0.0)
    assert registry.attached == 1 and registry.admits_new()
