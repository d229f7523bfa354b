"""WHIP ingest (RFC 9725) and WHEP playback: livegen as a video node for OBS and players.

``POST /whip`` with an SDP offer starts a session (params from the query string)
and its call, and answers ``201 Created`` with the SDP answer (all candidates in
it), the resource's ``Location`` and ``ETag``, the ICE servers as ``Link``
headers, and the session's id and resume token as ``Livegen-Session-Id`` and
``Livegen-Resume-Token``: a WebSocket client that resumes the session changes
its params as usual. A send-receive offer gets the generated video back on the
same connection; any offer's session is watched with ``POST /whep/<session
id>``, a receive-only offer, by any number of viewers, each fed the newest frame
(:class:`~server.outlets.Outlets`). ``PATCH`` on a resource
takes trickled candidates; ``DELETE`` ends it. A WHIP resource holds its session:
the session lives as long as it does, unless a WebSocket client holds it too.
A resource whose peer never connects, or whose connection fails, is freed.

The calls are server/webrtc.py's :class:`~server.webrtc.Call`, the same as the
WebSocket's; the requests, which carry bodies, reach here through
server/listener.py.
"""

from __future__ import annotations

import asyncio
import http
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from server.http import origin_refusal, response
from server.listener import BodyRequest
from server.webrtc_options import load_webrtc
from stream.errors import ProtocolError, ServerBusy
from stream.params import parse_params_query
from stream.sdpfrag import parse_sdpfrag
from stream.session import Session

if TYPE_CHECKING:
    from server.app import LivegenServer
    from server.webrtc import Call

log = logging.getLogger(__name__)

WHIP_PATH = "/whip"
WHEP_PREFIX = "/whep/"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES = 64 * 1024  # offers are a few kB; this leaves room for many candidates
SESSION_HEADERS = ("Livegen-Session-Id", "Livegen-Resume-Token", "Livegen-Whep")
EXPOSED_HEADERS = ", ".join(("Location", "ETag", "Link", "Accept-Patch", *SESSION_HEADERS))


class Refused(Exception):
    """A request answered with an HTTP error: ``status`` and a short reason."""

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = list(headers)


@dataclass(eq=False)
class Resource:
    """A WHIP publisher's or a WHEP viewer's call, and the session it belongs to."""

    path: str  # its Location
    session: Session
    call: Call
    publishes: bool  # WHIP; a WHEP viewer only watches
    etag: str = field(default_factory=lambda: f'"{secrets.token_urlsafe(12)}"')
    connect_deadline: asyncio.TimerHandle | None = None


