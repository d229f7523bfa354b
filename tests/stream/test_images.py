"""Image decode and encode: accepted formats, the pixel limit, and bytes that do not decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stream.errors import ErrorCode, ImageTooLarge, InvalidImage
from stream.images import CONTENT_TYPES, decode_image, encode_image
from stream.limits import Limits
from stream.params import IMAGE_FORMATS, ImageFormat

MAX_PIXELS = Limits().max_image_pixels


def gradient(width: int = 48, height: int = 32) -> np.ndarray:
    """Smooth RGB pixels, which lossy codecs keep close."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


def save(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def first_half(data: bytes) -> bytes:
    # Cut less and a PNG still decodes: PIL does not need the closing IEND chunk.
    return data[: len(data) // 2]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb_uint8(image_format: str) -> None:
    pixels = decode_image(save(Image.fromarray(gradient()), image_format), MAX_PIXELS)
    assert (pixels.shape, pixels.dtype) == ((32, 48, 3), np.uint8)
    assert pixels.flags.writeable  # torch.from_numpy warns on a read-only array


@pytest.mark.parametrize(
    ("mode", "colour", "rgb"),
    [("L", 200, [200, 200, 200]), ("RGBA", (200, 100, 50, 255), [200, 100, 50])],
)
def test_other_colour_modes_are_converted_to_rgb(
    mode: str, colour: int | tuple[int, ...], rgb: list[int]
) -> None:
    pixels = decode_image(save(Image.new(mode, (8, 4), colour), "PNG"), MAX_PIXELS)
    assert pixels.shape == (4, 8, 3)
    assert pixels[3, 7].tolist() == rgb


def test_png_round_trip_is_exact() -> None:
    pixels = gradient()
    assert np.array_equal(decode_image(encode_image(pixels, "png", 85), MAX_PIXELS), pixels)


@pytest.mark.parametrize("image_format", ["jpeg", "webp"])
def test_lossy_round_trip_is_close(image_format: ImageFormat) -> None:
    pixels = gradient()
    decoded = decode_image(encode_image(pixels, image_format, 95), MAX_PIXELS)
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).mean() < 3


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_encode_writes_the_format_its_content_type_names(image_format: ImageFormat) -> None:
    data = encode_image(gradient(), image_format, 80)
    opened = Image.open(io.BytesIO(data))
    assert opened.get_format_mimetype() == CONTENT_TYPES[image_format]
    assert opened.size == (48, 32)


def test_lower_quality_makes_smaller_jpeg() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_image(pixels, "jpeg", 10)) < len(encode_image(pixels, "jpeg", 90))


def test_gif_is_refused_as_a_format_not_accepted() -> None:
    with pytest.raises(InvalidImage, match="image format GIF is not accepted") as caught:
        decode_image(save(Image.fromarray(gradient()), "GIF"), MAX_PIXELS)
    assert caught.value.code == ErrorCode.INVALID_IMAGE


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        first_half(save(Image.fromarray(gradient()), "PNG")),
        first_half(save(Image.fromarray(gradient()), "JPEG")),
        first_half(save(Image.fromarray(gradient()), "WEBP")),
        # Headers intact, scan data cut: libjpeg-turbo refuses it, and so does Pillow after it.
        save(Image.fromarray(gradient(256, 256)), "JPEG")[:-200],
    ],
    ids=["empty", "garbage", "truncated png", "truncated jpeg", "truncated webp", "cut jpeg"],
)
def test_bytes_that_do_not_decode_are_refused_as_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="image does not decode") as caught:
        decode_image(data, MAX_PIXELS)
    assert caught.value.code == ErrorCode.INVALID_IMAGE
    assert not caught.value.fatal


def test_image_at_the_pixel_limit_is_accepted() -> None:
    data = save(Image.new("RGB", (40, 30)), "PNG")
    assert decode_image(data, max_pixels=40 * 30).shape == (30, 40, 3)


def test_image_over_the_pixel_limit_is_refused_with_image_too_large() -> None:
    # A solid colour PNG: 9 megapixels in a few kilobytes.
    data = save(Image.new("RGB", (3000, 3000), (10, 20, 30)), "PNG")
    with pytest.raises(ImageTooLarge, match="3000x3000 = 9000000 pixels") as caught:
        decode_image(data, MAX_PIXELS)
    assert caught.value.code == ErrorCode.IMAGE_TOO_LARGE
    assert not caught.value.fatal


def test_image_past_pils_bomb_limit_is_refused_with_image_too_large() -> None:
    # 200 megapixels: PIL refuses it while opening, before our own check can run.
    data = save(Image.new("1", (20_000, 10_000)), "PNG")
    with pytest.raises(ImageTooLarge, match=f"over the pixel limit of {MAX_PIXELS}") as caught:
        decode_image(data, MAX_PIXELS)
    assert caught.value.code == ErrorCode.IMAGE_TOO_LARGE
