"""Property-based fuzzing of the protocol core: whatever a peer sends, stream/ answers.

Any bytes, any text frame and any msgpack value, fed to the codec, to the livegen
protocol object (stream/protocol.py) and to fal's (stream/fal.py), give either a
valid message or one of the documented errors (a :class:`ProtocolError` with its
``error`` code), never another exception; and every message type comes back
unchanged from encoding and decoding. Inputs are drawn three ways: raw bytes,
msgpack values of any shape, and maps shaped like real messages (known field
names, values near the valid ones), the last also with bytes flipped, cut or
inserted, which is what reaches past the first check.

Examples are drawn deterministically (``derandomize``, no example database), so a
failure in CI is the same failure everywhere, and each property runs a bounded
number of them: a few seconds each on a slow machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.codec import (
    MAX_FRAME_ID,
    decode_client_message,
    decode_server_message,
    pack,
    unpack_map,
)
from stream.errors import ErrorCode, ImageTooLarge, InvalidImage, ProtocolError
from stream.events import FrameIn, ParamsUpdated, PeerErrored, SignalReceived, StartRequested
from stream.fal import (
    IGNORED_FIELDS,
    IMAGE_FIELDS,
    IMAGE_SIZE_PRESETS,
    FalInput,
    FalProtocol,
    FalRequest,
    decode_data_uri,
    error_frame,
    meta_frame,
    pack_result,
    parse_query,
    parse_route,
    resolve_params,
)
from stream.images import CONTENT_TYPES, decode_image, encode_image
from stream.limits import MAX_NESTING_DEPTH, Limits, TokenBucket
from stream.messages import (
    ClientMessage,
    Error,
    Frame,
    FrameOut,
    ParamsUpdate,
    ServerMessage,
    SessionClose,
    SessionClosing,
    SessionStart,
    SessionStarted,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
)
from stream.params import IMAGE_FORMATS, MAX_SEED, Params, parse_params_patch
from stream.protocol import ConnectionState, SessionProtocol

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
LIMITS = Limits()
ERROR_CODES = frozenset(ErrorCode)
STARTED = SessionStarted(
    session_id="s1", resume_token="t1", resumed=False, pipeline="passthrough", params={}, limits={}
)

# Values of any msgpack shape: what a peer can put anywhere in a map.
INT64 = st.integers(-(2**63), 2**64 - 1)
SCALARS = (
    st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=24) | st.binary(max_size=24)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4) | INT64, inner, max_size=4)
    ),
    max_leaves=12,
)


def packed(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(lambda value: msgpack.packb(value, use_bin_type=True))


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[bytes]) -> bytes:
    """A message with a few bytes replaced, inserted or cut, or its tail cut off."""
    data = bytearray(draw(messages))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if edit == "insert" or at == len(data):
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif edit == "replace":
            data[at] = draw(st.integers(0, 255))
        elif edit == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


# Params: near-valid values under real and made-up names.
VALID_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=24),
        "negative_prompt": st.text(max_size=24),
        "seed": st.integers(0, MAX_SEED),
        "steps": st.integers(1, 50),
        "strength": st.floats(0.0, 1.0),
        "guidance_scale": st.floats(0.0, 30.0),
        "width": st.integers(8, 256).map(lambda n: n * 8),
        "height": st.integers(8, 256).map(lambda n: n * 8),
        "output_format": st.sampled_from(IMAGE_FORMATS),
        "quality": st.integers(1, 100),
        "scheduler": st.text(max_size=8),
        "lora": st.text(max_size=8),
        "similarity_threshold": st.floats(0.0, 1.0),
        "latent_feedback": st.floats(0.0, 1.0),
    },
)
PARAM_NAMES = sorted(f.name for f in fields(Params))
NEAR_VALUES = (
    VALUES | st.integers(-2, 2100) | st.floats(-1.0, 31.0) | st.sampled_from(IMAGE_FORMATS)
)
PARAMS_LIKE = VALID_PARAMS | st.dictionaries(
    st.sampled_from(PARAM_NAMES) | st.text(max_size=6), NEAR_VALUES, max_size=4
)

# livegen's own messages.
CLIENT_TYPES = [
    "session.start",
    "params.update",
    "frame",
    "session.close",
    "webrtc.offer",
    "webrtc.candidate",
    "webrtc.close",
]
CLIENT_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "protocol": st.integers(0, 2) | VALUES,
    "session_id": st.text(max_size=8) | VALUES,
    "resume_token": st.text(max_size=8) | VALUES,
    "params": PARAMS_LIKE | VALUES,
    "image": st.binary(max_size=16) | VALUES,
    "id": st.integers(-1, MAX_FRAME_ID + 1) | VALUES,
    "sdp": st.text(max_size=24) | VALUES,
    "candidate": st.text(max_size=24) | VALUES,
    "sdp_mid": st.text(max_size=4) | VALUES,
    "sdp_mline_index": st.integers(-1, 3) | VALUES,
    "reason": VALUES,
}


@st.composite
def client_maps(draw: st.DrawFn) -> dict[Any, Any]:
    """A map shaped like a client message: a type (mostly a known one) and some fields."""
    names = draw(st.lists(st.sampled_from(sorted(CLIENT_FIELD_VALUES)), max_size=4, unique=True))
    wire: dict[Any, Any] = {name: draw(CLIENT_FIELD_VALUES[name]) for name in names}
    if draw(st.integers(0, 9)):  # most messages have a type
        wire["type"] = draw(st.sampled_from(CLIENT_TYPES) | VALUES)
    return wire


def nested_last(wire: dict[str, Any], depth: int) -> bytes:
    """``wire`` packed with its last value (a nil, packed last) inside ``depth`` arrays."""
    return msgpack.packb(wire, use_bin_type=True)[:-1] + b"\x91" * depth + b"\xc0"


# Values nested near msgpack's limit (1024 deep): deeper than Python's repr can go.
DEPTHS = st.integers(990, 1026)
DEEP_CLIENT_MAPS = st.builds(
    nested_last,
    st.sampled_from(CLIENT_TYPES).flatmap(
        lambda kind: st.sampled_from(
            [{"type": None}]
            + [{"type": kind, name: None} for name in CLIENT_FIELD_VALUES]
            + [{"type": kind, "params": {name: None}} for name in PARAM_NAMES]
        )
    ),
    DEPTHS,
)
CLIENT_BYTES = (
    st.binary(max_size=64)
    | packed(VALUES)
    | packed(client_maps())
    | mutated(packed(client_maps()))
    | DEEP_CLIENT_MAPS
)
CLIENT_DATA = CLIENT_BYTES | st.text(max_size=16)

# Every client message type, with valid fields.
TEXT = st.text(max_size=24)
CLIENT_MESSAGES: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(SessionStart, protocol=INT64, params=VALID_PARAMS),
    st.builds(
        lambda token, params: SessionStart(session_id=token, resume_token=token, params=params),
        TEXT,
        VALID_PARAMS,
    ),
    st.builds(ParamsUpdate, params=VALID_PARAMS),
    st.builds(
        Frame,
        image=st.none() | st.binary(max_size=24),
        id=st.none() | st.integers(0, MAX_FRAME_ID),
        params=VALID_PARAMS,
    ),
    st.just(SessionClose()),
    st.builds(WebRTCOffer, sdp=TEXT),
    st.builds(
        WebRTCCandidate,
        candidate=TEXT,
        sdp_mid=st.none() | TEXT,
        sdp_mline_index=st.none() | INT64,
    ),
    st.just(WebRTCClose()),
)

# Every server message type. No NaN: a NaN is never equal to itself after the trip.
PLAIN = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | TEXT | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FRAME_OUTS = st.builds(
    FrameOut,
    image=st.binary(max_size=24),
    content_type=st.sampled_from(sorted(CONTENT_TYPES.values())),
    id=st.integers(0, MAX_FRAME_ID),
    width=st.integers(1, 4096),
    height=st.integers(1, 4096),
    timings=st.dictionaries(TEXT, st.floats(0.0, 1e6)),
    dropped=st.integers(0, 2**63 - 1),
)
SERVER_MESSAGES: st.SearchStrategy[ServerMessage] = st.one_of(
    st.builds(
        SessionStarted,
        session_id=TEXT,
        resume_token=TEXT,
        resumed=st.booleans(),
        pipeline=TEXT,
        params=st.dictionaries(TEXT, PLAIN, max_size=4),
        limits=st.just(LIMITS.to_wire()),
        protocol=INT64,
        ice_servers=st.lists(st.dictionaries(TEXT, PLAIN, max_size=3), max_size=2),
    ),
    FRAME_OUTS,
    st.builds(
        Error,
        code=st.sampled_from(sorted(ErrorCode)),
        message=TEXT,
        fatal=st.booleans(),
        id=st.none() | st.integers(0, MAX_FRAME_ID),
    ),
    st.builds(SessionClosing, reason=TEXT),
    st.builds(WebRTCAnswer, sdp=TEXT),
)


@contextlib.contextmanager
def servers_stack() -> Iterator[None]:
    """Python's default recursion limit, which hypothesis raises while a test runs.

    The server parses under the default, where the repr of a value nested a
    thousand deep overflows the stack: a test must too, to see that happen.
    """
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


def assert_documented(error: ProtocolError) -> None:
    """A refusal a client can act on: a known code, words, and a close code only when fatal."""
    assert error.code in ERROR_CODES
    assert str(error)
    assert error.fatal is (error.close_code is not None)


# The codec.


@FUZZ
@given(CLIENT_BYTES)
def test_any_bytes_decode_to_a_client_message_or_a_documented_error(data: bytes) -> None:
    try:
        with servers_stack():
            message = decode_client_message(data, LIMITS)
    except ProtocolError as error:
        assert_documented(error)
        return
    # What was accepted is a message like any other: it survives its own trip.
    assert decode_client_message(pack(message), LIMITS) == message


@FUZZ
@given(st.binary(max_size=64) | packed(VALUES) | mutated(packed(SERVER_MESSAGES.map(pack))))
def test_any_bytes_decode_to_a_server_message_or_a_documented_error(data: bytes) -> None:
    try:
        with servers_stack():
            decode_server_message(data)
    except ProtocolError as error:
        assert_documented(error)


@FUZZ
@given(CLIENT_MESSAGES)
def test_every_client_message_type_round_trips(message: ClientMessage) -> None:
    assert decode_client_message(pack(message), LIMITS) == message


@FUZZ
@given(SERVER_MESSAGES)
def test_every_server_message_type_round_trips(message: ServerMessage) -> None:
    assert decode_server_message(pack(message)) == message


@FUZZ
@given(VALUES | PARAMS_LIKE)
def test_any_params_value_is_a_checked_patch_or_invalid_params(raw: Any) -> None:
    try:
        with servers_stack():
            patch = parse_params_patch(raw)
    except ProtocolError as error:
        assert error.code == ErrorCode.INVALID_PARAMS
        return
    assert isinstance(Params().updated(patch), Params)


@pytest.mark.parametrize(("depth", "accepted"), [(1024, True), (1025, False)])
def test_maps_and_arrays_nest_1024_deep_counting_the_message_itself(
    depth: int, accepted: bool
) -> None:
    # One map, then arrays inside it: depth containers in all.
    data = b"\x81\xa1a" + b"\x91" * (depth - 1) + b"\xc0"
    if accepted:
        assert unpack_map(data, LIMITS)
        return
    with pytest.raises(ProtocolError) as refused:
        unpack_map(data, LIMITS)
    assert refused.value.code == ErrorCode.LIMIT_EXCEEDED
    assert "1024" in str(refused.value)


# The livegen protocol object.


def sent(protocol: SessionProtocol) -> list[ServerMessage]:
    return [decode_server_message(data) for data in protocol.data_to_send()]


@FUZZ
@given(st.lists(CLIENT_DATA | CLIENT_MESSAGES.map(pack), min_size=1, max_size=8))
def test_the_session_protocol_turns_any_input_into_events_or_documented_errors(
    inputs: list[bytes | str],
) -> None:
    protocol = SessionProtocol(LIMITS, now=0.0)
    for step, data in enumerate(inputs):
        was_open = protocol.state is ConnectionState.OPEN
        was_closed = protocol.state is ConnectionState.CLOSED
        with servers_stack():
            events = protocol.receive(data, now=step / 100)
        messages = sent(protocol)
        if was_closed:
            assert (events, messages) == ([], [])
            continue
        [event] = events  # one message in, one event out
        if isinstance(event, PeerErrored):
            assert_documented(event.error)
            [error] = messages
            assert error == Error(
                code=event.error.code,
                message=str(event.error),
                fatal=event.error.fatal,
                id=event.error.frame_id,
            )
            # Only a fatal error closes (eight messages cannot fill the queue of unread ones).
            assert protocol.close_code == event.error.close_code
            continue
        assert messages == []
        if isinstance(event, FrameIn | ParamsUpdated | SignalReceived):
            assert was_open  # nothing but a start before a session exists
        if isinstance(event, StartRequested):
            protocol.accept(STARTED)
            assert sent(protocol) == [STARTED]


@settings(FUZZ, max_examples=100)  # each example is a whole flood
@given(st.lists(st.tuples(CLIENT_DATA, st.floats(0.0, 0.5)), min_size=1, max_size=40))
def test_a_flood_hears_at_most_one_rate_limited_notice_a_second(
    inputs: list[tuple[bytes | str, float]],
) -> None:
    protocol = SessionProtocol(Limits(messages_per_s=4.0, message_burst=2), now=0.0)
    now, notices = 0.0, []
    for data, wait_s in inputs:
        now += wait_s
        protocol.receive(data, now)
        for message in sent(protocol):
            if isinstance(message, Error) and message.code == ErrorCode.RATE_LIMITED:
                notices.append(now)
    assert all(later - earlier >= 1.0 for earlier, later in zip(notices, notices[1:], strict=False))


@FUZZ
@given(st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=60))
def test_the_token_bucket_never_lets_more_through_than_its_rate_and_burst(
    steps: list[float],
) -> None:
    bucket, now = TokenBucket(rate_per_s=3.0, burst=2, now=0.0), 0.0
    latest, taken = 0.0, 0
    for step in steps:
        now += step  # the caller's clock may even step back
        latest = max(latest, now)
        taken += bucket.take(now)
        assert taken <= 2 + 3.0 * latest + 1e-9


# fal's protocol object.

FAL_NAMES = [
    *IMAGE_FIELDS,
    "prompt",
    "negative_prompt",
    "strength",
    "num_inference_steps",
    "seed",
    "guidance_scale",
    "image_size",
    "sync_mode",
    "format",
    "output_format",
    "num_images",
    "request_id",
    "enable_safety_checker",
    "steps",
    "width",
    "height",
    "type",
]
DATA_URIS = st.builds(
    lambda header, body: f"data:{header},{body}",
    st.sampled_from(["image/jpeg;base64", "image/png", ";base64", "", "x;BASE64"]),
    st.text(max_size=16) | st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
)
FAL_VALUES = (
    NEAR_VALUES
    | DATA_URIS
    | st.sampled_from(sorted(IMAGE_SIZE_PRESETS))
    | st.fixed_dictionaries({"width": NEAR_VALUES, "height": NEAR_VALUES})
)
FAL_MAPS = st.dictionaries(st.sampled_from(FAL_NAMES) | st.text(max_size=6), FAL_VALUES, max_size=6)
DEEP_FAL_MAPS = st.builds(
    nested_last,
    st.sampled_from([{name: None} for name in FAL_NAMES + PARAM_NAMES])
    | st.sampled_from(["width", "height"]).map(lambda name: {"image_size": {name: None}}),
    DEPTHS,
)
FAL_DATA = (
    st.binary(max_size=64)
    | st.text(max_size=16)
    | packed(VALUES)
    | packed(FAL_MAPS)
    | mutated(packed(FAL_MAPS))
    | DEEP_FAL_MAPS
)


def open_fal() -> FalProtocol:
    protocol = FalProtocol(LIMITS, now=0.0)
    protocol.accept(STARTED)
    return protocol


@FUZZ
@given(st.lists(FAL_DATA, min_size=1, max_size=6))
def test_the_fal_protocol_turns_any_input_into_an_input_or_an_x_fal_error(
    inputs: list[bytes | str],
) -> None:
    protocol = open_fal()
    codes = {code.upper() for code in ErrorCode}
    for step, data in enumerate(inputs):
        with servers_stack():
            fal_input = protocol.receive(data, now=step / 100)
        frames = protocol.data_to_send()
        if fal_input is not None:
            assert frames == []
            # An accepted input is one the server can run: its params resolve.
            params = resolve_params(Params(), fal_input, seed_if_absent=7)
            assert 1 <= params.steps <= 50 and 0.0 <= params.strength <= 1.0
            continue
        if protocol.state is ConnectionState.CLOSED:
            continue  # a fatal error before, or this one
        [frame] = frames
        assert isinstance(frame, str)
        payload = json.loads(frame)
        assert payload["type"] == "x-fal-error" and payload["error"] in codes
        assert isinstance(payload["reason"], str) and payload["reason"]


@st.composite
def fal_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], bytes | None]:
    """A valid fal input and the image bytes it carries (raw, or in a data: URI)."""
    image = draw(st.none() | st.binary(max_size=24))
    wire: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "prompt": TEXT,
                "seed": st.integers(0, MAX_SEED),
                "num_inference_steps": st.integers(1, 50),
                "strength": st.floats(0.0, 1.0),
                "sync_mode": st.booleans(),
                "request_id": TEXT,
                "image_size": st.sampled_from(sorted(IMAGE_SIZE_PRESETS)),
            },
        )
    )
    if image is not None:
        name = draw(st.sampled_from(IMAGE_FIELDS))
        as_uri = draw(st.booleans())
        encoded = f"data:image/png;base64,{base64.b64encode(image).decode()}"
        wire[name] = encoded if as_uri else image
    return wire, image


@FUZZ
@given(fal_inputs())
def test_every_fal_input_field_arrives_as_sent(case: tuple[dict[str, Any], bytes | None]) -> None:
    wire, image = case
    protocol = open_fal()
    fal_input = protocol.receive(msgpack.packb(wire, use_bin_type=True), now=0.0)
    assert protocol.data_to_send() == []
    assert isinstance(fal_input, FalInput)
    assert fal_input.image == image
    assert fal_input.seed == wire.get("seed")
    assert fal_input.num_inference_steps == wire.get("num_inference_steps")
    assert fal_input.sync_mode == wire.get("sync_mode")
    assert fal_input.request_id == wire.get("request_id")
    if "prompt" in wire:
        assert fal_input.patch["prompt"] == wire["prompt"]
    if "image_size" in wire:
        size = IMAGE_SIZE_PRESETS[wire["image_size"]]
        assert (fal_input.patch["width"], fal_input.patch["height"]) == size


@FUZZ
@given(
    FRAME_OUTS,
    st.builds(
        FalRequest,
        seed=st.integers(0, MAX_SEED),
        prompt=TEXT,
        request_id=st.none() | TEXT,
        inline_url=st.booleans(),
    ),
)
def test_a_fal_result_carries_the_frame_and_the_request(frame: FrameOut, request: FalRequest):
    result = msgpack.unpackb(pack_result(frame, request))
    [image] = result["images"]
    assert image["content"] == frame.image
    assert (image["width"], image["height"]) == (frame.width, frame.height)
    if request.inline_url:
        assert decode_data_uri(image["url"]) == frame.image
    else:
        assert "url" not in image
    assert (result["seed"], result["prompt"]) == (request.seed, request.prompt)
    assert result.get("request_id") == request.request_id
    assert result["timings"]["inference"] == frame.timings.get("infer", 0.0) / 1000


@FUZZ
@given(st.sampled_from(sorted(ErrorCode)), TEXT, st.none() | TEXT, TEXT)
def test_fal_error_and_meta_frames_are_json_text(
    code: ErrorCode, reason: str, request_id: str | None, action: str
) -> None:
    error = json.loads(error_frame(ProtocolError(reason or "x", code=code), request_id))
    assert error["type"] == "x-fal-error" and error["error"] == code.upper()
    assert error["reason"] == (reason or "x") and error.get("request_id") == request_id
    assert json.loads(meta_frame(action)) == {"type": "x-fal-message", "action": action}


@FUZZ
@given(st.text(max_size=32) | DATA_URIS)
def test_any_data_uri_gives_its_bytes_or_invalid_image(uri: str) -> None:
    try:
        data = decode_data_uri(f"data:{uri}" if not uri.startswith("data:") else uri)
    except InvalidImage as error:
        assert_documented(error)
        return
    assert isinstance(data, bytes)


@FUZZ
@given(
    st.text(max_size=40)
    | st.lists(st.sampled_from(["fal-ai", "workflows", "app", "realtime", "", "a b", ".."])).map(
        "/".join
    )
)
def test_any_path_is_a_fal_route_or_none(path: str) -> None:
    route = parse_route(path)
    if route is not None:
        assert route.matches(route.path) and route.matches(route.alias)
        assert route.path.endswith("/realtime")


@FUZZ
@given(
    st.text(max_size=40)
    | st.lists(
        st.sampled_from(["fal_jwt_token=t", "max_buffering=3", "max_buffering=99", "x", "&", "="])
    ).map("&".join)
)
def test_any_query_is_parsed_or_refused_with_words(query: str) -> None:
    try:
        parsed = parse_query(query)
    except ValueError as error:
        assert str(error)
        return
    assert 1 <= parsed.max_buffering <= 60


# Values nested as deep as msgpack decodes, in every field: no hypothesis here, whose
# raised recursion limit hides a repr that overflows (and every placement, not a draw).


def deepest(wire: dict[str, Any]) -> bytes:
    """``wire`` with its last value (nil) in as many arrays as still decode."""
    levels, inner = 1, wire
    while isinstance(last := list(inner.values())[-1], dict):
        levels, inner = levels + 1, last
    return nested_last(wire, MAX_NESTING_DEPTH - levels)


@pytest.mark.parametrize(
    "wire",
    [{"type": None}]
    + [{"type": kind, name: None} for kind in CLIENT_TYPES for name in CLIENT_FIELD_VALUES]
    + [{"type": "params.update", "params": {name: None}} for name in PARAM_NAMES],
    ids=str,
)
def test_a_value_nested_to_the_limit_in_any_livegen_field_is_refused_in_words(
    wire: dict[str, Any],
) -> None:
    protocol = SessionProtocol(LIMITS, now=0.0)
    protocol.receive(msgpack.packb({"type": "session.start"}), now=0.0)
    protocol.accept(STARTED)
    protocol.data_to_send()

    [event] = protocol.receive(deepest(wire), now=0.0)

    assert isinstance(event, PeerErrored)
    assert_documented(event.error)
    assert len(str(event.error)) < 1000


@pytest.mark.parametrize(
    "wire",
    # Each name once; the fields fal's apps send and livegen ignores take any value.
    [{name: None} for name in dict.fromkeys(FAL_NAMES + PARAM_NAMES) if name not in IGNORED_FIELDS]
    + [{"image_size": {"width": None}}, {"image_size": {"height": None}}],
    ids=str,
)
def test_a_value_nested_to_the_limit_in_any_fal_field_is_refused_in_words(
    wire: dict[str, Any],
) -> None:
    protocol = open_fal()

    assert protocol.receive(deepest(wire), now=0.0) is None

    [frame] = protocol.data_to_send()
    assert json.loads(frame)["type"] == "x-fal-error"


# Images: valid files of each accepted format, damaged.


def _seed_images() -> list[bytes]:
    y, x = np.mgrid[0:16, 0:24]
    pixels = np.stack([x * 9, y * 13, (x + y) * 5], axis=-1).astype(np.uint8)
    return [encode_image(pixels, image_format, 80) for image_format in IMAGE_FORMATS]


@FUZZ
@given(mutated(st.sampled_from(_seed_images())))
def test_damaged_images_decode_or_are_refused_as_invalid(data: bytes) -> None:
    try:
        pixels = decode_image(data, max_pixels=64 * 64)
    except (InvalidImage, ImageTooLarge) as error:
        assert_documented(error)
        return
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[0] * pixels.shape[1] <= 64 * 64
