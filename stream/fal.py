"""fal.ai's realtime framing on livegen sessions: routes, inputs, results, errors.

Apps written for fal's realtime clients (``fal.realtime.connect`` in
``@fal-ai/client``, ``fal_client.realtime`` in Python) open a WebSocket on
``/{owner}/{alias}[/...]/realtime`` and send each input as one binary msgpack
map with no ``type`` tag: an image and the params to make it with, in fal's
schema (``prompt``, ``image_url``, ``strength``, ``num_inference_steps``, ...).
Results go back as binary msgpack maps in fal's result shape (``images``,
``seed``, ``timings``, ...). Errors and meta go as JSON text frames,
``{"type": "x-fal-error", "error", "reason"}`` and ``{"type": "x-fal-message"}``:
that is how both clients tell them from results, and how an error reaches the
JS client's ``onError`` and makes the Python client's ``recv()`` raise.

This module is the sans-I/O part: the route and query, the input-to-params
mapping, the result, and :class:`FalProtocol`, the per-connection object that
turns received bytes into :class:`FalInput` and queues what to send.
``server/fal.py`` does the I/O.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

import msgpack

from stream.codec import unpack_map
from stream.errors import (
    InvalidField,
    InvalidImage,
    InvalidParams,
    LimitExceeded,
    MalformedMessage,
    ProtocolError,
    quoted,
)
from stream.limits import Limits
from stream.messages import FrameOut, ServerMessage, SessionClosing, SessionStarted
from stream.params import MAX_SEED, Params, PromptBlend, SeedBlend, parse_params_patch
from stream.protocol import ConnectionState, PeerProtocol

# fal's clients refuse values outside this range before they connect.
MAX_BUFFERING_RANGE = (1, 60)
# Leading path segments that fal's clients treat as a namespace before owner/alias.
NAMESPACES = frozenset({"workflows", "comfy"})
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The image of an input, under the names fal's realtime apps use for it.
IMAGE_FIELDS = ("image_url", "image_bytes", "image")
# fal's presets for ``image_size`` (fal.toolkit.image), width x height.
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
# Fields of fal's image apps that change nothing livegen makes: accepted and dropped,
# so an app that sends them still works. livegen runs no safety checker.
IGNORED_FIELDS = frozenset(
    {
        "enable_safety_checker",
        "enable_safety_checks",
        "safety_checker_version",
        "expand_prompt",
        "model_name",
        "crop_output",
        "preserve_aspect_ratio",
        "guidance_rescale",
    }
)
_PARAM_NAMES = frozenset(f.name for f in fields(Params)) - {"seed"}
_FAL_NAMES = (
    "prompt, negative_prompt, image_url (or image_bytes, image), strength, num_inference_steps, "
    "seed, guidance_scale, image_size, sync_mode, format (or output_format), num_images, "
    "request_id"
)


@dataclass(frozen=True, slots=True)
class FalRoute:
    """A realtime endpoint path, e.g. ``fal-ai/fast-lcm-diffusion/image-to-image/realtime``.

    ``scopes`` are the names a grant (an allow-list entry, a token's ``apps``) may
    use for it: the bare alias, as fal's clients ask tokens for, then every path
    prefix from ``owner/alias`` down to the full path.
    """

    path: str
    owner: str
    alias: str
    scopes: tuple[str, ...]

    def matches(self, grant: str) -> bool:
        grant = grant.strip().strip("/")
        return grant == "*" or grant in self.scopes


def parse_route(path: str) -> FalRoute | None:
    """The fal route at ``path`` (no query), or None when it is not one."""
    segments = path.strip("/").split("/")
    first = 1 if segments[0] in NAMESPACES else 0
    if segments[-1] != "realtime" or len(segments) - first < 3:
        return None
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        return None
    prefixes = ["/".join(segments[:end]) for end in range(first + 2, len(segments) + 1)]
    owner, alias = segments[first], segments[first + 1]
    return FalRoute("/".join(segments), owner, alias, (alias, *prefixes))


@dataclass(frozen=True, slots=True)
class FalQuery:
    token: str | None
    max_buffering: int


def parse_query(query: str) -> FalQuery:
    """``fal_jwt_token`` and ``max_buffering`` (default 1) from a handshake's query string.

    Raises ValueError, with words for the client, on a malformed value.
    """
    values = parse_qs(query, keep_blank_values=True)
    for name in ("fal_jwt_token", "max_buffering"):
        if len(values.get(name, [])) > 1:
            raise ValueError(f"{name} is given more than once")
    token = values.get("fal_jwt_token", [""])[0] or None
    raw = values.get("max_buffering", ["1"])[0]
    low, high = MAX_BUFFERING_RANGE
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise ValueError(f"max_buffering must be an integer from {low} to {high}, got {raw!r}")
    return FalQuery(token, int(raw))


@dataclass(frozen=True, slots=True)
class FalRequest:
    """What a result echoes from the input it answers."""

    seed: int | SeedBlend
    prompt: str | PromptBlend
    request_id: str | None
    # fal's apps put a data: URI in ``url`` unless ``sync_mode`` is false.
    inline_url: bool


@dataclass(frozen=True, slots=True)
class FalInput:
    """One fal input: an image (None for text-to-image) and the params it asks for.

    ``patch`` holds the livegen params named in the input (checked, without
    ``seed`` and ``num_inference_steps``, which :func:`resolve_params` maps).
    """

    image: bytes | None
    patch: dict[str, Any]
    num_inference_steps: int | None = None
    seed: int | None = None
    sync_mode: bool | None = None
    request_id: str | None = None

    def request(self, params: Params) -> FalRequest:
        return FalRequest(params.seed, params.prompt, self.request_id, self.sync_mode is not False)


def resolve_params(defaults: Params, fal_input: FalInput, seed_if_absent: int) -> Params:
    """The params one input runs with: each fal input stands alone, as on fal.

    Fields it leaves out take ``defaults`` (the pipeline's); a missing seed takes
    ``seed_if_absent`` (fal draws a random one and returns it in the result).

    ``num_inference_steps`` and ``strength`` take diffusers' meaning, mapped to
    livegen's (``steps`` counts the UNet passes run): for image to image with
    the Euler sampler, diffusers' img2img keeps the last ``int(n * strength)``
    steps of an n-step schedule, which are livegen's that many steps at strength
    ``steps / n`` (the same timesteps; at least one step, at the strength asked,
    where ``n * strength`` is under 1). The LCM sampler runs all n steps below
    ``strength``, as diffusers' LCM img2img does and livegen's own ``steps``.
    """
    params = defaults.updated(fal_input.patch)
    seed = seed_if_absent if fal_input.seed is None else fal_input.seed
    n = fal_input.num_inference_steps
    if n is None:
        return replace(params, seed=seed)
    if fal_input.image is None or params.scheduler == "lcm":
        return replace(params, seed=seed, steps=n)
    kept = int(n * params.strength)
    if kept < 1:
        return replace(params, seed=seed, steps=1)
    return replace(params, seed=seed, steps=kept, strength=kept / n)


def parse_fal_input(
    wire: dict[str, Any], limits: Limits, request_id: str | None = None
) -> FalInput:
    """Check one unpacked fal input (its ``request_id`` already taken) and map it to livegen.

    A nil field counts as absent, as in livegen's protocol: JavaScript apps send
    ``undefined`` fields as nil.
    """
    wire = {name: value for name, value in wire.items() if value is not None}
    if "type" in wire:
        raise InvalidField(
            "fal routes take fal inputs, maps without a 'type'; livegen's own protocol is at /ws"
        )
    for name, value in wire.items():
        if name not in IMAGE_FIELDS and isinstance(value, str) and len(value) > limits.max_str_len:
            raise LimitExceeded(f"field {name!r} is over {limits.max_str_len} characters")
    image = _take_image(wire)
    sync_mode = _take(wire, "sync_mode", bool)
    seed = _take(wire, "seed", int)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidParams(f"seed must be in [0, {MAX_SEED}], got {seed}")
    steps = _take(wire, "num_inference_steps", int)
    if steps is not None and not 1 <= steps <= 50:
        raise InvalidParams(f"num_inference_steps must be in [1, 50], got {steps}")
    if steps is not None and "steps" in wire:
        raise InvalidParams("send num_inference_steps or livegen's steps, not both")
    num_images = _take(wire, "num_images", int)
    if num_images not in (None, 1):
        raise InvalidParams(
            f"livegen makes one image per input; num_images must be 1, not {num_images}"
        )
    patch = parse_params_patch(_take_size(wire) | _take_format(wire))
    for name in IGNORED_FIELDS:
        wire.pop(name, None)
    unknown = [name for name in wire if name not in _PARAM_NAMES]
    if unknown:
        names = ", ".join(quoted(name) for name in unknown)
        raise InvalidField(
            f"unknown fields {names}; an input takes {_FAL_NAMES}, and livegen's params"
        )
    patch |= parse_params_patch(wire)
    return FalInput(image, patch, steps, seed, sync_mode, request_id)


def _take(wire: dict[str, Any], name: str, kind: type) -> Any:
    value = wire.pop(name, None)
    # bool is an int to Python, never to a client: True is not a seed.
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if value is not None and wrong:
        raise InvalidField(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _take_request_id(wire: dict[str, Any], limits: Limits) -> str | None:
    request_id: str | None = _take(wire, "request_id", str)
    if request_id is not None and len(request_id) > limits.max_str_len:
        raise LimitExceeded(f"field 'request_id' is over {limits.max_str_len} characters")
    return request_id


def _take_image(wire: dict[str, Any]) -> bytes | None:
    given = {name: wire.pop(name) for name in IMAGE_FIELDS if name in wire}
    if len(given) > 1:
        raise InvalidField(f"send the image once, not as {' and '.join(given)}")
    if not given:
        return None
    ((name, value),) = given.items()
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise InvalidField(
            f"{name!r} must be image bytes or a data: URI, got {type(value).__name__}"
        )
    if not value.startswith("data:"):
        raise InvalidImage(
            f"{name!r} must be image bytes or a data: URI; livegen does not fetch URLs"
        )
    return decode_data_uri(value)


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:[<type>][;base64],<data>`` URI (RFC 2397)."""
    header, comma, body = uri[len("data:") :].partition(",")
    if not comma:
        raise InvalidImage("the data: URI has no ',' before its data")
    if not header.lower().endswith(";base64"):
        return unquote_to_bytes(body)
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        raise InvalidImage(
            "the data: URI's data is not valid base64 (A-Z, a-z, 0-9, +, / and = padding)"
        ) from None


def _take_size(wire: dict[str, Any]) -> dict[str, Any]:
    size = wire.pop("image_size", None)
    if size is None:
        return {}
    if "width" in wire or "height" in wire:
        raise InvalidParams("send image_size or width and height, not both")
    if isinstance(size, str):
        if size not in IMAGE_SIZE_PRESETS:
            raise InvalidParams(
                f"image_size {size[:64]!r} is not one of {', '.join(IMAGE_SIZE_PRESETS)}"
            )
        width, height = IMAGE_SIZE_PRESETS[size]
        return {"width": width, "height": height}
    if isinstance(size, dict) and set(size) <= {"width", "height"}:
        return size
    raise InvalidParams("image_size must be a preset name or a map of width and height")


def _take_format(wire: dict[str, Any]) -> dict[str, Any]:
    # fal's LCM apps call it "format", its turbo apps "output_format".
    names = [name for name in ("format", "output_format") if name in wire]
    if len(names) > 1:
        raise InvalidParams("send format or output_format, not both")
    return {"output_format": wire.pop(names[0])} if names else {}


def pack_result(frame: FrameOut, request: FalRequest) -> bytes:
    """A generated frame as fal's image apps return a result, packed as msgpack.

    ``images[0].content`` holds the raw bytes (fal's realtime image type);
    ``url`` repeats them as a data: URI, which is what fal's apps return for
    ``sync_mode``, unless the input set ``sync_mode`` false (livegen has no CDN
    to put a URL on). ``timings`` are in seconds, as fal's are.
    """
    image: dict[str, Any] = {
        "content": frame.image,
        "content_type": frame.content_type,
        "width": frame.width,
        "height": frame.height,
    }
    if request.inline_url:
        encoded = base64.b64encode(frame.image).decode()
        image["url"] = f"data:{frame.content_type};base64,{encoded}"
    timings = {stage: ms / 1000.0 for stage, ms in frame.timings.items()}
    result: dict[str, Any] = {
        "images": [image],
        "seed": request.seed,
        "prompt": request.prompt,
        "has_nsfw_concepts": [False],
        "timings": {"inference": timings.pop("infer", 0.0), **timings},
    }
    if request.request_id is not None:
        result["request_id"] = request.request_id
    data: bytes = msgpack.packb(result, use_bin_type=True)
    return data


def error_frame(error: ProtocolError, request_id: str | None = None) -> str:
    """An ``x-fal-error`` text frame; ``error`` is livegen's code in fal's upper case."""
    payload: dict[str, Any] = {"type": "x-fal-error", "error": error.code.upper()}
    payload["reason"] = str(error)
    if request_id is not None:
        payload["request_id"] = request_id
    return json.dumps(payload, separators=(",", ":"))


def meta_frame(action: str, **details: Any) -> str:
    """An ``x-fal-message`` text frame: both clients skip these silently."""
    return json.dumps({"type": "x-fal-message", "action": action, **details}, separators=(",", ":"))


class FalProtocol(PeerProtocol):
    """One fal connection's protocol object: bytes in, inputs and frames to send out.

    Like :class:`~stream.protocol.SessionProtocol`, peer errors never raise out
    of :meth:`receive`: they are queued as ``x-fal-error`` frames, and a fatal
    one sets :attr:`close_code`. Results do not pass through here: the
    transport keeps only the newest one unsent and packs it with
    :func:`pack_result` when it leaves.
    """

    def __init__(self, limits: Limits, now: float) -> None:
        super().__init__(limits, now)
        # Data URIs carry the image as text: a string may be as long as a message.
        self._wire_limits = replace(limits, max_str_len=limits.max_message_bytes)

    def receive(self, data: bytes | str, now: float) -> FalInput | None:
        """Parse one message received at ``now``; None when it was refused (or dropped)."""
        if self.state is not ConnectionState.OPEN:
            return None
        request_id = None
        try:
            if not self._within_rate(now, "inputs"):
                return None
            if isinstance(data, str):
                raise MalformedMessage("fal inputs are binary msgpack maps, not text frames")
            wire = unpack_map(data, self._wire_limits)
            request_id = _take_request_id(wire, self.limits)
            return parse_fal_input(wire, self.limits, request_id)
        except ProtocolError as error:
            self.send_error(error, request_id)
            return None

    def accept(self, started: SessionStarted) -> None:
        """The session is open; fal clients are not told its id (they cannot resume)."""
        self.state = ConnectionState.OPEN

    def send(self, message: ServerMessage) -> None:
        """Pass on the shutdown notice; fal has no frame for livegen's other messages."""
        if isinstance(message, SessionClosing):
            self._queue(meta_frame("closing", reason=message.reason))

    def send_error(self, error: ProtocolError, request_id: str | None = None) -> None:
        """Tell the peer about ``error``; a fatal one also closes the connection."""
        self._queue(error_frame(error, request_id))
        if error.close_code is not None:
            self.close(error.close_code, str(error))
