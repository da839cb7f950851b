"""Separation jobs: each in its own temp folder, run one at a time by one worker thread on one model.

The HTTP side (:mod:`bsmamba2.web.app`) reserves a job folder, streams the upload into it and submits the
job; the worker thread separates it with ``Separator.separate_file`` (its progress callback updates the
job's chunk counts, which the page polls), draws the spectrograms and marks it done. Finished jobs expire
after ``ttl`` seconds (their folder is deleted); :meth:`JobStore.close` deletes the whole temp root.
"""

from __future__ import annotations

import logging
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsmamba2.api import Separator
from bsmamba2.apply import ProgressCallback
from bsmamba2.audio import read
from bsmamba2.errors import UserError
from bsmamba2.web.catalog import ModelCatalog, ModelEntry
from bsmamba2.web.images import write_spectrograms

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, ERROR = "queued", "running", "done", "error"
VOCALS = "vocals"
# (catalogue entry, progress callback) -> a Separator; the server binds its device / chunk settings here
Loader = Callable[[ModelEntry, ProgressCallback], Separator]


class QueueFull(UserError):
    """Too many jobs waiting: the upload is refused (HTTP 503) instead of filling the disk."""


class Cancelled(Exception):
    """Raised from the progress callback to stop a running separation when the server shuts down."""


@dataclass
class Job:
    """One separation: the input file, what to make of it, and how far it got.

    ``files``: served name (``vocals.wav``, ``mixture.png``, ...) -> file in the job folder; downloads are
    looked up in it by name, so a request can never name any other path.
    """

    id: str
    dir: Path
    input: Path
    name: str  # the uploaded file's name, for messages (never used as a path)
    model: str
    stems: tuple[str, ...]
    format: str
    created: float
    state: str = QUEUED
    processed: int = 0
    total: int = 0
    message: str = ""
    started: float | None = None
    finished: float | None = None
    files: dict[str, Path] = field(default_factory=dict)


class JobStore:
    """Jobs by id under one temp root; thread-safe (the worker thread writes, the event loop reads)."""

    def __init__(
        self, root: Path, *, ttl: float, max_active: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self.ttl = ttl
        self.max_active = max_active
        self.clock = clock
        self.lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._reserved = 0  # folders handed out for uploads still arriving
        (root / "jobs").mkdir(parents=True, exist_ok=True)

    def reserve(self) -> tuple[str, Path]:
        """A fresh job id and its (new, empty) folder; QueueFull when too many jobs wait or run."""
        with self.lock:
            active = sum(j.state in (QUEUED, RUNNING) for j in self._jobs.values()) + self._reserved
            if active >= self.max_active:
                raise QueueFull(f"the server is busy ({active} jobs waiting or running); try again shortly")
            self._reserved += 1
        job_id = secrets.token_hex(16)  # unguessable: one user cannot fetch another's stems
        folder = self.root / "jobs" / job_id
        folder.mkdir()
        return job_id, folder

    def release(self, folder: Path, *, remove: bool) -> None:
        """End a reservation: the upload became a job (remove=False) or failed (remove=True: delete it)."""
        with self.lock:
            self._reserved -= 1
        if remove:
            shutil.rmtree(folder, ignore_errors=True)

    def add(self, job: Job) -> None:
        with self.lock:
            self._jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def update(self, job: Job, **changes: Any) -> None:
        with self.lock:
            for k, v in changes.items():
                setattr(job, k, v)

    def position(self, job: Job) -> int:
        """How many jobs run or wait ahead of a queued job (0 once it runs)."""
        with self.lock:
            if job.state != QUEUED:
                return 0
            ahead = 0
            for j in self._jobs.values():  # insertion order = submission order
                if j is job:
                    break
                ahead += j.state in (QUEUED, RUNNING)
            return ahead

    def expire(self) -> list[str]:
        """Delete the jobs (and folders) finished more than ``ttl`` seconds ago; returns their ids."""
        now = self.clock()
        with self.lock:
            old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)
        return [j.id for j in old]

    def close(self) -> None:
        """Forget every job and delete the temp root (uploads, outputs, the example song)."""
        with self.lock:
            self._jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


class Worker:
    """The one thread that runs jobs in submission order, keeping one model loaded (the last one used)."""

    def __init__(
        self, store: JobStore, catalog: ModelCatalog, load: Loader, *, expire_every: float = 30.0
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.load = load
        self.expire_every = expire_every
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._current: Job | None = None
        self._model: tuple[str, Separator] | None = None
        self._warm = False
        self._thread = threading.Thread(target=self._loop, name="bsmamba2-web-worker", daemon=True)

    def start(self, warm: bool = True) -> None:
        """Start the thread; ``warm``: load the default model first, so the first job does not wait for it."""
        self._warm = warm
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.store.add(job)
        self._queue.put(job)

    def cancel(self) -> None:
        """Ask the thread to end: the running job stops at its next chunk batch, queued ones never start."""
        self._stopping.set()
        self._queue.put(None)

    def stop(self, timeout: float = 30.0) -> None:
        """``cancel``, then wait for the thread (at most ``timeout`` seconds)."""
        self.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self._warm:
            try:
                self._separator(self.catalog.default)
            except UserError as e:  # the page shows it again when a job asks for this model
                log.warning("could not load %s: %s", self.catalog.default, e)
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=self.expire_every)
            except queue.Empty:
                job = None
            if job is not None and not self._stopping.is_set():
                self._run(job)
            self.store.expire()

    def _separator(self, name: str) -> Separator:
        if self._model is None or self._model[0] != name:
            self._model = None  # free the old model before loading the next: one instance at a time
            self._model = (name, self.load(self.catalog.get(name), self._progress))
        return self._model[1]

    def _progress(self, info: dict[str, Any]) -> None:
        if self._stopping.is_set():
            raise Cancelled
        if self._current is not None:
            self.store.update(self._current, processed=int(info["processed"]), total=int(info["total"]))

    def _run(self, job: Job) -> None:
        self.store.update(job, state=RUNNING, started=self.store.clock())
        self._current = job
        try:
            sep = self._separator(job.model)
            paths = sep.separate_file(
                job.input, job.dir / "out", format=job.format, stems=job.stems, overwrite=True
            )
            files = {p.name: p for p in paths.values()}
            files.update(self._images(job, paths))
            self.store.update(job, state=DONE, files=files, message="")
        except Cancelled:
            self.store.update(job, state=ERROR, message="the server is shutting down")
        except UserError as e:
            self.store.update(job, state=ERROR, message=scrub(str(e), job))
        except Exception:  # the page gets one line; the traceback goes to the server log only
            log.exception("job %s (%s) failed", job.id, job.name)
            self.store.update(job, state=ERROR, message="separation failed (the server log has the details)")
        finally:
            self._current = None
            self.store.update(job, finished=self.store.clock())

    def _images(self, job: Job, paths: dict[str, Path]) -> dict[str, Path]:
        """mixture.png and (when vocals were asked for) vocals.png, on one shared dB scale."""
        mix, rate = read(job.input, channels=1)  # (1, N): the picture is of the mono sum
        signals = {"mixture": mix}
        if VOCALS in paths:
            signals[VOCALS] = read(paths[VOCALS], channels=1)[0]
        pngs = write_spectrograms(signals, rate, job.dir / "img")
        return {p.name: p for p in pngs.values()}


def scrub(message: str, job: Job) -> str:
    """A user error's message with the job's temp paths replaced by the uploaded file's name."""
    return message.replace(str(job.input), job.name).replace(str(job.dir), "").strip()
