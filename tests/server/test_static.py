"""The web client's files carry validators: a browser's copy is checked with a
bodiless 304, and changed files come back in full."""

from __future__ import annotations

import asyncio
import email.utils
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import WAIT_S, http_url

WEB_ROOT = Path(__file__).resolve().parents[2] / "clients" / "web"


async def fetch(url: str, headers: dict[str, str] | None = None):
    """(status, headers, body) of a GET; a 304 is an answer, not an error."""

    def run():
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    return await asyncio.to_thread(run)


async def test_icons_come_with_validators_and_an_unchanged_copy_gets_a_bodiless_304(
    start_server,
):
    server = await start_server()
    url = http_url(server, "/img/icons.svg")
    status, headers, body = await fetch(url)
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    revalidated = await fetch(url, {"If-None-Match": etag})
    by_date = await fetch(url, {"If-Modified-Since": last_modified})
    weak_among_others = await fetch(url, {"If-None-Match": f'"other", W/{etag}'})

    assert status == 200 and body == (WEB_ROOT / "img" / "icons.svg").read_bytes()
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers.get_all("Cache-Control") == ["no-cache"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 8
    modified = email.utils.parsedate_to_datetime(last_modified).timestamp()
    assert int(modified) == int((WEB_ROOT / "img" / "icons.svg").stat().st_mtime)
    for answer in (revalidated, by_date, weak_among_others):
        status, headers, body = answer
        assert status == 304 and body == b""
        assert headers["ETag"] == etag and headers["Last-Modified"] == last_modified
        assert headers["Content-Length"] is None


async def test_a_changed_or_unknown_copy_gets_the_file_in_full(start_server):
    server = await start_server()
    url = http_url(server, "/css/app.css")
    _, headers, _ = await fetch(url)
    older = email.utils.formatdate(
        email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp() - 60, usegmt=True
    )

    for sent in (
        {"If-None-Match": '"an-older-version"'},
        # If-None-Match decides alone: a date that matches does not save a changed tag.
        {"If-None-Match": '"an-older-version"', "If-Modified-Since": headers["Last-Modified"]},
        {"If-Modified-Since": older},
        {"If-Modified-Since": "not a date"},
    ):
        status, answer, body = await fetch(url, sent)
        assert status == 200, sent
        assert body == (WEB_ROOT / "css" / "app.css").read_bytes()
        assert answer["ETag"] == headers["ETag"]


async def test_every_file_and_the_index_have_their_own_tag(start_server):
    server = await start_server()
    tags = {}
    for path in ("/", "/index.html", "/prompt.html", "/livegen.js", "/img/logo.svg"):
        status, headers, _ = await fetch(http_url(server, path))
        assert status == 200
        tags[path] = headers["ETag"]

    assert tags["/"] == tags["/index.html"]
    assert len(set(tags.values())) == 4
