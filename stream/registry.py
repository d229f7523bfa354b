"""The set of live sessions: create, detach, resume within a grace period, expire.

Time is the caller's: every method that needs it takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator

from stream.errors import ServerBusy, SessionNotFound
from stream.params import Params
from stream.session import Session


class SessionRegistry:
    def __init__(self, *, grace_s: float, max_sessions: int) -> None:
        self.grace_s = grace_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def make_room(self) -> Session | None:
        """At capacity, remove and return the detached session nearest its expiry.

        A detached session is only kept in case its client comes back; a client
        that is here now comes first. Without this, a client that opens and drops
        sessions could keep everyone else out for a grace period at a time.
        """
        if len(self._sessions) < self.max_sessions:
            return None
        detached = [s for s in self._sessions.values() if s.expires_at is not None]
        if not detached:
            return None
        evicted = min(detached, key=lambda s: s.expires_at or 0.0)
        del self._sessions[evicted.id]
        return evicted

    def create(self, params: Params) -> Session:
        if len(self._sessions) >= self.max_sessions:
            raise ServerBusy(f"the server holds its maximum of {self.max_sessions} sessions")
        session = Session(
            id=secrets.token_urlsafe(12), resume_token=secrets.token_urlsafe(24), params=params
        )
        self._sessions[session.id] = session
        return session

    def find(self, session_id: str, resume_token: str) -> Session:
        """The session to resume; a wrong token reads the same as an unknown id."""
        session = self._sessions.get(session_id)
        if session is None or not hmac.compare_digest(
            session.resume_token.encode(), resume_token.encode()
        ):
            raise SessionNotFound(
                f"no session {session_id!r} to resume (expired, closed or wrong token); "
                "start a new one"
            )
        return session

    def attach(self, session: Session) -> None:
        """A connection holds ``session`` again: it no longer expires."""
        session.expires_at = None

    def detach(self, session: Session, now: float) -> None:
        """The connection is gone: keep the session for the grace period."""
        if session.id in self._sessions:
            session.expires_at = now + self.grace_s

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def expire(self, now: float) -> list[Session]:
        """Remove and return the detached sessions whose grace period has passed."""
        expired = [
            s for s in self._sessions.values() if s.expires_at is not None and s.expires_at <= now
        ]
        for session in expired:
            del self._sessions[session.id]
        return expired
