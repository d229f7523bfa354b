"""The Python client's CLI against a real server: send a file, save what comes back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from livegen_client.cli import main
from server.tokens import mint_token
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
    with Image.open(saved) as image:
        assert np.array_equal(np.asarray(image), make_pixels(80, 48, seed=4))


async def test_cli_reports_a_refused_image_and_fails(start_server, tmp_path, capsys):
    server = await start_server()
    source = tmp_path / "notes.png"
    source.write_bytes(b"this is not an image")

    status = await asyncio.to_thread(main, [str(source), "--url", ws_url(server)])

    assert status == 1
    assert "invalid_image" in capsys.readouterr().err


async def test_cli_reports_a_refused_connection_and_takes_a_token_in_the_url(
    start_server, tmp_path, capsys
):
    server = await start_server(api_keys="test-api-key")
    source = tmp_path / "sketch.png"
    source.write_bytes(encode(make_pixels(64, 64, seed=6), "PNG"))
    token = mint_token("test-api-key", ["livegen"], ttl_s=60)

    refused = await asyncio.to_thread(main, [str(source), "--url", ws_url(server)])
    error = capsys.readouterr().err
    accepted = await asyncio.to_thread(
        main, [str(source), "--url", f"{ws_url(server)}?token={token}"]
    )

    assert refused == 1
    assert "refused the connection: HTTP 401 this server needs a token" in error
    assert accepted == 0


async def test_cli_takes_the_output_format_from_the_out_suffix(start_server, tmp_path):
    server = await start_server()
    source = tmp_path / "photo.jpg"
    source.write_bytes(encode(make_pixels(64, 64, seed=5)))
    out = tmp_path / "result.webp"

    status = await asyncio.to_thread(
        main, [str(source), "--url", ws_url(server), "--out", str(out)]
    )

    assert status == 0
    with Image.open(out) as saved:
        assert saved.format == "WEBP"


@pytest.mark.parametrize(
    ("arguments", "mention"),
    [
        (["--out", "x.gif"], "--out x.gif: livegen sends JPEG, PNG or WebP"),
        (["--out", "result"], "--out result: livegen sends JPEG, PNG or WebP"),
        (["--out", "x.png", "--format", "jpeg"], "--out x.png is not jpeg"),
    ],
)
def test_cli_refuses_an_out_name_that_would_misname_the_image(arguments, mention, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--prompt", "a fox", *arguments])
    assert exited.value.code == 2
    assert mention in capsys.readouterr().err
