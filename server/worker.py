"""The inference thread: the one place the pipeline runs.

It warms the pipeline up first, so that state a compiled model keeps per thread
(CUDA graphs) is recorded on the thread that replays it. Then each tick it takes
the input of every session whose box is full, decodes the images on the codec
threads, groups compatible requests into batches, runs each batch through the
pipeline and encodes the outputs. Results leave through the ``deliver``
callback, which the server points at its event loop.

A batch that runs out of device memory is not lost: the thread drops the
cached tensors of detached sessions (they only wait for a resume, which then
starts cold) and the allocator's cache, splits the batch in halves and runs
each; only a request that does not fit in a batch of its own, after that,
fails, with ``pipeline_failed``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from pipelines.base import FrameRequest, Pipeline
from pipelines.memory import MemoryBudget, is_out_of_memory, measure_budget
from server.metrics import Metrics
from stream.codec import pack
from stream.errors import ErrorCode, InvalidImage, InvalidParams, ProtocolError
from stream.events import FrameIn
from stream.images import CONTENT_TYPES, decode_image, encode_image
from stream.limits import Limits
from stream.messages import FrameOut
from stream.registry import SessionRegistry
from stream.scheduling import group_compatible
from stream.session import Session

log = logging.getLogger(__name__)

# Batches at a size lowered by an out-of-memory error that must fit before it is raised.
RECOVER_AFTER_BATCHES = 100

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class FrameResult:
    """A packed ``frame.out`` message, ready to send; ``received_at`` times the total."""

    data: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class VideoResult:
    """A generated frame for a session's WebRTC call: pixels, encoded by the call."""

    pixels: np.ndarray
    received_at: float


@dataclass(frozen=True, slots=True)
class FrameFailed:
    frame_id: int
    error: ProtocolError


Result = FrameResult | VideoResult | FrameFailed
Deliver = Callable[[Session, Result], None]
# A batch's requests with the outputs the pipeline made for them.
Outputs = list[tuple["_Job", FrameRequest, np.ndarray]]


@dataclass(slots=True)
class _Job:
    """One session's input on its way through a tick."""

    session: Session
    frame: FrameIn
    image: np.ndarray | None = None  # decoded; stays None for a text-only request
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def frame_id(self) -> int:
        assert self.frame.id is not None  # Session.offer numbers every frame
        return self.frame.id


