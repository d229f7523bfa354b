"""``livegen-client [IMAGE]``: send one image (or just a prompt) to livegen, save the result."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus

from livegen_client.client import LivegenClient, ServerError

EXTENSIONS = {"image/jpeg": ".jpg", "image/webp": ".webp", "image/png": ".png"}
FORMATS_BY_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".png": "png"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livegen-client", description="Send an image to livegen and save what comes back."
    )
    parser.add_argument(
        "image",
        type=Path,
        nargs="?",
        help="JPEG, PNG or WebP file to send; without one, text-to-image from --prompt",
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="server WebSocket URL")
    parser.add_argument(
        "--out", type=Path, help="where to save the result (default: IMAGE.out.EXT or out.EXT)"
    )
    parser.add_argument(
        "--busy-timeout",
        type=float,
        default=60.0,
        help="seconds to keep retrying a server that is full (server busy); 0 to give up at once",
    )
    parser.add_argument("--prompt")
    parser.add_argument("--strength", type=float)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("jpeg", "webp", "png"),
        help="output format (default: from the --out suffix, else jpeg)",
    )
    args = parser.parse_args(argv)
    if args.out is not None:
        # The bytes saved are the server's: a suffix that names another format would lie.
        suffix_format = FORMATS_BY_SUFFIX.get(args.out.suffix.lower())
        if suffix_format is None:
            parser.error(
                f"--out {args.out}: livegen sends JPEG, PNG or WebP; end the name in "
                f"{', '.join(FORMATS_BY_SUFFIX)}"
            )
        if args.output_format not in (None, suffix_format):
            parser.error(f"--out {args.out} is not {args.output_format}: change one of them")
        args.output_format = suffix_format
    params = {
        name: getattr(args, name)
        for name in ("prompt", "strength", "steps", "seed", "output_format")
        if getattr(args, name) is not None
    }
    # "server busy; retrying in 1 s" and the like, on stderr.
    logging.basicConfig(format="livegen-client: %(message)s")
    logging.getLogger("livegen_client").setLevel(logging.INFO)
    try:
        out = asyncio.run(send_image(args.url, args.image, args.out, params, args.busy_timeout))
    except ServerError as exc:
        print(f"livegen-client: the server refused the request: {exc}", file=sys.stderr)
        return 1
    except InvalidStatus as exc:  # refused at the handshake, e.g. for want of a token
        answer = exc.response
        reason = answer.body.decode(errors="replace").strip()
        print(
            f"livegen-client: the server refused the connection: HTTP {answer.status_code} "
            f"{reason}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"livegen-client: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


async def send_image(
    url: str,
    image: Path | None,
    out: Path | None,
    params: dict[str, Any],
    busy_timeout_s: float = 60.0,
) -> Path:
    data = None if image is None else await asyncio.to_thread(image.read_bytes)
    async with await LivegenClient.connect(
        url, params=params, busy_timeout_s=busy_timeout_s
    ) as client:
        await client.send_frame(data)
        frame = await client.next_frame()
    suffix = EXTENSIONS[frame.content_type]
    out = out or (Path("out" + suffix) if image is None else image.with_suffix(".out" + suffix))
    await asyncio.to_thread(out.write_bytes, frame.image)
    timings = ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in frame.timings.items())
    print(f"{frame.width}x{frame.height} {frame.content_type} ({timings})", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
