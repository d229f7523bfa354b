"""The Python client's CLI against a real server: send a file, save what comes back."""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image

from livegen_client.cli import main
from tests.helpers import encode, make_pixels, ws_url


async def test_cli_sends_an_image_and_saves_the_result(start_server, tmp_path, capsys):
    server = await start_server()
    source = tmp_path / "sketch.png"
    source.write_bytes(encode(make_pixels(80, 48, seed=4), "PNG"))

    status = await asyncio.to_thread(
        main, [str(source), "--url", ws_url(server), "--format", "png", "--prompt", "a fox"]
    )
    saved = tmp_path / "sketch.out.png"

    assert status == 0
    assert capsys.readouterr().out.strip() == str(saved)
    assert np.array_equal(np.asarray(Image.open(saved)), make_pixels(80, 48, seed=4))


async def test_cli_reports_a_refused_image_and_fails(start_server, tmp_path, capsys):
    server = await start_server()
    source = tmp_path / "notes.png"
    source.write_bytes(b"this is not an image")

    status = await asyncio.to_thread(main, [str(source), "--url", ws_url(server)])

    assert status == 1
    assert "invalid_image" in capsys.readouterr().err
