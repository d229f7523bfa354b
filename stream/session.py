"""A session: everything a client has built up that is not a tensor.

A session outlives its connection. It keeps its params, its input box and its
counters while detached, so a client that reconnects within the grace period
resumes warm. Tensor state belongs to the pipeline and hangs off
``pipeline_state`` as an opaque object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from stream.events import FrameIn
from stream.inbox import LatestBox
from stream.params import Params


@dataclass(eq=False)
class Session:
    id: str
    resume_token: str
    params: Params = field(default_factory=Params)
    inbox: LatestBox[FrameIn] = field(default_factory=LatestBox)
    # The latest input that decoded, or the latest text-only request (set by the
    # inference thread), kept so a params edit can regenerate from it; a broken
    # input never replaces a good one.
    last_decoded: FrameIn | None = None
    pipeline_state: Any = None
    # Monotonic deadline while detached; None while a connection holds the session.
    expires_at: float | None = None
    frames_in: int = 0

    def offer(self, frame: FrameIn) -> bool:
        """Queue ``frame`` for the pipeline; returns True when an older one was dropped.

        A frame without a client id gets its position among the session's inputs (1 for
        the first): a client that never sends ids can count its own frames to match
        each ``frame.out`` to the input it answers.
        """
        self.frames_in += 1
        if frame.id is None:
            frame = replace(frame, id=self.frames_in)
        return self.inbox.put(frame)

    def rerun(self, now: float, *, text_only: bool) -> bool:
        """Queue the latest input again, to be run with the current params.

        A session with no input yet gets a text-only request when the pipeline
        can generate from params alone (``text_only``). The client sent no input
        for it, so it takes no position among the inputs: its id is 0. Returns
        False when nothing was queued: no input to rerun, or one already waiting.
        """
        if self.inbox:
            return False
        if self.last_decoded is not None:
            self.inbox.put(replace(self.last_decoded, received_at=now))
            return True
        if text_only:
            self.inbox.put(FrameIn(image=None, id=0, patch={}, received_at=now))
            return True
        return False
