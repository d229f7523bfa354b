"""fal's realtime framing, sans I/O: routes, query, input mapping, results, the protocol object."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest

from stream.errors import CloseCode, ErrorCode, InvalidParams, MessageTooBig, ProtocolError
from stream.fal import (
    FalInput,
    FalProtocol,
    FalRequest,
    decode_data_uri,
    error_frame,
    pack_result,
    parse_fal_input,
    parse_query,
    parse_route,
    resolve_params,
)
from stream.limits import Limits
from stream.messages import FrameOut, SessionClosing, SessionStarted
from stream.params import Params
from stream.protocol import MAX_PENDING_MESSAGES, ConnectionState

LIMITS = Limits()
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg"


def parse(**fields: object) -> FalInput:
    return parse_fal_input(dict(fields), LIMITS)


def refusal(**fields: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        parse(**fields)
    return refused.value


# Routes and the handshake's query.


@pytest.mark.parametrize(
    ("path", "owner", "alias", "scopes"),
    [
        (
            "/fal-ai/fast-lcm-diffusion/realtime",
            "fal-ai",
            "fast-lcm-diffusion",
            (
                "fast-lcm-diffusion",
                "fal-ai/fast-lcm-diffusion",
                "fal-ai/fast-lcm-diffusion/realtime",
            ),
        ),
        (
            "/fal-ai/fast-turbo-diffusion/image-to-image/realtime/",
            "fal-ai",
            "fast-turbo-diffusion",
            (
                "fast-turbo-diffusion",
                "fal-ai/fast-turbo-diffusion",
                "fal-ai/fast-turbo-diffusion/image-to-image",
                "fal-ai/fast-turbo-diffusion/image-to-image/realtime",
            ),
        ),
        (
            "/workflows/me/sketch/realtime",
            "me",
            "sketch",
            ("sketch", "workflows/me/sketch", "workflows/me/sketch/realtime"),
        ),
    ],
)
def test_a_realtime_path_names_owner_alias_and_the_scopes_that_grant_it(path, owner, alias, scopes):
    route = parse_route(path)

    assert route is not None
    assert (route.owner, route.alias, route.scopes) == (owner, alias, scopes)
    assert route.path == path.strip("/")


@pytest.mark.parametrize(
    "path",
    [
        "/ws",
        "/",
        "/fal-ai/realtime",
        "/workflows/me/realtime",
        "/a/b/c",
        "/a//realtime",
        "/a/../b/realtime",
    ],
)
def test_other_paths_are_not_fal_routes(path):
    assert parse_route(path) is None


@pytest.mark.parametrize(
    ("grant", "granted"),
    [
        ("*", True),
        ("fast-lcm-diffusion", True),  # the alias, as fal's clients ask tokens for
        ("fal-ai/fast-lcm-diffusion", True),
        ("/fal-ai/fast-lcm-diffusion/ ", True),
        ("fal-ai/fast-lcm-diffusion/image-to-image", True),
        ("fal-ai/fast-lcm-diffusion/image-to-image/realtime", True),  # what tokenProvider gets
        ("fal-ai", False),
        ("fal-ai/fast-turbo-diffusion", False),
        ("fal-ai/fast-lcm-diffusion/inpainting", False),
    ],
)
def test_a_grant_matches_the_alias_or_a_path_prefix_from_owner_alias_on(grant, granted):
    route = parse_route("/fal-ai/fast-lcm-diffusion/image-to-image/realtime")
    assert route is not None and route.matches(grant) is granted


def test_the_query_gives_the_token_and_max_buffering_with_its_default():
    assert parse_query("") == parse_query("fal_jwt_token=") == parse_query("max_buffering=1")
    assert parse_query("").token is None and parse_query("").max_buffering == 1
    query = parse_query("fal_jwt_token=a.b.c&max_buffering=60&other=1")
    assert (query.token, query.max_buffering) == ("a.b.c", 60)


@pytest.mark.parametrize(
    ("query", "mention"),
    [
        ("max_buffering=0", "from 1 to 60"),
        ("max_buffering=61", "from 1 to 60"),
        ("max_buffering=two", "'two'"),
        ("max_buffering=%D9%A3", "from 1 to 60"),  # an Arabic-Indic digit is not ASCII
        ("max_buffering=", "''"),
        ("fal_jwt_token=a&fal_jwt_token=b", "fal_jwt_token is given more than once"),
    ],
)
def test_a_malformed_query_is_refused_with_words(query, mention):
    with pytest.raises(ValueError, match="max_buffering|fal_jwt_token") as refused:
        parse_query(query)
    assert mention in str(refused.value)


# Inputs.


def test_a_fal_image_to_image_input_maps_to_livegen_params():
    fal_input = parse(
        prompt="a fox",
        negative_prompt="blurry",
        image_url=JPEG,
        strength=1,
        num_inference_steps=4,
        seed=42,
        guidance_scale=1.5,
        image_size="landscape_16_9",
        sync_mode=True,
        format="png",
        num_images=1,
        enable_safety_checker=True,
        model_name="stabilityai/stable-diffusion-xl-base-1.0",
        quality=90,  # livegen's own params are welcome too
    )

    assert fal_input == FalInput(
        image=JPEG,
        patch={
            "prompt": "a fox",
            "negative_prompt": "blurry",
            "strength": 1.0,
            "guidance_scale": 1.5,
            "width": 1024,
            "height": 576,
            "output_format": "png",
            "quality": 90,
        },
        num_inference_steps=4,
        seed=42,
        sync_mode=True,
    )


@pytest.mark.parametrize("field", ["image_url", "image_bytes", "image"])
def test_the_image_comes_as_bytes_under_any_of_fals_names(field):
    assert parse(**{field: JPEG}).image == JPEG


def test_an_input_without_an_image_asks_for_text_to_image_and_nil_is_absent():
    assert parse(prompt="a fox") == FalInput(image=None, patch={"prompt": "a fox"})
    assert parse(image_url=None, prompt=None, seed=None) == FalInput(image=None, patch={})


def test_a_data_uri_image_is_decoded():
    encoded = base64.b64encode(JPEG).decode()
    assert parse(image_url=f"data:image/jpeg;base64,{encoded}").image == JPEG
    assert decode_data_uri("data:;BASE64," + encoded) == JPEG
    assert decode_data_uri("data:text/plain,a%20b") == b"a b"


@pytest.mark.parametrize(
    ("size", "patch"),
    [({"width": 640, "height": 384}, {"width": 640, "height": 384}), ({}, {})],
)
def test_image_size_as_a_map_is_width_and_height(size, patch):
    assert parse(image_size=size).patch == patch


def test_output_format_is_fals_other_name_for_format():
    assert parse(output_format="jpeg").patch == {"output_format": "jpeg"}


@pytest.mark.parametrize(
    ("fields", "code", "mention"),
    [
        ({"type": "frame"}, ErrorCode.INVALID_FIELD, "livegen's own protocol is at /ws"),
        ({"prompt": "x" * (LIMITS.max_str_len + 1)}, ErrorCode.LIMIT_EXCEEDED, "'prompt'"),
        ({"sync_mode": "yes"}, ErrorCode.INVALID_FIELD, "'sync_mode' must be bool, got str"),
        ({"seed": True}, ErrorCode.INVALID_FIELD, "'seed' must be int, got bool"),
        ({"seed": -1}, ErrorCode.INVALID_PARAMS, "seed must be in [0, 4294967295]"),
        ({"num_inference_steps": 0}, ErrorCode.INVALID_PARAMS, "in [1, 50], got 0"),
        (
            {"num_inference_steps": 2, "steps": 1},
            ErrorCode.INVALID_PARAMS,
            "num_inference_steps or livegen's steps",
        ),
        ({"num_images": 2}, ErrorCode.INVALID_PARAMS, "num_images must be 1, not 2"),
        ({"strength": 1.5}, ErrorCode.INVALID_PARAMS, "'strength' must be in [0.0, 1.0]"),
        ({"promt": "a fox"}, ErrorCode.INVALID_FIELD, "unknown fields 'promt'"),
        (
            {"image_url": JPEG, "image": JPEG},
            ErrorCode.INVALID_FIELD,
            "not as image_url and image",
        ),
        ({"image_url": 5}, ErrorCode.INVALID_FIELD, "bytes or a data: URI, got int"),
        (
            {"image_url": "https://example.com/a.jpg"},
            ErrorCode.INVALID_IMAGE,
            "livegen does not fetch URLs",
        ),
        ({"image_url": "data:image/png;base64"}, ErrorCode.INVALID_IMAGE, "no ','"),
        ({"image_url": "data:image/png;base64,@@@"}, ErrorCode.INVALID_IMAGE, "not valid base64"),
        ({"image_url": "data:image/png;base64,é"}, ErrorCode.INVALID_IMAGE, "not valid base64"),
        (
            {"image_size": "square", "width": 512},
            ErrorCode.INVALID_PARAMS,
            "image_size or width and height",
        ),
        ({"image_size": "huge"}, ErrorCode.INVALID_PARAMS, "'huge' is not one of square_hd"),
        ({"image_size": {"depth": 3}}, ErrorCode.INVALID_PARAMS, "a preset name or a map"),
        ({"image_size": 512}, ErrorCode.INVALID_PARAMS, "a preset name or a map"),
        ({"image_size": {"width": 100}}, ErrorCode.INVALID_PARAMS, "multiple of 8"),
        ({"format": "png", "output_format": "png"}, ErrorCode.INVALID_PARAMS, "not both"),
        ({"format": "gif"}, ErrorCode.INVALID_PARAMS, "jpeg, webp, png"),
    ],
)
def test_a_bad_input_is_refused_with_a_code_and_words(fields, code, mention):
    error = refusal(**fields)
    assert error.code == code
    assert mention in str(error)


def test_a_long_image_string_is_not_held_to_the_string_limit():
    image = b"x" * LIMITS.max_str_len  # longer than the limit, once in base64
    encoded = base64.b64encode(image).decode()
    assert parse(image_url=f"data:image/jpeg;base64,{encoded}").image == image


# From a fal input to the params it runs with.


def test_an_input_takes_the_pipelines_defaults_for_what_it_leaves_out():
    defaults = Params(prompt="default", steps=2, strength=0.7)
    params = resolve_params(defaults, parse(image_url=JPEG, seed=5), seed_if_absent=9)
    assert params == Params(prompt="default", steps=2, strength=0.7, seed=5)
    assert resolve_params(defaults, parse(), seed_if_absent=9).seed == 9  # fal draws one


@pytest.mark.parametrize(
    ("fields", "scheduler", "steps", "strength"),
    [
        # diffusers' img2img keeps int(n * strength) steps of n: the same timesteps
        # as livegen's that many steps at strength steps / n.
        ({"num_inference_steps": 2, "strength": 0.5}, "euler", 1, 0.5),
        ({"num_inference_steps": 4, "strength": 0.83}, "euler", 3, 0.75),
        ({"num_inference_steps": 3, "strength": 0.44}, "euler", 1, 1 / 3),
        ({"num_inference_steps": 1, "strength": 0.3}, "euler", 1, 0.3),  # one pass at least
        ({"num_inference_steps": 4, "strength": 0.5}, "lcm", 4, 0.5),  # LCM runs them all
    ],
)
def test_num_inference_steps_and_strength_take_diffusers_meaning(
    fields, scheduler, steps, strength
):
    defaults = Params(scheduler=scheduler)
    params = resolve_params(defaults, parse(image_url=JPEG, **fields), seed_if_absent=0)
    assert (params.steps, params.strength) == (steps, pytest.approx(strength))


def test_text_to_image_runs_every_step_asked_for():
    fal_input = parse(num_inference_steps=3, strength=0.5)
    assert resolve_params(Params(), fal_input, seed_if_absent=0).steps == 3


def test_a_request_remembers_what_the_result_echoes():
    params = Params(seed=7, prompt="a fox")
    assert FalInput(None, {}, request_id="r").request(params) == FalRequest(7, "a fox", "r", True)
    assert not FalInput(None, {}, sync_mode=False).request(params).inline_url
    assert FalInput(None, {}, sync_mode=True).request(params).inline_url


# Results and errors.


def frame_out(timings: dict[str, float]) -> FrameOut:
    return FrameOut(
        image=JPEG,
        content_type="image/jpeg",
        id=3,
        width=64,
        height=48,
        timings=timings,
        dropped=0,
    )


def test_a_result_has_fals_shape_with_the_image_bytes_and_a_data_uri():
    frame = frame_out({"queue": 1.0, "decode": 2.0, "infer": 30.0, "encode": 4.0})
    result = msgpack.unpackb(pack_result(frame, FalRequest(42, "a fox", "r1", True)))

    assert result == {
        "images": [
            {
                "content": JPEG,
                "url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode(),
                "content_type": "image/jpeg",
                "width": 64,
                "height": 48,
            }
        ],
        "seed": 42,
        "prompt": "a fox",
        "has_nsfw_concepts": [False],
        "timings": {"inference": 0.03, "queue": 0.001, "decode": 0.002, "encode": 0.004},
        "request_id": "r1",
    }


def test_without_sync_mode_a_result_has_only_the_bytes():
    result = msgpack.unpackb(pack_result(frame_out({}), FalRequest(1, "", None, False)))
    assert set(result["images"][0]) == {"content", "content_type", "width", "height"}
    assert "request_id" not in result
    assert result["timings"] == {"inference": 0.0}  # an unchanged input runs no model


def test_an_error_is_an_x_fal_error_text_frame():
    error = InvalidParams("param 'strength' must be in [0.0, 1.0], got 2.0")
    assert json.loads(error_frame(error, "r1")) == {
        "type": "x-fal-error",
        "error": "INVALID_PARAMS",
        "reason": "param 'strength' must be in [0.0, 1.0], got 2.0",
        "request_id": "r1",
    }
    assert "request_id" not in json.loads(error_frame(error))


# The protocol object.


def opened(limits: Limits = LIMITS) -> FalProtocol:
    protocol = FalProtocol(limits, now=0.0)
    protocol.accept(SessionStarted("id", "token", False, "passthrough", {}, {}))
    assert protocol.data_to_send() == []  # fal clients are not told about the session
    return protocol


def packed(**fields: object) -> bytes:
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def test_an_input_comes_out_of_receive():
    protocol = opened()
    fal_input = protocol.receive(packed(prompt="a fox", image_url=JPEG, request_id="r"), 0.0)
    assert fal_input == FalInput(JPEG, {"prompt": "a fox"}, request_id="r")
    assert protocol.data_to_send() == []


def test_nothing_is_read_before_the_session_opens_or_after_the_close():
    protocol = FalProtocol(LIMITS, now=0.0)
    assert protocol.receive(packed(prompt="x"), 0.0) is None
    protocol.accept(SessionStarted("id", "token", False, "passthrough", {}, {}))
    protocol.close(CloseCode.NORMAL, "bye")
    assert protocol.receive(packed(prompt="x"), 0.0) is None
    assert protocol.data_to_send() == []


@pytest.mark.parametrize(
    ("data", "error", "request_id"),
    [
        ("text", "MALFORMED_MESSAGE", None),
        (b"\xc1", "MALFORMED_MESSAGE", None),
        (packed(request_id=5), "INVALID_FIELD", None),
        (packed(request_id="x" * (LIMITS.max_str_len + 1)), "LIMIT_EXCEEDED", None),
        (packed(request_id="r7", strength=3), "INVALID_PARAMS", "r7"),
    ],
)
def test_a_refused_message_is_answered_with_an_error_frame(data, error, request_id):
    protocol = opened()
    assert protocol.receive(data, 0.0) is None
    [frame] = protocol.data_to_send()
    assert isinstance(frame, str)
    payload = json.loads(frame)
    assert (payload["error"], payload.get("request_id")) == (error, request_id)
    assert protocol.state is ConnectionState.OPEN


def test_a_flood_is_dropped_with_one_notice_a_second():
    protocol = opened(Limits(messages_per_s=1.0, message_burst=1))
    assert protocol.receive(packed(prompt="a"), 0.0) is not None
    assert protocol.receive(packed(prompt="b"), 0.0) is None
    assert protocol.receive(packed(prompt="c"), 0.1) is None
    [notice] = protocol.data_to_send()
    assert json.loads(notice)["error"] == "RATE_LIMITED"


def test_a_fatal_error_closes_with_its_code():
    protocol = opened()
    protocol.send_error(MessageTooBig("too big"))
    protocol.send_error(InvalidParams("later"))
    protocol.close(CloseCode.NORMAL, "later")  # the first close code counts

    assert protocol.state is ConnectionState.CLOSED
    assert (protocol.close_code, protocol.close_reason) == (CloseCode.MESSAGE_TOO_BIG, "too big")
    assert [json.loads(frame)["error"] for frame in protocol.data_to_send()] == [
        "MESSAGE_TOO_BIG",
        "INVALID_PARAMS",
    ]


def test_the_shutdown_notice_is_a_meta_frame_and_other_messages_have_none():
    protocol = opened()
    protocol.send(SessionClosing(reason="shutdown"))
    protocol.send(frame_out({}))
    assert [json.loads(frame) for frame in protocol.data_to_send()] == [
        {"type": "x-fal-message", "action": "closing", "reason": "shutdown"}
    ]


def test_a_peer_that_reads_nothing_is_closed_instead_of_queued_for():
    protocol = opened()
    for _ in range(MAX_PENDING_MESSAGES + 1):
        protocol.send_error(InvalidParams("again"))

    assert len(protocol.data_to_send()) == MAX_PENDING_MESSAGES
    assert protocol.close_code == CloseCode.POLICY_VIOLATION
