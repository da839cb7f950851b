"""Files in flight (``bsmamba2.cli.inflight``): the next file starts once the last one's model phase is over,
results come back in order, the model is never used by two files at once, and stopping leaves no work
running; through the CLI the outputs equal those of one file at a time."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import threads_started_since

from bsmamba2 import cli
from bsmamba2.api import Separator
from bsmamba2.cli import separate_jobs
from bsmamba2.cli.inflight import Cancelled, ModelGates, run_in_flight


class FakeFiles:
    """Jobs whose work reports ``batches`` batches through the gates (the model phase), then sleeps
    ``tail_s`` (the outputs' tail). Records when each phase began and ended, and who ran the model."""

    def __init__(self, gates: ModelGates, batches: int = 3, tail_s: float = 0.05) -> None:
        self.gates, self.batches, self.tail_s = gates, batches, tail_s
        self.log: list[tuple[str, str]] = []  # (event, job)
        self.in_model: set[str] = set()
        self.most_in_model = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def note(self, event: str, job: str) -> None:
        with self.lock:
            self.log.append((event, job))

    def __call__(self, job: str) -> str:
        self.threads.add(threading.current_thread().name)
        self.note("start", job)
        try:
            for i in range(1, self.batches + 1):
                with self.lock:
                    self.in_model.add(job)
                    self.most_in_model = max(self.most_in_model, len(self.in_model))
                time.sleep(0.01)  # the batch on the model
                last = i == self.batches
                with self.lock:
                    if last:
                        self.in_model.discard(job)
                info = {"processed": i, "total": self.batches, "finished": last, "path": job}
                self.gates(info)
        except Cancelled:
            self.note("cancelled", job)
            raise
        time.sleep(self.tail_s)
        self.note("end", job)
        return job.upper()

    def index(self, event: str, job: str) -> int:
        return self.log.index((event, job))


def test_the_next_file_starts_in_the_last_ones_tail() -> None:
    gates = ModelGates()
    files = FakeFiles(gates)
    jobs = ["a", "b", "c", "d"]
    got = list(run_in_flight(jobs, files, gates, key=str, in_flight=2))
    assert got == [(j, j.upper()) for j in jobs]  # in order
    for prev, nxt in zip(jobs, jobs[1:], strict=False):
        assert files.index("start", nxt) < files.index("end", prev)  # overlapped the tail
    assert files.most_in_model == 1  # but never two files on the model
    assert threading.current_thread().name not in files.threads


def test_one_in_flight_runs_on_the_calling_thread() -> None:
    gates = ModelGates()
    files = FakeFiles(gates, tail_s=0.0)
    assert [r for _, r in run_in_flight(["a", "b"], files, gates, key=str, in_flight=1)] == ["A", "B"]
    assert files.threads == {threading.current_thread().name}
    assert files.index("end", "a") < files.index("start", "b")


def test_a_job_without_progress_opens_its_gate_when_it_returns() -> None:
    """A skipped or failed file reports no batch: the next starts when its work returns."""
    gates = ModelGates()
    files = FakeFiles(gates, batches=0, tail_s=0.0)
    assert [r for _, r in run_in_flight(["a", "b", "c"], files, gates, key=str, in_flight=2)] == [
        "A",
        "B",
        "C",
    ]


def test_gate_opens_on_the_last_batch_only() -> None:
    seen: list[dict[str, object]] = []
    gates = ModelGates(seen.append)
    gate = gates.expect(Path("x.wav"))
    gates({"processed": 4, "total": 4, "finished": False, "path": "x.wav"})  # total not yet exact
    gates({"processed": 5, "total": 6, "finished": True, "path": "x.wav"})
    gates({"processed": 6, "total": 6, "finished": True, "path": "y.wav"})  # another file
    assert not gate.is_set() and len(seen) == 3  # the bar saw every batch
    gates({"processed": 6, "total": 6, "finished": True, "path": "x.wav"})
    assert gate.is_set()
    gates.cancel()
    with pytest.raises(Cancelled):
        gates({"processed": 1, "total": 6, "finished": False, "path": "x.wav"})


def test_a_signal_cancels_the_file_on_the_model_and_starts_no_other() -> None:
    """Ctrl-C reaches the calling thread while "b" is on the model: "b" is cancelled at its next batch,
    later files never start, and no worker is left when the KeyboardInterrupt goes on."""
    gates = ModelGates()
    files = FakeFiles(gates, batches=60, tail_s=0.0)

    def work(job: str) -> str:
        if job == "b":
            threading.Timer(0.05, _thread.interrupt_main).start()  # as SIGINT would, mid-file
        return files(job)

    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        list(run_in_flight(["a", "b", "c", "d"], work, gates, key=str, in_flight=2))
    assert [j for e, j in files.log if e == "start"] == ["a", "b"]
    assert ("cancelled", "b") in files.log and ("end", "b") not in files.log
    time.sleep(0.01)  # the timer thread itself ends just after firing
    assert threads_started_since(before) == []


def test_stopping_early_starts_no_later_file() -> None:
    gates = ModelGates()
    files = FakeFiles(gates, tail_s=0.0)
    run = run_in_flight(["a", "b", "c", "d"], files, gates, key=str, in_flight=2)
    assert next(run) == ("a", "A")
    run.close()  # GeneratorExit at the yield: the caller's error path
    started = [j for e, j in files.log if e == "start"]
    assert "d" not in started and all(("end", j) in files.log for j in started)


def test_an_error_in_a_job_stops_the_rest_and_is_raised_in_order() -> None:
    gates = ModelGates()
    files = FakeFiles(gates, tail_s=0.0)

    def work(job: str) -> str:
        if job == "b":
            raise ValueError("b broke")
        return files(job)

    with pytest.raises(ValueError, match="b broke"):
        list(run_in_flight(["a", "b", "c", "d"], work, gates, key=str, in_flight=2))
    assert ("start", "d") not in files.log


# ---- through the CLI -----------------------------------------------------------------------------------


def test_separator_progress_opens_the_files_gate(tiny_model_path: Path, write_audio, tmp_path: Path) -> None:
    gates = ModelGates()
    sep = Separator.from_pretrained(tiny_model_path, device="cpu", segment=0.25, batch_size=2, callback=gates)
    src = write_audio("a.wav", seconds=0.9)
    gate = gates.expect(src)
    sep.separate_file(src, tmp_path / "o")
    assert gate.is_set()  # the key is the path the engine's progress carries


def test_cli_with_files_in_flight_writes_what_one_at_a_time_writes(
    tiny_model_path: Path, tmp_path: Path, write_audio: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        write_audio(f"in/t{i}.wav", seconds=0.8, seed=i)
    flags = ["--model", str(tiny_model_path), "--segment", "0.25", "--batch-size", "2", "--bit-depth", "24"]
    assert cli.main(["separate", str(tmp_path / "in"), "-o", str(tmp_path / "one"), *flags]) == 0
    monkeypatch.setattr(separate_jobs, "FILES_IN_FLIGHT", {"cpu": 2})
    report = tmp_path / "t.json"
    argv = ["separate", str(tmp_path / "in"), "-o", str(tmp_path / "two"), "--timings", str(report), *flags]
    assert cli.main(argv) == 0
    assert '"files_in_flight": 2' in report.read_text() and '"files": 3' in report.read_text()
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.wav"))
    assert len(one) == 6 and one == sorted(
        p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.wav")
    )
    for rel in one:
        a, _ = sf.read(str(tmp_path / "one" / rel), dtype="int32")
        b, _ = sf.read(str(tmp_path / "two" / rel), dtype="int32")
        assert np.array_equal(a, b)


def test_cli_runs_a_single_file_on_its_own_thread(
    tiny_model_path: Path, tmp_path: Path, write_audio: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(separate_jobs, "FILES_IN_FLIGHT", {"cpu": 2})
    threads: set[str] = set()
    real = separate_jobs._separate_one

    def one(*args: object) -> str | None:
        threads.add(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(separate_jobs, "_separate_one", one)
    src = write_audio("in/a.wav", seconds=0.5)
    report = tmp_path / "t.json"
    argv = ["separate", str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path)]
    assert cli.main([*argv, "--segment", "0.25", "--timings", str(report)]) == 0
    assert '"files_in_flight": 1' in report.read_text()
    assert threads == {threading.current_thread().name}


def test_cli_ctrl_c_with_files_in_flight_leaves_no_partial_output(
    tiny_model_path: Path, tmp_path: Path, write_audio: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the second of three files is on the model: exit 130, its temp files and folder gone,
    the third never started, the first whole; no worker left."""
    monkeypatch.setattr(separate_jobs, "FILES_IN_FLIGHT", {"cpu": 2})
    for i in range(3):
        write_audio(f"in/t{i}.wav", seconds=2.0, seed=i)
    real = ModelGates.__call__

    def interrupting(self: ModelGates, info: dict[str, object]) -> None:
        if str(info["path"]).endswith("t1.wav") and info["processed"] == 2:
            _thread.interrupt_main()  # as SIGINT would
            time.sleep(0.3)  # the calling thread gets it and cancels meanwhile
        real(self, info)

    monkeypatch.setattr(ModelGates, "__call__", interrupting)
    before = set(threading.enumerate())
    flags = ["--model", str(tiny_model_path), "--segment", "0.25", "--batch-size", "1", "-q"]
    assert cli.main(["separate", str(tmp_path / "in"), "-o", str(tmp_path / "o"), *flags]) == 130
    out = tmp_path / "o"
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    assert sorted(p.name for p in (out / "t0").iterdir()) == [
        "bsmamba2.json",
        "instrumental.wav",
        "vocals.wav",
    ]
    assert not (out / "t1").exists() and not (out / "t2").exists()
    assert threads_started_since(before) == []
