"""Session: input numbering, latest-wins offers and reruns after a params edit."""

from __future__ import annotations

from stream.events import FrameIn
from stream.params import Params
from stream.session import Session


def frame(image: bytes | None, frame_id: int | None = None, at: float = 0.0) -> FrameIn:
    return FrameIn(image=image, id=frame_id, patch={}, received_at=at)


def test_new_session_has_default_params_and_an_empty_inbox() -> None:
    session = Session(id="s1", resume_token="t1")
    assert session.params == Params()
    assert not session.inbox
    assert (session.last_decoded, session.expires_at) == (None, None)
    assert session.frames_in == 0


def test_frame_without_an_id_gets_the_input_sequence_number() -> None:
    session = Session(id="s1", resume_token="t1")
    assert session.offer(frame(b"a")) is False
    assert session.inbox.take() == frame(b"a", 1)
    session.offer(frame(b"b"))
    assert session.inbox.take() == frame(b"b", 2)


def test_frame_with_a_client_id_keeps_it() -> None:
    session = Session(id="s1", resume_token="t1")
    session.offer(frame(b"a", 41))
    assert session.inbox.take() == frame(b"a", 41)
    assert session.frames_in == 1


def test_offer_over_an_untaken_frame_drops_the_older_one() -> None:
    session = Session(id="s1", resume_token="t1")
    session.offer(frame(b"a"))
    assert session.offer(frame(b"b")) is True
    assert session.inbox.take() == frame(b"b", 2)
    assert session.inbox.dropped == 1


def test_rerun_without_any_input_queues_nothing_for_an_image_pipeline() -> None:
    session = Session(id="s1", resume_token="t1")
    assert session.rerun(1.0, text_only=False) is False
    assert not session.inbox


def test_rerun_without_any_input_queues_a_text_only_request_that_takes_no_position() -> None:
    session = Session(id="s1", resume_token="t1")
    session.offer(frame(b"a"))
    session.inbox.take()  # an input that never decoded leaves nothing to rerun
    assert session.rerun(2.5, text_only=True) is True
    assert session.inbox.take() == frame(None, 0, at=2.5)
    session.offer(frame(b"b"))
    assert session.inbox.take() == frame(b"b", 2)  # the client's second input


def test_rerun_queues_the_latest_decoded_input_again_timed_from_now() -> None:
    session = Session(id="s1", resume_token="t1")
    session.offer(frame(b"a", 5))
    session.last_decoded = session.inbox.take()
    assert session.rerun(3.0, text_only=True) is True
    assert session.inbox.take() == frame(b"a", 5, at=3.0)
    assert session.frames_in == 1


def test_rerun_while_an_input_waits_does_not_replace_it() -> None:
    session = Session(id="s1", resume_token="t1")
    session.last_decoded = frame(b"old", 4)
    session.offer(frame(b"a", 5))
    assert session.rerun(1.0, text_only=True) is False
    assert session.inbox.dropped == 0
    assert session.inbox.take() == frame(b"a", 5)
