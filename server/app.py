"""The livegen server: sessions, the inference worker and the WebSocket listener.

Everything here runs on the event loop except the pipeline (its own thread) and
image codecs (the worker's codec threads). Tasks the server starts are kept and
cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve

from pipelines import Pipeline, create_pipeline
from server.auth import AuthGate
from server.config import DEFAULT_MAX_SESSIONS, ServerConfig
from server.connection import Connection
from server.fal import FalConnection, FalGate, is_fal_request
from server.http import Routes
from server.listener import connection_factory
from server.metrics import Metrics
from server.outlets import Outlets
from server.static import load_static_files
from server.whip import MediaRoutes
from server.worker import FrameFailed, InferenceWorker, Result, VideoResult
from stream.errors import CloseCode, InvalidParams
from stream.events import FrameIn, StartRequested
from stream.messages import SessionClosing, SessionStarted
from stream.params import Params
from stream.registry import SessionRegistry
from stream.session import Session

if TYPE_CHECKING:
    from pipelines.memory import MemoryBudget

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_S = 1.0

# A livegen /ws connection, or a fal route's (server/fal.py): both hold one session.
AnyConnection = Connection | FalConnection


class LivegenServer:
    def __init__(self, config: ServerConfig, pipeline: Pipeline | None = None) -> None:
        self.config = config
        self.auth = AuthGate.from_config(config)
        self.fal = FalGate.from_config(config, self.auth)
        max_sessions = config.max_sessions
        auto_sessions = not isinstance(max_sessions, int)
        self.sessions = SessionRegistry(
            grace_s=config.session_grace_s,
            # Until warm-up has measured what auto allows, auto holds the default.
            max_sessions=max_sessions if isinstance(max_sessions, int) else DEFAULT_MAX_SESSIONS,
            replica_id=config.replica_id,
        )
        self.pipeline = pipeline or create_pipeline(config.pipeline, config.pipeline_options)
        self.webrtc = config.webrtc_options
        self.metrics = Metrics(self.sessions, self.pipeline.cache_stats, self.pipeline.memory)
        self.worker = InferenceWorker(
            self.pipeline,
            limits=config.limits,
            metrics=self.metrics,
            deliver=self._deliver_threadsafe,
            codec_threads=config.codec_threads,
            max_batch=config.max_batch,
            sessions=self.sessions,
            measure_memory=auto_sessions,
        )
        self.connections: set[AnyConnection] = set()
        # Where each session's generated video goes out over WebRTC, and WHIP/WHEP.
        self.outlets = Outlets()
        self.media = MediaRoutes(self)
        # Session id to the connection that holds it.
        self.attached: dict[str, AnyConnection] = {}
        self.warmup_error: BaseException | None = None
        self.ready = asyncio.Event()
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._listener is not None
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen at once (health answers), then warm the pipeline up (then ready)."""
        self._loop = asyncio.get_running_loop()
        routes = Routes(
            load_static_files(self.config.web_root),
            is_ready=lambda: self.ready.is_set() and not self.draining,
            is_draining=lambda: self.draining,
            admits_new=self._admits_new,
            render_metrics=self.metrics.render,
            allowed_origins=self.config.origins,
            auth=self.auth,
            fal=self.fal,
        )
        self._listener = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=routes,
            max_size=self.config.max_message_bytes,
            compression=None,  # images are compressed already; deflate only costs time
            ssl=self.config.ssl_context,
            create_connection=connection_factory(self.media),  # WHIP and WHEP read bodies
        )
        self._spawn(self._warm_up())
        self._spawn(self._expire_sessions())

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.wrap_future(self.worker.start())
        except Exception as exc:
            log.exception("pipeline %s failed to warm up; shutting down", self.pipeline.name)
            self.warmup_error = exc
            self.request_drain()
            return
        log.info("pipeline %s warm in %.2f s", self.pipeline.name, time.perf_counter() - started)
        if self.worker.memory_budget is not None:
            self._set_max_sessions(self.worker.memory_budget)
        self.ready.set()

    def _set_max_sessions(self, budget: MemoryBudget) -> None:
        """``--max-sessions auto``: as many sessions as the memory left after warm-up holds."""
        self.metrics.session_state_bytes.set(budget.session_bytes)
        fit = budget.sessions_that_fit()
        mib = budget.session_bytes / 2**20
        if fit is None:
            why = (
                f"{self.pipeline.device} has no memory of its own to divide (only CUDA does)"
                if budget.available_bytes is None
                else "that sets no limit"
            )
            log.info(
                "--max-sessions auto: %d; a session caches %.1f MiB of tensors, and %s, "
                "so auto keeps the default",
                self.sessions.max_sessions,
                mib,
                why,
            )
            return
        self.sessions.max_sessions = fit
        log.info(
            "--max-sessions auto: %d sessions of %.1f MiB fit in the %.0f MiB left after "
            "warm-up, beside %.0f MiB kept for a running batch",
            fit,
            mib,
            (budget.available_bytes or 0) / 2**20,
            budget.batch_bytes / 2**20,
        )

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(EXPIRY_INTERVAL_S, self.config.session_grace_s / 2))
            for session in self.sessions.expire(time.perf_counter()):
                log.info("session %s expired after its grace period", session.id)
                self._free(session)

    def _admits_new(self) -> bool:
        # Connections still without a session are on their way to one: they count.
        starting = sum(connection.session is None for connection in self.connections)
        return self.sessions.admits_new(starting)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, websocket: ServerConnection) -> None:
        connection: AnyConnection = (
            FalConnection(self, websocket)
            if is_fal_request(websocket)
            else Connection(self, websocket)
        )
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def open_session(self, connection: AnyConnection, request: StartRequested) -> Session:
        """Create or resume the session ``connection`` asked for (raises ProtocolError)."""
        if request.session_id is not None and request.resume_token is not None:
            session = self.sessions.find(request.session_id, request.resume_token)
            params = session.params.updated(request.params)
            self._check_params(params)
            self.sessions.attach(session)
            session.params = params
        else:
            session = self.new_session(request.params)
            params = session.params
        previous = self.attached.get(session.id)
        if previous is not None:
            previous.close(CloseCode.SESSION_TAKEN_OVER, "session resumed on another connection")
        self.attached[session.id] = connection
        log.info("session %s %s", session.id, "resumed" if request.session_id else "started")
        connection.protocol.accept(
            SessionStarted(
                session_id=session.id,
                resume_token=session.resume_token,
                resumed=request.session_id is not None,
                pipeline=self.pipeline.name,
                params=params.to_wire(),
                limits=self.config.limits.to_wire(),
                ice_servers=list(self.webrtc.ice_servers),
                ignored_params=sorted(self.pipeline.ignored_params()),
                needs_image=not self.pipeline.text_to_image,
                controls=self.pipeline.controls(),
            )
        )
        return session

    def new_session(self, patch: dict[str, Any]) -> Session:
        """A session with ``patch`` over the defaults, held (raises ProtocolError)."""
        params = self.pipeline.default_params.updated(patch)
        self._check_params(params)
        evicted = self.sessions.make_room()
        if evicted is not None:
            log.info("session %s evicted from its grace period to make room", evicted.id)
            self._free(evicted)
        session = self.sessions.create(params)
        self.sessions.attach(session)
        return session

    def _check_params(self, params: Params) -> None:
        try:
            self.pipeline.check_params(params)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    def offer(self, session: Session, frame: FrameIn) -> None:
        """Queue a checked input for the worker (latest wins)."""
        self.metrics.frames_in.inc()
        if self.draining:
            # Clients have been told the server is closing; only frames in flight finish.
            self.metrics.frames_dropped.labels("input").inc()
            return
        if session.offer(frame):
            self.metrics.frames_dropped.labels("input").inc()
        self.worker.notify(session)

    def detach(self, connection: AnyConnection) -> None:
        """``connection`` is gone; its session waits out the grace period for a resume
        (unless a WHIP publisher holds it too)."""
        session = connection.session
        if session is not None and self.attached.get(session.id) is connection:
            del self.attached[session.id]
            if not self.media.holds(session.id):
                self.sessions.detach(session, time.perf_counter())

    def close_session(self, session: Session, why: str) -> None:
        """End ``session`` now, not after a grace period; ``why`` goes to the log."""
        log.info("session %s %s", session.id, why)
        self.sessions.remove(session)
        self.attached.pop(session.id, None)
        self._free(session)

    def _free(self, session: Session) -> None:
        self.media.session_ended(session.id)
        session.inbox.take()
        session.last_decoded = None
        session.pipeline_state = None

    def _deliver_threadsafe(self, session: Session, result: Result) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, session, result)

    def _deliver(self, session: Session, result: Result) -> None:
        if isinstance(result, VideoResult):
            # To the session's calls and viewers, attached to a WebSocket or not.
            if self.outlets.put(session.id, result.pixels):
                self.metrics.frames_out.inc()
                total_s = time.perf_counter() - result.received_at
                self.metrics.stage_seconds.labels("total").observe(total_s)
            return
        connection = self.attached.get(session.id)
        if connection is None:
            return  # detached or closed: the result has nobody to go to
        if isinstance(result, FrameFailed):
            connection.send_error(result.error, result.frame_id)
        else:
            connection.send_frame(result.data, result.received_at)

    def request_drain(self) -> None:
        """Start :meth:`drain` from a signal handler or any other plain callback."""
        self._spawn(self.drain())

    async def drain(self) -> None:
        """Stop accepting, tell sessions, finish in-flight frames, close, stop.

        The port stays open until the end so that /readyz can answer 503 and new
        WebSocket handshakes get a clear 503 instead of a refused connection.
        """
        if self.draining:
            return
        self.draining = True
        assert self._listener is not None
        log.info("draining: %d connections", len(self.connections))
        for connection in self.connections:
            connection.send(SessionClosing(reason="shutdown"))
        if self.ready.is_set() and not await asyncio.to_thread(
            self.worker.wait_idle, self.config.drain_timeout_s
        ):
            log.warning(
                "drain timed out after %.1f s with frames in flight", self.config.drain_timeout_s
            )
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
        await self.media.close_all()
        self._listener.close()
        await self._listener.wait_closed()
        others = self._tasks - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.to_thread(self.worker.stop)
        log.info("stopped")
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
