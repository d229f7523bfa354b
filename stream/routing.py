"""The routing contract between livegen replicas and the proxy in front of them.

Every replica has an id (``[a-z0-9-]``, a DNS label: a Kubernetes pod name fits),
and every session id it makes names it: ``<replica-id>.<random>``. A client that
resumes connects to ``/ws?sid=<session_id>``, so the proxy can send it to the
replica that holds its session by reading the URL alone; the resume token stays
secret, inside ``session.start``. A connection with a ``sid`` is a resume and is
never refused for capacity at the handshake; one without is a new session.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

# A DNS label: what a host name, a pod name and an HAProxy server name all accept.
_REPLICA_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NOT_IN_REPLICA_ID = re.compile(r"[^a-z0-9-]+")
FALLBACK_REPLICA_ID = "livegen"
SID_PARAMETER = "sid"


def check_replica_id(replica_id: str) -> str:
    """``replica_id`` when it is usable, else a ValueError that says what is."""
    if _REPLICA_ID.fullmatch(replica_id) is None:
        raise ValueError(
            f"replica id {replica_id!r} must be 1 to 63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit (a pod name such as livegen-0 fits)"
        )
    return replica_id


def replica_id_from_host_name(host_name: str) -> str:
    """The default replica id: the host name's first label, made to fit the rules."""
    label = host_name.split(".", 1)[0].lower()
    return _NOT_IN_REPLICA_ID.sub("-", label).strip("-")[:63].strip("-") or FALLBACK_REPLICA_ID


def session_id(replica_id: str, random_part: str) -> str:
    return f"{replica_id}.{random_part}"


def replica_of(sid: str) -> str | None:
    """The replica a session id names, or None when it names none."""
    replica, dot, rest = sid.partition(".")
    if not dot or not rest or _REPLICA_ID.fullmatch(replica) is None:
        return None
    return replica


def requested_sid(request_path: str) -> str | None:
    """The ``sid`` of a connection's URL (the first, as HAProxy reads it), or None."""
    values = parse_qs(urlsplit(request_path).query, keep_blank_values=True).get(SID_PARAMETER)
    return values[0] if values else None