class InferenceWorker:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        limits: Limits,
        metrics: Metrics,
        deliver: Deliver,
        codec_threads: int,
        max_batch: int,
        sessions: SessionRegistry,
        measure_memory: bool = False,
    ) -> None:
        self._pipeline = pipeline
        self._sessions = sessions
        self._measure_memory = measure_memory
        # Set after warm-up when ``measure_memory`` asked for it (``--max-sessions auto``).
        self.memory_budget: MemoryBudget | None = None
        self._limits = limits
        self._metrics = metrics
        self._deliver = deliver
        self._max_batch = max(1, min(max_batch, pipeline.max_batch_size))
        # After an out-of-memory error, batches stay at the size that was tried next, so
        # that a device near its limit does not fail a batch every tick; the limit
        # doubles again after RECOVER_AFTER_BATCHES batches of that size fit.
        self._batch_limit = self._max_batch
        self._batches_fitted = 0
        self._codec_threads = codec_threads
        self._codec = ThreadPoolExecutor(codec_threads, thread_name_prefix="livegen-codec")
        self._cond = threading.Condition()
        # Ordered set: sessions are served in the order their inputs arrived.
        self._ready: dict[Session, None] = {}
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="livegen-inference", daemon=True)
        self._warm: Future[None] = Future()

    def start(self) -> Future[None]:
        """Start the thread; the future is done when warm-up is, failed if warm-up failed.

        After a failed warm-up the thread ends; ``stop`` still cleans up.
        """
        self._thread.start()
        return self._warm

    def notify(self, session: Session) -> None:
        """``session`` has an input in its box. Called from the event loop."""
        with self._cond:
            self._ready[session] = None
            self._cond.notify()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no input is waiting or running; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._ready and not self._busy, timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._codec.shutdown(wait=True)

    def _run(self) -> None:
        if not self._warm.set_running_or_notify_cancel():
            return
        try:
            self._pipeline.warmup()
            if self._measure_memory:
                self.memory_budget = measure_budget(self._pipeline, self._max_batch)
        except BaseException as exc:
            self._warm.set_exception(exc)
            return
        self._warm.set_result(None)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._ready or self._stopping)
                if self._stopping:
                    return
                sessions = list(self._ready)
                self._ready.clear()
                self._busy = True
            try:
                self._tick(sessions)
            except Exception:  # a bug here must not kill the only inference thread
                log.exception("inference tick failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _tick(self, sessions: Sequence[Session]) -> None:
        now = time.perf_counter()
        jobs = [_Job(s, frame) for s in sessions if (frame := s.inbox.take()) is not None]
        for job in jobs:
            self._observe(job, "queue", now - job.frame.received_at)
        ready: list[tuple[_Job, FrameRequest]] = []
        for job, decoded in zip(jobs, self._map(self._decode, jobs), strict=True):
            if not decoded:
                continue
            session = job.session
            session.last_decoded = _kept(job)
            if session.pipeline_state is None:
                session.pipeline_state = self._pipeline.new_state()
            # Params are read now, not when the frame arrived: edits jump ahead of media.
            ready.append((job, FrameRequest(session.pipeline_state, session.params, job.image)))
        batches = group_compatible(
            ready, key=lambda item: self._pipeline.batch_key(item[1]), max_batch=self._batch_limit
        )
        for batch in batches:
            self._map(self._encode, self._infer(batch))

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` in order, in one chunk per codec thread.

        The first chunk runs here on the inference thread, which would otherwise
        only wait: one item never leaves it, and each hop to a thread is one
        wake-up per chunk rather than per item.
        """
        if not items:
            return []
        size = -(-len(items) // self._codec_threads)
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        later = [self._codec.submit(_apply, fn, chunk) for chunk in chunks[1:]]
        results = _apply(fn, chunks[0])
        for future in later:
            results.extend(future.result())
        return results

    def _decode(self, job: _Job) -> bool:
        """Decode ``job``'s image; False (the client told) when it is broken."""
        frame = job.frame
        if frame.image is None and frame.video is None:
            return True
        start = time.perf_counter()
        try:
            job.image = self._pixels(frame)
        except ProtocolError as error:
            self._deliver(job.session, FrameFailed(job.frame_id, error))
            return False
        self._observe(job, "decode", time.perf_counter() - start)
        return True

    def _pixels(self, frame: FrameIn) -> np.ndarray:
        if frame.video is None:
            assert frame.image is not None
            return decode_image(frame.image, self._limits.max_image_pixels)
        try:
            return frame.video()
        except Exception as exc:  # whatever the video library raises, for this frame only
            raise InvalidImage(f"a video frame did not convert to RGB: {exc}") from None

    def _infer(self, batch: list[tuple[_Job, FrameRequest]], *, freed: bool = False) -> Outputs:
        """Run ``batch``; the outputs of the requests that ran (failures are delivered).

        ``freed``: memory was already freed for this batch, after an out-of-memory error.
        """
        start = time.perf_counter()
        out_of_memory = ""
        try:
            outputs = self._pipeline([request for _, request in batch])
            _check_outputs(outputs, len(batch))
        except ValueError as exc:
            self._fail(batch, InvalidParams(str(exc)))
            return []
        except Exception as exc:
            if not is_out_of_memory(exc):
                log.exception(
                    "pipeline %s failed on a batch of %d", self._pipeline.name, len(batch)
                )
                failure = ProtocolError(
                    f"the pipeline failed: {exc}", code=ErrorCode.PIPELINE_FAILED
                )
                self._fail(batch, failure)
                return []
            # Handled below, outside this block: while the exception lives, its traceback
            # holds the failed call's frames and with them the tensors they allocated.
            out_of_memory = str(exc).split("\n", 1)[0]
        if out_of_memory:
            return self._retry(batch, out_of_memory, freed=freed)
        elapsed = time.perf_counter() - start
        self._fitted(len(batch))
        self._metrics.batch_size.observe(len(batch))
        for job, _ in batch:
            self._observe(job, "infer", elapsed)
        return [(*item, output) for item, output in zip(batch, outputs, strict=True)]

    def _retry(self, batch: list[tuple[_Job, FrameRequest]], error: str, *, freed: bool) -> Outputs:
        """After an out-of-memory error: free memory once, then halve the batch until it fits.

        A request alone is retried once, if memory was freed just now; a request that
        still does not fit alone is refused, and only that one.
        """
        if not freed:
            self._free_memory()
        if len(batch) > 1:
            half = len(batch) // 2
            log.warning(
                "out of memory on a batch of %d (%s); retrying as %d and %d",
                len(batch),
                error,
                half,
                len(batch) - half,
            )
            self._metrics.out_of_memory.labels("split").inc()
            self._batch_limit = min(self._batch_limit, len(batch) - half)
            self._batches_fitted = 0
            return self._infer(batch[:half], freed=True) + self._infer(batch[half:], freed=True)
        if not freed:
            self._metrics.out_of_memory.labels("retried").inc()
            return self._infer(batch, freed=True)
        self._metrics.out_of_memory.labels("refused").inc()
        ((job, request),) = batch
        log.warning("out of memory on a single request of session %s (%s)", job.session.id, error)
        height, width = _size(request)
        refusal = (
            f"out of device memory: this {width}x{height} frame does not fit even in a batch "
            f"of its own, after the server freed what it could ({error}); send a smaller "
            "width and height (or fewer steps), or try again when fewer sessions are busy"
        )
        self._fail(batch, ProtocolError(refusal, code=ErrorCode.PIPELINE_FAILED))
        return []

    def _fitted(self, size: int) -> None:
        """A batch of ``size`` ran: after enough at the limit, let batches grow again."""
        if size < self._batch_limit or self._batch_limit == self._max_batch:
            return
        self._batches_fitted += 1
        if self._batches_fitted >= RECOVER_AFTER_BATCHES:
            self._batch_limit = min(self._max_batch, 2 * self._batch_limit)
            self._batches_fitted = 0
            log.info("batches of up to %d again", self._batch_limit)

    def _free_memory(self) -> None:
        """Drop what detached sessions cache, then give back what nothing holds any more.

        A detached session only waits for a resume, which then starts cold. The
        registry is the event loop's; iterating it takes a copy of its sessions at
        once, and a session resumed meanwhile only loses a cache.
        """
        freed = 0
        for session in self._sessions:
            if session.expires_at is not None and session.pipeline_state is not None:
                session.pipeline_state = None
                freed += 1
        self._metrics.session_states_freed.inc(freed)
        self._pipeline.free_memory()
        log.info("freed memory: the cached tensors of %d detached sessions, and caches", freed)

    def _fail(self, batch: list[tuple[_Job, FrameRequest]], error: ProtocolError) -> None:
        for job, _ in batch:
            self._deliver(job.session, FrameFailed(job.frame_id, error))

    def _encode(self, item: tuple[_Job, FrameRequest, np.ndarray]) -> None:
        job, request, output = item
        if job.frame.video is not None:  # a camera frame's output goes back as video
            self._deliver(job.session, VideoResult(output, job.frame.received_at))
            return
        start = time.perf_counter()
        params = request.params
        height, width = output.shape[:2]
        try:
            image = encode_image(output, params.output_format, params.quality)
        except (ValueError, OSError):  # dimensions the format cannot hold
            refusal = f"a {width}x{height} frame cannot be written as {params.output_format}"
            self._deliver(job.session, FrameFailed(job.frame_id, InvalidImage(refusal)))
            return
        self._observe(job, "encode", time.perf_counter() - start)
        message = FrameOut(
            image=image,
            content_type=CONTENT_TYPES[params.output_format],
            id=job.frame_id,
            width=width,
            height=height,
            timings=job.timings_ms,
            dropped=job.session.inbox.dropped,
        )
        self._deliver(job.session, FrameResult(pack(message), job.frame.received_at))

    def _observe(self, job: _Job, stage: str, seconds: float) -> None:
        job.timings_ms[stage] = round(seconds * 1000.0, 3)
        self._metrics.stage_seconds.labels(stage).observe(seconds)


def _check_outputs(outputs: Sequence[np.ndarray], expected: int) -> None:
    """Hold a pipeline to its contract, so a bug there fails its batch and nothing else."""
    if len(outputs) != expected:
        raise RuntimeError(f"{len(outputs)} outputs for {expected} requests")
    for output in outputs:
        if output.dtype != np.uint8 or output.ndim != 3 or output.shape[2] != 3:
            got = f"{output.dtype} {output.shape}"
            raise RuntimeError(f"outputs must be (height, width, 3) uint8 arrays, got {got}")


def _size(request: FrameRequest) -> tuple[int, int]:
    """The (height, width) a request asks for: its input's, or its params' for text only."""
    if request.image is not None:
        return request.image.shape[0], request.image.shape[1]
    return request.params.height, request.params.width


def _kept(job: _Job) -> FrameIn:
    """The input a session keeps to rerun with new params.

    A camera frame keeps its pixels, not the decoder's frame: that one holds the
    call's decoder threads, which would outlive a hang-up until the next input.
    """
    if job.frame.video is None or job.image is None:
        return job.frame
    return replace(job.frame, video=job.image.copy)


def _apply(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]
