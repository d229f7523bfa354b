"""``session.started`` says what the pipeline makes of params, and a client reads a
message from a server too old to say it."""

from __future__ import annotations

import msgpack

from stream.codec import decode_server_message, pack
from stream.limits import Limits
from stream.messages import SessionStarted

STARTED = {
    "type": "session.started",
    "session_id": "r.1",
    "resume_token": "t",
    "resumed": False,
    "pipeline": "passthrough",
    "params": {"prompt": ""},
    "limits": Limits().to_wire(),
    "protocol": 1,
}


def test_what_the_pipeline_ignores_and_needs_round_trips() -> None:
    fields = {k: v for k, v in STARTED.items() if k != "type"}
    message = SessionStarted(**fields, ignored_params=["prompt", "seed"], needs_image=True)
    wire = msgpack.unpackb(pack(message))

    assert wire["ignored_params"] == ["prompt", "seed"] and wire["needs_image"] is True
    assert decode_server_message(pack(message)) == message


def test_a_server_that_does_not_say_leaves_every_param_used_and_text_allowed() -> None:
    message = decode_server_message(msgpack.packb(STARTED))

    assert isinstance(message, SessionStarted)
    assert message.ignored_params == [] and message.needs_image is False
