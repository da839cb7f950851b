"""Threads that keep the model busy during disk-to-disk separation, and the per-stage clock that shows it.

:func:`bsmamba2.pipeline.separate_file` runs three stages per block of a file: decode (read, lay out,
resample to the model's rate), the model (the chunk engine, on the calling thread) and encode (on CUDA first
"to host", waiting for the piece's copy from the device; then resample back and the residual), and each
output's "write" (clip, libsndfile's encode, the file system). With ``threads`` the decode runs ahead on a
:class:`Prefetch` thread and the encode behind on a :class:`Background` thread, each through a bounded
queue, so the accelerator never waits for the file system or libsndfile / soxr (which release the GIL);
each output file is written by a :class:`BackgroundWriter` thread of its own. Each stage does the same
operations in the same order as the plain loop, on its own objects (a resampler belongs to one stage), so
the outputs are bit-identical; only the wall time changes.

:func:`stage_clock` collects the seconds each stage spent (the stages overlap, so they need not add up to
the wall time): ``bsmamba2 separate --timings`` and ``benchmarks/bench_cli.py`` read it.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
PREFETCH_DEPTH = 2  # blocks decoded ahead of the model: one ready, one being read
ENCODE_DEPTH = 4  # blocks waiting to be written; bounded so a slow disk holds back the model, not RAM
_POLL_S = 0.1  # how often a blocked queue operation checks whether the other side has stopped


# ---- per-stage clock ---------------------------------------------------------------------------------------


@dataclass
class StageTimes:
    """Seconds per stage (e.g. "decode", "model", "encode", "load") and counts, summed over files."""

    seconds: dict[str, float] = field(default_factory=dict)
    files: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # settings and peaks the caller adds (JSON values)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, dt: float) -> None:
        with self._lock:  # stages run on several threads
            self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            seconds = {f"{k} (s)": round(v, 4) for k, v in self.seconds.items()}
            return {"files": self.files, **seconds, **self.info}


_CLOCK: contextvars.ContextVar[StageTimes | None] = contextvars.ContextVar(
    "bsmamba2_stage_clock", default=None
)


@contextlib.contextmanager
def stage_clock() -> Iterator[StageTimes]:
    """Collect the stage times of every separation run inside the block (by this thread and the threads it
    starts through this module)."""
    times = StageTimes()
    token = _CLOCK.set(times)
    try:
        yield times
    finally:
        _CLOCK.reset(token)


def current_clock() -> StageTimes | None:
    """The collector of the enclosing :func:`stage_clock`, or None (then timing costs nothing)."""
    return _CLOCK.get()


@contextlib.contextmanager
def timed(clock: StageTimes | None, stage: str) -> Iterator[None]:
    """Add the block's wall time to ``clock[stage]`` (nothing without a clock)."""
    if clock is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        clock.add(stage, time.perf_counter() - t)


# ---- decode ahead ------------------------------------------------------------------------------------------


class _End:
    """Marks the end of a prefetched stream (the producer's error, if any, rides along)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """Iterate ``items`` on a daemon thread, at most ``depth`` items ahead of the consumer.

    Iterating the Prefetch yields the same items in the same order; an exception raised by ``items`` is
    re-raised in the consumer at the point it occurred. ``close()`` (also on leaving a ``with`` block) stops
    the producer, which may be blocked on a full queue, and waits for it.
    """

    def __init__(self, items: Iterator[T], depth: int = PREFETCH_DEPTH) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        ctx = contextvars.copy_context()  # the stage clock follows the work onto the thread
        self._thread = threading.Thread(target=ctx.run, args=(self._produce, items), daemon=True)
        self._thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_End())
        except BaseException as e:  # handed to the consumer, which decides
            self._put(_End(e))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while not self._done:
            item = self._q.get()
            if isinstance(item, _End):
                self._done = True
                if item.error is not None:
                    raise item.error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- encode behind -----------------------------------------------------------------------------------------


class Background:
    """Run submitted calls one after another, in submission order, on a daemon thread (at most ``depth``
    waiting). The first exception a call raises stops the worker; it is re-raised by the next ``submit`` or
    by ``join``. ``close()`` stops the worker without running what is still queued (after an error
    elsewhere); ``join()`` runs everything queued, then returns.
    """

    def __init__(self, depth: int = ENCODE_DEPTH) -> None:
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._work,), daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                call = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if call is None:
                return
            try:
                call()
            except BaseException as e:  # re-raised on the submitting thread
                self._error = e
                return

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue ``fn(*args)``; blocks while ``depth`` calls wait."""
        while True:
            self._raise()
            if not self._thread.is_alive():
                raise RuntimeError("the background worker has stopped")
            try:
                self._q.put(lambda: fn(*args), timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def join(self) -> None:
        """Wait until every queued call ran; re-raise the first error of any."""
        while self._thread.is_alive():
            try:
                self._q.put(None, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Inline:
    """:class:`Background`'s interface, running each call at once on the calling thread (``threads=False``)."""

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        fn(*args)

    def join(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Writer(Protocol):
    def write(self, block: Any) -> None: ...

    def commit(self) -> Any: ...

    def abort(self) -> None: ...


class BackgroundWriter:
    """A block writer (``write`` / ``commit`` / ``abort``, e.g. ``audio.AtomicWriter``) whose writes run on a
    :class:`Background` thread of their own, in order: two outputs encode in parallel (libsndfile releases the
    GIL), beside the model. ``finish`` queues the commit behind the writes (outputs then close in parallel);
    ``commit`` waits for the writes and the commit; ``abort`` stops them, then aborts.
    The writes' seconds go to ``clock["write"]``. ``threads=False``: each write runs at once, on the caller's
    thread (:class:`Inline`), still timed.
    """

    def __init__(
        self,
        writer: _Writer,
        clock: StageTimes | None = None,
        depth: int = ENCODE_DEPTH,
        *,
        threads: bool = True,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self._worker: Background | Inline = Background(depth) if threads else Inline()
        self._finishing = False
        self._result: Any = None

    def write(self, block: Any) -> None:
        self._worker.submit(self._write, block)

    def _write(self, block: Any) -> None:
        with timed(self.clock, "write"):
            self.writer.write(block)

    def finish(self) -> None:
        """Queue the commit behind the writes, on this writer's thread: several outputs then close (and
        libsndfile syncs each file to disk as it closes) in parallel. :meth:`commit` waits for it."""
        if not self._finishing:
            self._finishing = True
            self._worker.submit(self._commit)

    def _commit(self) -> None:
        with timed(self.clock, "write"):
            self._result = self.writer.commit()

    def commit(self) -> Any:
        """Wait for the writes, commit (unless :meth:`finish` queued it) and return the writer's result."""
        self.finish()
        self._worker.join()
        return self._result

    def abort(self) -> None:
        self._worker.close()
        self.writer.abort()
