"""Files in flight: the next file starts on the model while the last one's outputs are still being written.

A file's separation ends with a tail that no longer needs the model: the last pieces resampled, mixed into
the residual and encoded, the files closed and renamed, the sidecar written (~0.1 s a 4-minute song, here
0.12-0.16 s on a 2-core VM). Run one file after another and the accelerator idles through every tail and
through the next file's first decode. :func:`run_in_flight` runs each file on a worker thread and starts the
next one as soon as the current one's last batch has run (the :class:`ModelGates` callback sees it in the
engine's progress), so the model is used by one file at a time while up to ``in_flight`` files are under
way. Results come back in the files' order.

Stopping (Ctrl-C, SIGTERM: an exception on the calling thread): every later batch of every file raises
:class:`Cancelled` from the callback, so a file in its model phase removes its temp files as any failed
separation does; a file in its tail finishes it (its outputs are whole); files not yet started never start.
The calling thread waits for all of that, then re-raises.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable, Generator, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout  # the builtin one only from Python 3.11
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")
_POLL_S = 0.1  # the calling thread waits in slices this long, so that signals reach it


class Cancelled(Exception):
    """Raised in a file's separation, from the progress callback, once the run is being stopped."""


class ModelGates:
    """The engine's progress callback: draws ``bar`` (any callback, e.g. a ``ChunkBar``) and opens the gate
    of a file (keyed by the ``path`` its progress carries) once its last batch has run. ``cancel()``: each
    later batch raises :class:`Cancelled` instead."""

    def __init__(self, bar: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.bar = bar
        self._gates: dict[str, threading.Event] = {}
        self._cancelled = threading.Event()

    def expect(self, key: Hashable) -> threading.Event:
        """A fresh gate for the file whose progress says ``path == str(key)``."""
        gate = threading.Event()
        self._gates[str(key)] = gate
        return gate

    def cancel(self) -> None:
        self._cancelled.set()

    def __call__(self, info: dict[str, Any]) -> None:
        if self._cancelled.is_set():
            raise Cancelled("stopped")
        if self.bar is not None:
            self.bar(info)
        if info.get("finished") and info["processed"] >= info["total"]:
            gate = self._gates.get(str(info.get("path")))
            if gate is not None:
                gate.set()


def run_in_flight(
    jobs: Sequence[J],
    work: Callable[[J], R],
    gates: ModelGates,
    key: Callable[[J], Hashable],
    in_flight: int = 2,
) -> Generator[tuple[J, R], None, None]:
    """Yield (job, work(job)) in the jobs' order, ``work`` running on up to ``in_flight`` worker threads: a
    job starts once the previous one's gate (``gates.expect(key(job))``) opened or its work returned. Each
    worker runs in a copy of the caller's context (the stage clock follows). An exception from ``work`` is
    re-raised here, in order; one on this thread (a signal) stops the run as the module docstring says.
    ``in_flight`` 1: each job runs on this thread, one after another (a signal interrupts it at once)."""
    if in_flight <= 1:
        for job in jobs:
            yield job, work(job)
        return
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="bsmamba2-file") as pool:
        pending: deque[tuple[J, Future[R]]] = deque()
        try:
            for job in jobs:
                gate = gates.expect(key(job))
                future = pool.submit(contextvars.copy_context().run, _gated, work, job, gate)
                pending.append((job, future))
                while not gate.wait(_POLL_S):  # the model is busy with this job: the next one waits
                    pass
                while pending and pending[0][1].done():
                    done, f = pending.popleft()
                    yield done, f.result()
            while pending:
                done, f = pending.popleft()
                yield done, _result(f)
        except BaseException:
            gates.cancel()
            for _, f in pending:
                f.cancel()  # not started yet: never starts
            wait([f for _, f in pending])  # temp files are gone before the error goes on
            raise


def _gated(work: Callable[[J], R], job: J, gate: threading.Event) -> R:
    try:
        return work(job)
    finally:
        gate.set()  # done, skipped or failed: the model is free either way


def _result(future: Future[R]) -> R:
    """``future.result()``, waited for in slices so that signals reach this thread meanwhile."""
    while True:
        try:
            return future.result(timeout=_POLL_S)
        except FutureTimeout:
            continue
