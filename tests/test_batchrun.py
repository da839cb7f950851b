"""The threaded stages of disk-to-disk separation (bsmamba2.batchrun): decode ahead and encode behind give
bit-identical files to the plain loop, errors on either thread surface on the caller's with no partial output
and no thread left running, and the stage clock sees every stage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2 import audio, batchrun, pipeline
from bsmamba2.api import Separator
from bsmamba2.apply import OverlapAdd
from bsmamba2.batchrun import Background, Prefetch, stage_clock
from bsmamba2.errors import AudioError
from bsmamba2.pipeline import ModelIO, separate_file


def _files(folder: Path) -> dict[str, np.ndarray]:
    # samples, not bytes: libsndfile stamps float WAVs with the time of writing (PEAK chunk)
    return {str(p.relative_to(folder)): audio.read(p)[0] for p in sorted(folder.rglob("*.wav"))}


CUDA = pytest.param(
    32000,
    "cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
)


@pytest.mark.parametrize(("rate", "device"), [(44100, "cpu"), (32000, "cpu"), CUDA])
def test_threads_give_bit_identical_files(
    tiny_model_path: Path, tmp_path: Path, write_audio, rate: int, device: str
) -> None:
    """A real (tiny) BSMamba2 over several files, many blocks each, with and without the threads (on CUDA
    the threaded run also keeps the engine's sums on the GPU: OverlapAdd.keep_on_device)."""
    sep = Separator.from_pretrained(tiny_model_path, device=device, segment=0.25, overlap=0.25, batch_size=2)
    srcs = [write_audio(f"s{i}.wav", seconds=1.3, seed=i, sr=rate) for i in range(3)]

    def make(length: int) -> OverlapAdd:
        return OverlapAdd(sep.model, segment=sep.segment_samples, overlap=0.25, batch_size=2, length=length)

    for threads, folder in ((False, tmp_path / "plain"), (True, tmp_path / "threads")):
        for src in srcs:
            outputs = {n: folder / src.stem / f"{n}.wav" for n in sep.stems}
            separate_file(make, sep.io, src, outputs, subtype="float", threads=threads)
    plain, threaded = _files(tmp_path / "plain"), _files(tmp_path / "threads")
    assert len(plain) == 2 * len(srcs) and plain.keys() == threaded.keys()
    assert all(np.array_equal(plain[k], threaded[k]) for k in plain)


def test_decode_error_mid_file_leaves_nothing(tmp_path: Path, write_audio, identity_model) -> None:
    x = np.random.default_rng(0).standard_normal((2, 20000)).astype(np.float32) * 0.1
    x[0, 15000] = np.nan  # read by the decode thread after outputs were started
    src = write_audio("nan.wav", data=x)
    out = tmp_path / "o"
    before = threading.active_count()

    def make(length: int) -> OverlapAdd:
        return OverlapAdd(identity_model, segment=1000, batch_size=1, length=length)

    with pytest.raises(AudioError, match="NaN"):
        separate_file(make, ModelIO.of(identity_model), src, {"vocals": out / "v.wav"}, threads=True)
    assert not out.exists()  # neither the temp files nor the folder the call created
    assert threading.active_count() == before  # both stage threads stopped


def test_encode_error_stops_the_model_and_removes_outputs(
    tmp_path: Path, write_audio, identity_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_audio("a.wav", seconds=0.5)
    calls = {"n": 0}
    real = audio.AtomicWriter.write

    def failing(self, block) -> None:  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(self, block)

    monkeypatch.setattr(audio.AtomicWriter, "write", failing)

    def make(length: int) -> OverlapAdd:
        return OverlapAdd(identity_model, segment=1000, batch_size=1, length=length)

    out = tmp_path / "o"
    with pytest.raises(OSError, match="No space"):
        separate_file(make, ModelIO.of(identity_model), src, {"vocals": out / "v.wav"}, threads=True)
    assert not out.exists()  # neither the temp files nor the folder the call created


@pytest.mark.parametrize("device", ["cpu", CUDA.values[1]], ids=["cpu", "cuda"])
def test_stage_clock_sees_every_stage(
    tiny_model_path: Path, tmp_path: Path, write_audio, device: str
) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    sep = Separator.from_pretrained(tiny_model_path, device=device, segment=0.25, batch_size=2)
    src = write_audio("a.wav", seconds=1.0)
    with stage_clock() as times:
        sep.separate_file(src, tmp_path / "o")
    assert times.files == 1
    # on CUDA the encode thread first waits for each piece's copy from the device ("to host")
    assert set(times.seconds) == {"decode", "model", "encode", "write"} | (
        {"to host"} if device == "cuda" else set()
    )
    assert all(v > 0 for v in times.seconds.values())
    sep.separate_file(src, tmp_path / "p")  # outside the block: nothing more is counted
    assert times.files == 1
    assert (
        sf.info(str(tmp_path / "p" / "a" / "vocals.wav")).frames == sf.info(str(src)).frames
    )  # out_dir/<track>/


def test_prefetch_keeps_order_bounds_lead_and_reraises() -> None:
    produced: list[int] = []

    def items():  # noqa: ANN202
        for i in range(6):
            produced.append(i)
            yield i
        raise ValueError("boom at 6")

    got = []
    with Prefetch(items(), depth=1) as pf, pytest.raises(ValueError, match="boom at 6"):
        for i in pf:
            time.sleep(0.02)
            assert len(produced) <= i + 3  # one queued, one in the producer's hand, at most
            got.append(i)
    assert got == list(range(6))


def test_prefetch_close_stops_a_blocked_producer() -> None:
    pf = Prefetch(iter(range(1000)), depth=1)
    assert next(iter(pf)) == 0
    pf.close()
    assert not pf._thread.is_alive()


def test_background_runs_in_order_and_reraises_on_join() -> None:
    seen: list[int] = []
    bg = Background(depth=2)
    for i in range(5):
        bg.submit(seen.append, i)
    bg.join()
    assert seen == [0, 1, 2, 3, 4]

    bad = Background()

    def fail(_: int) -> None:
        raise OSError("disk")

    bad.submit(fail, 0)
    with pytest.raises(OSError, match="disk"):
        bad.join()


def test_environment_turns_the_threads_off(
    tmp_path: Path, write_audio, identity_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage thread was started")

    monkeypatch.setattr(pipeline, "Prefetch", no_threads)
    monkeypatch.setattr(pipeline, "Background", no_threads)
    monkeypatch.setattr(batchrun, "Background", no_threads)  # the output writers' threads
    monkeypatch.setenv(pipeline.IO_THREADS_ENV, "0")
    src = write_audio("a.wav", seconds=0.2)

    def make(length: int) -> OverlapAdd:
        return OverlapAdd(identity_model, segment=1000, batch_size=2, length=length)

    out = separate_file(
        make, ModelIO.of(identity_model), src, {"vocals": tmp_path / "v.wav"}, subtype="float"
    )
    np.testing.assert_allclose(audio.read(out["vocals"])[0], audio.read(src)[0], atol=1e-6)
    monkeypatch.setenv(pipeline.IO_THREADS_ENV, "1")
    with pytest.raises(AssertionError, match="stage thread"):
        separate_file(make, ModelIO.of(identity_model), src, {"vocals": tmp_path / "w.wav"})


class _Recorder:
    """A block writer that records what reached it, and on which thread its commit ran."""

    def __init__(self, fail_commit: bool = False) -> None:
        self.blocks: list[int] = []
        self.commit_thread: str | None = None
        self.fail_commit = fail_commit

    def write(self, block: int) -> None:
        time.sleep(0.001)
        self.blocks.append(block)

    def commit(self) -> str:
        self.commit_thread = threading.current_thread().name
        if self.fail_commit:
            raise OSError("disk full")
        return f"done {len(self.blocks)}"

    def abort(self) -> None:
        pass


@pytest.mark.parametrize("threads", [True, False])
def test_background_writer_commits_behind_its_writes(threads: bool) -> None:
    """``finish`` queues the commit behind every write, on the writer's own thread (so outputs close in
    parallel); ``commit`` then returns its result, as it does without ``finish`` or without threads."""
    for finish in (True, False):
        raw = _Recorder()
        w = batchrun.BackgroundWriter(raw, threads=threads)
        for i in range(20):
            w.write(i)
        if finish:
            w.finish()
            w.finish()  # a second call queues nothing more
        assert w.commit() == "done 20" and raw.blocks == list(range(20))
        main = threading.current_thread().name
        assert (raw.commit_thread != main) == threads  # commit() alone also queues it there


def test_background_writer_reraises_a_failed_commit() -> None:
    w = batchrun.BackgroundWriter(_Recorder(fail_commit=True))
    w.write(1)
    w.finish()
    with pytest.raises(OSError, match="disk full"):
        w.commit()
