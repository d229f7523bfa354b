"""The web client's files, read once at start and answered from memory.

Each file carries validators (a strong ``ETag`` from its bytes and
``Last-Modified`` from its file) and ``Cache-Control: no-cache``: a browser keeps
its copy and asks again each time, and an unchanged file costs a bodiless 304.
So a page always gets the files of the livegen it talks to (an upgrade applies
at once) without downloading them again. The pages themselves keep what they
need once loaded (the icon sprite goes into the page), so an unreachable server
costs them nothing already shown.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from websockets.http11 import Request, Response

from server.http import response

CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as in the header
    last_modified: str  # an HTTP date

    def answer(self, request: Request) -> Response:
        """200 with the body, or 304 when the browser's copy is this one."""
        if self._unchanged_for(request):
            answer = response(304, b"", self.content_type, CACHE_CONTROL)
            # A 304 has no body: its Content-Length would describe one anyway.
            del answer.headers["Content-Length"]
        else:
            answer = response(200, self.body, self.content_type, CACHE_CONTROL)
        answer.headers["ETag"] = self.etag
        answer.headers["Last-Modified"] = self.last_modified
        return answer

    def _unchanged_for(self, request: Request) -> bool:
        # RFC 9110, 13.2.2: If-None-Match, when present, decides alone.
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or self.etag in tags
        if_modified_since = request.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False  # not a date: answer in full, as if it were absent
        return since >= email.utils.parsedate_to_datetime(self.last_modified)


def load_static_files(root: Path) -> dict[str, StaticFile]:
    """Map URL path to file for every file under ``root`` (``/`` is ``/index.html``)."""
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.parts):
            url = "/" + path.relative_to(root).as_posix()
            files[url] = _read(path)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def _read(path: Path) -> StaticFile:
    body = path.read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type == "application/javascript":
        content_type += "; charset=utf-8"
    return StaticFile(
        body=body,
        content_type=content_type,
        etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        last_modified=email.utils.formatdate(int(path.stat().st_mtime), usegmt=True),
    )
