"""Image bytes to pixels and back, with the pixel limit checked before decoding.

Pixels are ``numpy`` arrays of shape (height, width, 3), dtype uint8, RGB.
These calls take milliseconds: the server runs them on its worker threads,
never on the event loop.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from stream.errors import ImageTooLarge, InvalidImage
from stream.params import ImageFormat

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
CONTENT_TYPES: dict[ImageFormat, str] = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "png": "image/png",
}


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own pixel check below replaces PIL's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.format not in ACCEPTED_FORMATS:
            raise InvalidImage(
                f"image format {image.format} is not accepted; send JPEG, PNG or WebP"
            )
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
            )
        pixels = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        # PIL refuses images far over its own limit before we can count their pixels.
        raise ImageTooLarge(f"image is over the pixel limit of {max_pixels}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"image does not decode: {exc}") from None
    return pixels


def encode_image(pixels: np.ndarray, image_format: ImageFormat, quality: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if image_format == "png":
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, image_format.upper(), quality=quality)
    return buffer.getvalue()
