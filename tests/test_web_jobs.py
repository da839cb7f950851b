"""bsmamba2.web.jobs: the job store (reservations, the queue limit, queue positions, expiry, cleanup) and the
worker (jobs in order on one model instance, progress from the Separator callback, one-line errors, cancel
at shutdown)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ScaleModel

from bsmamba2.api import Separator
from bsmamba2.apply import ProgressCallback
from bsmamba2.web.catalog import ModelCatalog, ModelEntry
from bsmamba2.web.jobs import DONE, ERROR, QUEUED, RUNNING, Job, JobStore, QueueFull, Worker, scrub

SR = 44100


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class GateModel(ScaleModel):
    """Half the input, but each forward pass waits for a permit: the test steps the separation."""

    def __init__(self) -> None:
        super().__init__((0.5,))
        self.permits = threading.Semaphore(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.permits.acquire(timeout=30), "the test never released this chunk"
        return super().forward(x)


class Broken(ScaleModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom at /secret/path")


def wait_for(cond: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def make_job(store: JobStore, source: Path, stems: tuple[str, ...] = ("vocals", "instrumental")) -> Job:
    job_id, folder = store.reserve()
    store.release(folder, remove=False)
    return Job(job_id, folder, source, "song.wav", "tiny.safetensors", stems, "wav", created=store.clock())


@pytest.fixture
def song(tmp_path: Path) -> Path:
    x = 0.3 * np.random.default_rng(0).standard_normal((SR // 2, 2)).astype(np.float32)  # 0.5 s stereo
    sf.write(tmp_path / "song.wav", x, SR, subtype="FLOAT")
    return tmp_path / "song.wav"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "root", ttl=60.0, max_active=3)


@pytest.fixture
def worker_for(
    store: JobStore, tiny_model_path: Path
) -> Iterator[Callable[[ScaleModel], tuple[Worker, list]]]:
    """worker_for(model) -> (a started Worker whose loader wraps ``model``, the list of loads)."""
    workers: list[Worker] = []

    def make(model: ScaleModel) -> tuple[Worker, list]:
        loads: list[ModelEntry] = []

        def load(entry: ModelEntry, callback: ProgressCallback) -> Separator:
            loads.append(entry)
            return Separator(model, segment=0.1, overlap=0.5, batch_size=1, callback=callback)

        w = Worker(store, ModelCatalog(tiny_model_path), load, expire_every=0.05)
        w.start(warm=False)
        workers.append(w)
        return w, loads

    yield make
    for w in workers:
        w.stop(timeout=10)


# ---- the store ---------------------------------------------------------------------------------------------
def test_reserve_limits_active_jobs_and_release_cleans_up(store: JobStore, song: Path) -> None:
    ids, folders = zip(*(store.reserve() for _ in range(3)))
    assert len(set(ids)) == 3 and all(f.is_dir() and not any(f.iterdir()) for f in folders)
    with pytest.raises(QueueFull, match="busy"):
        store.reserve()
    store.release(folders[0], remove=True)  # a failed upload frees its place and its folder
    assert not folders[0].exists()
    store.reserve()


def test_queue_positions_follow_submission_order(store: JobStore, song: Path) -> None:
    a, b, c = (make_job(store, song) for _ in range(3))
    for j in (a, b, c):
        store.add(j)
    assert [store.position(j) for j in (a, b, c)] == [0, 1, 2]
    store.update(a, state=RUNNING)
    assert [store.position(j) for j in (a, b, c)] == [0, 1, 2]  # the running job is ahead of both
    store.update(a, state=DONE)
    assert [store.position(j) for j in (b, c)] == [0, 1]


def test_finished_jobs_expire_with_their_folders(tmp_path: Path, song: Path) -> None:
    clock = Clock()
    store = JobStore(tmp_path / "root", ttl=60.0, max_active=3, clock=clock)
    old, fresh, waiting = (make_job(store, song) for _ in range(3))
    for j in (old, fresh, waiting):
        store.add(j)
        (j.dir / "vocals.wav").write_bytes(b"x")
    store.update(old, state=DONE, finished=clock.now)
    clock.now += 50
    store.update(fresh, state=ERROR, finished=clock.now)
    clock.now += 20  # old: 70 s > ttl 60; fresh: 20 s
    assert store.expire() == [old.id]
    assert store.get(old.id) is None and not old.dir.exists()
    assert store.get(fresh.id) is fresh and store.get(waiting.id) is waiting and waiting.dir.exists()
    clock.now += 1000
    assert store.expire() == [fresh.id]  # a queued job never expires
    store.close()
    assert not store.root.exists() and store.get(waiting.id) is None


def test_scrub_hides_temp_paths(store: JobStore, song: Path) -> None:
    job = make_job(store, song)
    assert scrub(f"{job.input}: cannot read audio", job) == "song.wav: cannot read audio"
    assert str(job.dir) not in scrub(f"cannot write {job.dir}/out/vocals.wav", job)


# ---- the worker --------------------------------------------------------------------------------------------
def test_worker_runs_jobs_in_order_on_one_model(store: JobStore, song: Path, worker_for) -> None:
    worker, loads = worker_for(ScaleModel((0.5,)))
    jobs = [make_job(store, song), make_job(store, song, stems=("vocals",))]
    for j in jobs:
        worker.submit(j)
    wait_for(lambda: all(j.state == DONE for j in jobs), "both jobs")
    assert len(loads) == 1  # one model instance served both
    assert jobs[0].started is not None and jobs[1].started is not None
    assert jobs[0].finished is not None and jobs[0].finished <= jobs[1].started  # one after the other
    first = jobs[0]
    assert set(first.files) == {"vocals.wav", "instrumental.wav", "mixture.png", "vocals.png"}
    vocals, _ = sf.read(first.files["vocals.wav"], always_2d=True)
    mix, _ = sf.read(song, always_2d=True)
    np.testing.assert_allclose(vocals, 0.5 * mix, atol=2**-22)  # 24-bit output of half the input
    assert set(jobs[1].files) == {"vocals.wav", "mixture.png", "vocals.png"}
    assert first.processed == first.total > 1


def test_worker_progress_comes_from_the_separation(store: JobStore, song: Path, worker_for) -> None:
    model = GateModel()
    worker, _ = worker_for(model)
    job = make_job(store, song)
    worker.submit(job)
    wait_for(lambda: job.state == RUNNING, "the job to start")
    model.permits.release()  # let exactly one chunk through
    wait_for(lambda: job.processed == 1, "the first chunk's report")
    assert job.total > 2 and job.state == RUNNING
    model.permits.release(job.total - 1)
    wait_for(lambda: job.state == DONE, "the job to finish")
    assert job.processed == job.total


def test_worker_errors_are_one_line_without_paths(
    store: JobStore, tmp_path: Path, song: Path, worker_for
) -> None:
    worker, _ = worker_for(Broken((0.5,)))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really")
    bad_input, crash = make_job(store, corrupt), make_job(store, song)
    for j in (bad_input, crash):
        worker.submit(j)
    wait_for(lambda: bad_input.state == ERROR and crash.state == ERROR, "both failures")
    assert "song.wav" in bad_input.message and str(tmp_path) not in bad_input.message
    assert crash.message == "separation failed (the server log has the details)"
    assert bad_input.files == {} and crash.files == {}


def test_stop_cancels_the_running_job(store: JobStore, song: Path, worker_for) -> None:
    model = GateModel()
    worker, _ = worker_for(model)
    job = make_job(store, song)
    worker.submit(job)
    wait_for(lambda: job.state == RUNNING, "the job to start")
    queued = make_job(store, song)
    worker.submit(queued)
    worker.cancel()
    model.permits.release(1000)  # the first progress report sees the stop and ends the separation
    worker.stop(timeout=30)
    assert job.state == ERROR and "shutting down" in job.message and job.processed == 0
    assert queued.state == QUEUED  # never started
