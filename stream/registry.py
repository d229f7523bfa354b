"""The set of live sessions: create, detach, resume within a grace period, expire.

Time is the caller's: every method that needs it takes ``now`` (monotonic seconds).
Session ids name the replica that made them (stream/routing.py).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator

from stream.errors import ServerBusy, SessionNotFound
from stream.params import Params
from stream.routing import FALLBACK_REPLICA_ID, session_id
from stream.session import Session


class SessionRegistry:
    def __init__(
        self, *, grace_s: float, max_sessions: int, replica_id: str = FALLBACK_REPLICA_ID
    ) -> None:
        self.grace_s = grace_s
        self.max_sessions = max_sessions
        self.replica_id = replica_id
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    @property
    def attached(self) -> int:
        return sum(s.expires_at is None for s in self._sessions.values())

    def admits_new(self, starting: int = 0) -> bool:
        """Whether a new session could start, with ``starting`` more already on their way.

        Attached sessions and connections about to start one count against
        ``max_sessions``; a detached session does not, since :meth:`make_room`
        would evict it for a client that is here now.
        """
        return self.attached + starting < self.max_sessions

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
            id=session_id(self.replica_id, secrets.token_urlsafe(12)),
            resume_token=secrets.token_urlsafe(24),
            params=params,
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
                f"no session {session_id!r} to resume on replica {self.replica_id!r} "
                "(expired, closed, wrong token, or made by another replica); start a new one"
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