class MediaRoutes:
    """The WHIP and WHEP resources of one server, and the HTTP requests for them."""

    max_body_bytes = MAX_SDP_BYTES

    def __init__(self, app: LivegenServer) -> None:
        self._app = app
        self._resources: dict[str, Resource] = {}
        # Calls being closed: a close outlives the request or callback that began it.
        self._closing: set[asyncio.Task[None]] = set()

    def handles(self, path: str) -> bool:
        return path == WHIP_PATH or path.startswith((WHIP_PATH + "/", WHEP_PREFIX))

    def holds(self, session_id: str) -> bool:
        """Whether a WHIP publisher holds the session (so it does not expire)."""
        return any(r.publishes and r.session.id == session_id for r in self._resources.values())

    def __len__(self) -> int:
        return len(self._resources)

    async def answer(self, body_request: BodyRequest) -> Response:
        request = body_request.request
        try:
            answer = await self._route(request, body_request.body)
        except Refused as refused:
            answer = _text(refused.status, str(refused))
            for name, value in refused.headers:
                answer.headers[name] = value
        origin = request.headers.get("Origin")
        if origin is not None and origin_refusal(request, self._app.config.origins) is None:
            answer.headers["Access-Control-Allow-Origin"] = origin
            answer.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            answer.headers["Vary"] = "Origin"
        return answer

    async def _route(self, request: Request, body: bytes) -> Response:
        path = urlsplit(request.path).path
        if (refused := origin_refusal(request, self._app.config.origins)) is not None:
            return refused
        allowed: tuple[str, ...]
        if path == WHIP_PATH:
            allowed = ("POST", "OPTIONS")
            if request.method == "POST":
                return await self._publish(request, body)
        elif path.startswith(WHEP_PREFIX) and path.count("/") == 2:
            allowed = ("POST", "OPTIONS")
            if request.method == "POST":
                return await self._watch(request, unquote(path[len(WHEP_PREFIX) :]), body)
        else:
            allowed = ("PATCH", "DELETE", "OPTIONS")
            resource = self._resources.get(path)
            if resource is None:
                raise Refused(404, f"no WHIP or WHEP resource {path} (ended, or never made)")
            if request.method == "PATCH":
                return await self._patch(request, resource, body)
            if request.method == "DELETE":
                self._check_auth(request, path)
                self._end(resource, "ended by its client (DELETE)")
                return _text(200, "ended")
        if request.method == "OPTIONS":
            return self._options(path, allowed)
        raise Refused(
            405,
            f"{path} takes {', '.join(allowed)}, not {request.method}",
            [("Allow", _list(allowed))],
        )

    def _options(self, path: str, allowed: Sequence[str]) -> Response:
        """A CORS preflight, or a client asking what the resource takes (no auth: it
        carries none in a browser's preflight)."""
        answer = _empty(204)
        answer.headers["Allow"] = _list(allowed)
        # All of WHIP's methods, not only this path's: clients read PATCH here as
        # "trickle is supported" (Eyevinn's WHIP client does).
        answer.headers["Access-Control-Allow-Methods"] = "POST, PATCH, DELETE, OPTIONS"
        answer.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
        answer.headers["Access-Control-Max-Age"] = "600"
        if "POST" in allowed:
            answer.headers["Accept-Post"] = SDP
            self._add_ice_servers(answer)
        else:
            answer.headers["Accept-Patch"] = SDPFRAG
        return answer

    async def _publish(self, request: Request, body: bytes) -> Response:
        """POST /whip: a new session fed by the offer's camera."""
        self._check_auth(request, WHIP_PATH)
        offer = self._offer_text(request, body)
        await load_webrtc()  # aiortc loads with the first call, not at start
        from server.webrtc import Call

        if self._app.draining:
            raise Refused(503, "the server is shutting down", [("Retry-After", "5")])
        try:
            patch = parse_params_query(parse_qsl(urlsplit(request.path).query, True))
            session = self._app.new_session(patch)
        except ServerBusy as busy:
            raise Refused(503, str(busy), [("Retry-After", "5")]) from None
        except ProtocolError as error:
            raise Refused(400, str(error)) from None
        # The session id names its replica: a proxy sends PATCH and DELETE to it by the path.
        path = f"{WHIP_PATH}/{quote(session.id, safe='')}/{secrets.token_urlsafe(16)}"
        call = Call(self._app.webrtc, lambda frame: self._app.offer(session, frame), self._ended)
        try:
            answer = await self._answer(call, offer)
        except BaseException:
            self._app.close_session(session, "refused: its WHIP offer was not usable")
            raise
        resource = self._add(Resource(path, session, call, publishes=True))
        if call.sends_back:
            self._app.outlets.add(session.id, call.output)
        log.info("session %s started by WHIP (%s)", session.id, path)
        created = self._created(resource, answer)
        created.headers["Livegen-Session-Id"] = session.id
        created.headers["Livegen-Resume-Token"] = session.resume_token
        created.headers["Livegen-Whep"] = WHEP_PREFIX + quote(session.id, safe="")
        return created

    async def _watch(self, request: Request, session_id: str, body: bytes) -> Response:
        """POST /whep/<session id>: one more viewer of the session's generated video."""
        self._check_auth(request, WHEP_PREFIX + session_id)
        offer = self._offer_text(request, body)
        await load_webrtc()
        from server.webrtc import Call

        session = next((s for s in self._app.sessions if s.id == session_id), None)
        if session is None:
            raise Refused(
                404, f"no session {session_id!r}: start one with POST /whip or on the WebSocket"
            )
        path = f"{WHEP_PREFIX}{quote(session.id, safe='')}/{secrets.token_urlsafe(16)}"
        call = Call(self._app.webrtc, None, self._ended)
        answer = await self._answer(call, offer)
        resource = self._add(Resource(path, session, call, publishes=False))
        self._app.outlets.add(session.id, call.output)
        log.info("session %s: a WHEP viewer joined (%s)", session.id, path)
        return self._created(resource, answer)

    async def _patch(self, request: Request, resource: Resource, body: bytes) -> Response:
        """Trickled candidates (RFC 9725 4.3.1); ICE restarts are not offered."""
        self._check_auth(request, resource.path)
        match = request.headers.get("If-Match")
        if match is not None and match.strip() not in ("*", resource.etag):
            raise Refused(412, f"If-Match {match} is not the resource's ETag {resource.etag}")
        _check_content_type(request, SDPFRAG)
        try:
            fragment = parse_sdpfrag(_utf8(body))
        except ValueError as exc:
            raise Refused(400, f"the fragment does not parse: {exc}") from None
        from aiortc.sdp import SessionDescription  # loaded by the call already

        remote = resource.call.pc.remoteDescription
        assert remote is not None  # answered before the resource existed
        ufrags = {
            m.ice.usernameFragment
            for m in SessionDescription.parse(remote.sdp).media
            if m.ice is not None
        }
        if (match is not None and match.strip() == "*") or (
            fragment.ice_ufrag is not None and fragment.ice_ufrag not in ufrags
        ):
            raise Refused(422, "ICE restarts are not supported: DELETE and POST a new offer")
        try:
            for candidate in fragment.candidates:
                await resource.call.add_candidate(candidate.line, candidate.mid, 0)
            if fragment.end_of_candidates:
                await resource.call.pc.addIceCandidate(None)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        return _empty(204)

    def _check_auth(self, request: Request, route: str) -> None:
        refused = self._app.auth.check_media(request, route)
        if refused is not None:
            challenge = [
                (name, value)
                for name, value in refused.headers.raw_items()
                if name.lower() == "www-authenticate"
            ]
            raise Refused(refused.status_code, refused.body.decode().strip(), challenge)

    def _offer_text(self, request: Request, body: bytes) -> str:
        _check_content_type(request, SDP)
        offer = _utf8(body)
        if not offer.strip():
            raise Refused(400, "the body is empty: POST an SDP offer")
        return offer

    async def _answer(self, call: Call, offer: str) -> str:
        from server.webrtc import NoVideoError

        try:
            return await call.answer(offer)
        except BaseException as exc:
            self._close(call)
            if isinstance(exc, NoVideoError):
                raise Refused(406, str(exc)) from None
            if isinstance(exc, Exception):  # aiortc refuses bad SDP with many exception types
                raise Refused(400, f"the offer was refused: {exc or type(exc).__name__}") from None
            raise

    def _add(self, resource: Resource) -> Resource:
        self._resources[resource.path] = resource
        resource.connect_deadline = asyncio.get_running_loop().call_later(
            self._app.config.session_start_timeout_s, self._check_connected, resource
        )
        return resource

    def _created(self, resource: Resource, answer: str) -> Response:
        created = response(201, answer.encode(), SDP, "no-store")
        created.headers["Location"] = resource.path
        created.headers["ETag"] = resource.etag
        created.headers["Accept-Patch"] = SDPFRAG
        self._add_ice_servers(created)
        return created

    def _add_ice_servers(self, answer: Response) -> None:
        for link in ice_server_links(self._app.webrtc.ice_servers):
            answer.headers["Link"] = link

    def _check_connected(self, resource: Resource) -> None:
        if not resource.call.connected:
            timeout = self._app.config.session_start_timeout_s
            self._end(resource, f"freed: its peer did not connect within {timeout:g} s")

    def _ended(self, call: Call, reason: str | None) -> None:
        """The connection failed (the peer vanished) or was closed."""
        for resource in list(self._resources.values()):
            if resource.call is call:
                self._end(resource, reason or "ended: the peer closed the connection")

    def _end(self, resource: Resource, why: str) -> None:
        if self._resources.pop(resource.path, None) is None:
            return  # ended already
        if resource.connect_deadline is not None:
            resource.connect_deadline.cancel()
        session = resource.session
        self._app.outlets.discard(session.id, resource.call.output)
        self._close(resource.call)
        log.info("%s %s", resource.path, why)
        if not resource.publishes:
            return
        # A camera frame still waiting has nowhere to go, and holds the call's decoder.
        session.inbox.take_if(lambda frame: frame.video is not None)
        if session.id not in self._app.attached:
            self._app.close_session(session, f"ended with its WHIP resource ({why})")

    def session_ended(self, session_id: str) -> None:
        """The session is gone: so are its publisher and viewers."""
        for resource in list(self._resources.values()):
            if resource.session.id == session_id:
                self._end(resource, "ended with its session")

    def _close(self, call: Call) -> None:
        closing = asyncio.ensure_future(call.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """On drain: end every resource and wait for the calls to close."""
        for resource in list(self._resources.values()):
            self._end(resource, "ended: the server is shutting down")
        await asyncio.gather(*self._closing, return_exceptions=True)


def ice_server_links(servers: Sequence[dict[str, Any]]) -> list[str]:
    """``Link`` header values for ICE servers, as RFC 9725 4.6 writes them."""
    links = []
    for server in servers:
        urls = server["urls"]
        for url in [urls] if isinstance(urls, str) else urls:
            link = f'<{url}>; rel="ice-server"'
            if "username" in server:
                link += f'; username="{server["username"]}"'
            if "credential" in server:
                link += f'; credential="{server["credential"]}"; credential-type="password"'
            links.append(link)
    return links


def _check_content_type(request: Request, expected: str) -> None:
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if content_type != expected:
        raise Refused(
            415,
            f"send the body as Content-Type: {expected} (got {content_type or 'none'})",
            [("Accept-Post" if expected == SDP else "Accept-Patch", expected)],
        )


def _utf8(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8 text") from None


def _list(methods: Sequence[str]) -> str:
    return ", ".join(methods)


def _text(status: int, reason: str) -> Response:
    return response(status, f"{reason}\n".encode(), "text/plain; charset=utf-8", "no-store")


def _empty(status: int) -> Response:
    return Response(
        status, http.HTTPStatus(status).phrase, Headers([("Cache-Control", "no-store")]), b""
    )
