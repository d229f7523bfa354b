"""Each session's outgoing video tracks, which every generated frame of the session goes to.

Apart from :mod:`server.webrtc`, so that the server can keep them without
importing aiortc before a session makes its first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from server.webrtc import GeneratedTrack


class Outlets:
    """Each session's outgoing video tracks: its camera call's, and its viewers'.

    A generated frame goes to every track of its session; each track keeps only
    its newest frame, so a slow encoder or viewer drops its own frames and
    never holds up the model or another viewer.
    """

    def __init__(self) -> None:
        self._tracks: dict[str, set[GeneratedTrack]] = {}

    def add(self, session_id: str, track: GeneratedTrack) -> None:
        self._tracks.setdefault(session_id, set()).add(track)

    def discard(self, session_id: str, track: GeneratedTrack) -> None:
        tracks = self._tracks.get(session_id)
        if tracks is not None:
            tracks.discard(track)
            if not tracks:
                del self._tracks[session_id]

    def put(self, session_id: str, pixels: np.ndarray) -> bool:
        """Hand ``pixels`` to the session's tracks; False when it has none."""
        tracks = self._tracks.get(session_id, ())
        for track in tracks:
            track.put(pixels)
        return bool(tracks)
