"""The CUDA warm-up of ``bsmamba2 separate`` (``bsmamba2.cli.warmup``): nothing off CUDA or when switched
off; on its own thread; a failure stays there; the caller's outputs and RNG are untouched. Its phases are
device-agnostic code, so the tests run them on the CPU by adding "cpu" to ``DEVICE_TYPES``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2 import cli
from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.cli import separate_jobs, warmup
from bsmamba2.cli.warmup import WARM_UP_ENV, WarmUpPlan, start_warm_up

CPU = torch.device("cpu")


def _plan(model: Path | None, **kw: object) -> WarmUpPlan:
    return WarmUpPlan(CPU, precision="fp32", model=model, segment=0.25, batch_size=2, **kw)  # type: ignore[arg-type]


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmup, "DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setenv(WARM_UP_ENV, "1")  # every phase, whatever DEFAULT_LEVEL is


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_nothing_starts_off_cuda(device: str, tiny_model_path: Path) -> None:
    before = threading.active_count()
    plan = WarmUpPlan(torch.device(device), model=tiny_model_path)
    assert start_warm_up(plan) is None
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("env", "level"), [(None, warmup.DEFAULT_LEVEL), ("1", "full"), ("0", "off"), ("libs", "libs")]
)
def test_level_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str | None, level: str) -> None:
    if env is None:
        monkeypatch.delenv(WARM_UP_ENV, raising=False)
    else:
        monkeypatch.setenv(WARM_UP_ENV, env)
    assert warmup.warm_up_level() == level


def test_the_switch_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, on_cpu: None, tiny_model_path: Path
) -> None:
    monkeypatch.setenv(WARM_UP_ENV, "0")
    assert start_warm_up(_plan(tiny_model_path)) is None


def test_phases_run_on_their_own_thread_with_a_stand_in_model(
    monkeypatch: pytest.MonkeyPatch, on_cpu: None, tiny_model_path: Path
) -> None:
    """Every phase runs on the warm-up thread; the stand-in gets one full batch at the real chunk shape;
    the global RNG is not drawn from."""
    shapes: list[tuple[tuple[int, ...], str]] = []
    forward = warmup.OverlapAdd._forward

    def spy(self: warmup.OverlapAdd, batch: torch.Tensor) -> torch.Tensor:
        shapes.append((tuple(batch.shape), threading.current_thread().name))
        return forward(self, batch)

    monkeypatch.setattr(warmup.OverlapAdd, "_forward", spy)
    rng = torch.get_rng_state()
    w = start_warm_up(_plan(tiny_model_path))
    assert w is not None and w.thread.daemon
    w.wait()
    assert w.error is None and list(w.seconds) == ["context", "cublas", "forward"]  # no pinned phase on CPU
    assert shapes == [((2, 2, round(0.25 * 44100)), w.thread.name)]
    assert w.thread.name != threading.current_thread().name
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("why", ["libs", "no config", "no forward"])
def test_stft_stands_in_for_the_forward(
    monkeypatch: pytest.MonkeyPatch, on_cpu: None, tiny_model_path: Path, tmp_path: Path, why: str
) -> None:
    """At level libs, for a file without our config, and with forward=False (--fused): cuFFT only."""
    model: Path = tiny_model_path
    if why == "libs":
        monkeypatch.setenv(WARM_UP_ENV, "libs")
    elif why == "no config":
        model = tmp_path / "foreign.ckpt"
        model.write_bytes(b"not ours")
    w = start_warm_up(_plan(model, forward=why != "no forward"))
    assert w is not None
    w.wait()
    assert w.error is None and set(w.seconds) == {"context", "cublas", "cufft"}  # cufft on a thread beside


def test_a_failure_stays_on_the_thread(
    monkeypatch: pytest.MonkeyPatch, on_cpu: None, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no CUDA driver\nmore")

    monkeypatch.setattr(warmup, "_cublas", broken)
    escaped: list[object] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    caplog.set_level("DEBUG", logger="bsmamba2.cli.warmup")
    w = start_warm_up(_plan(tiny_model_path))
    assert w is not None
    w.wait()
    assert w.error == "RuntimeError: no CUDA driver"
    assert "cublas" not in w.seconds and "context" in w.seconds  # stopped at the error (cufft ran beside)
    assert escaped == []  # and did not raise it out of the thread
    assert any("warm-up" in r.message and r.levelname == "DEBUG" for r in caplog.records)


def _separate(model: Path, src: Path, out: Path, timings: Path) -> dict[str, np.ndarray]:
    argv = ["-q", "separate", str(src), "-o", str(out), "--model", str(model), "--device", "cpu"]
    argv += ["--segment", "0.25", "--precision", "fp32", "--batch-size", "2", "--timings", str(timings)]
    assert cli.main(argv) == 0
    return {p.stem: sf.read(str(p), dtype="float32")[0] for p in sorted((out / src.stem).glob("*.wav"))}


@pytest.mark.parametrize("fail", [False, True])
def test_separate_outputs_are_the_same_with_the_warm_up(
    monkeypatch: pytest.MonkeyPatch,
    on_cpu: None,
    tiny_model_path: Path,
    tmp_path: Path,
    write_audio: Callable[..., Path],
    fail: bool,
) -> None:
    """``bsmamba2 separate`` with the warm-up (working, or failing midway) writes exactly what it writes
    without one; the first file waited for it and the clock says so."""
    src = write_audio("a.wav", seconds=0.8)
    monkeypatch.setenv(WARM_UP_ENV, "0")
    plain = _separate(tiny_model_path, src, tmp_path / "plain", tmp_path / "plain.json")
    monkeypatch.setenv(WARM_UP_ENV, "1")
    if fail:

        def broken(*args: object) -> None:
            raise RuntimeError("a kernel failed")

        monkeypatch.setattr(warmup, "_forward", broken)
    waits: list[str] = []
    wait = separate_jobs._wait_for_warm_up
    monkeypatch.setattr(
        separate_jobs, "_wait_for_warm_up", lambda w, t: (waits.append(str(w.plan.model)), wait(w, t))
    )
    warm = _separate(tiny_model_path, src, tmp_path / "warm", tmp_path / "warm.json")
    assert waits == [str(tiny_model_path)]
    assert plain.keys() == warm.keys() and plain
    for name in plain:
        assert np.array_equal(plain[name], warm[name]), name
    stages = (tmp_path / "warm.json").read_text()
    assert "warm-up wait (s)" in stages and ("warm-up error" in stages) == fail
    assert "warm-up" not in (tmp_path / "plain.json").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_phase_runs_on_a_gpu() -> None:
    """On a GPU, the bundled model's stand-in at a real chunk shape: every phase, no error."""
    plan = WarmUpPlan(torch.device("cuda"), model=DEFAULT_MODEL, segment=8.0, batch_size=2)
    w = warmup.WarmUp(plan)
    w.wait()
    assert w.error is None and set(w.seconds) == {"context", "cublas", "forward", "pinned"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_libs_phases_run_beside_each_other_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """At level libs on a GPU with the Triton kernels: cuBLAS, then cuFFT, the pinned blocks and Triton's
    start on threads beside it; every one finishes, none fails."""
    monkeypatch.setenv(WARM_UP_ENV, "libs")
    plan = WarmUpPlan(torch.device("cuda"), model=DEFAULT_MODEL, segment=8.0, batch_size=8)
    w = start_warm_up(plan)
    assert w is not None
    w.wait()
    assert w.error is None and set(w.seconds) == {"context", "cublas", "cufft", "pinned", "triton"}


def test_stand_in_lies_wholly_on_the_plans_device() -> None:
    """The model constructor leaves what a checkpoint's load replaces on the host; the stand-in, which no load
    fills, must move itself (on an H200 its first Triton kernel was handed a host tensor). The meta device
    shows the same placement without a GPU."""
    from bsmamba2.config import ModelConfig

    model = warmup._stand_in(WarmUpPlan(torch.device("meta"), backend="torch"), ModelConfig.tiny())
    placed = [t.device.type for t in [*model.parameters(), *model.buffers()]]
    assert placed and set(placed) == {"meta"}
    assert not model.training


def test_a_bare_cuda_device_is_not_handed_to_set_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.cuda.set_device`` rejects a device without an index (an H200 run failed on exactly that); a bare
    "cuda" means the thread's current device, so the context phase leaves it alone, and passes an index on."""
    calls: list[torch.device] = []

    def set_device(d: torch.device) -> None:
        if d.index is None:  # what torch raises
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{d}")
        calls.append(d)

    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    warmup._context(torch.device("cuda"))
    assert calls == []
    warmup._context(torch.device("cuda:1"))
    assert calls == [torch.device("cuda:1")]


def test_pinned_blocks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warmup.PINNED_ENV, raising=False)
    assert warmup.pinned_blocks() == warmup.PINNED_BLOCKS
    monkeypatch.setenv(warmup.PINNED_ENV, "0")
    assert warmup.pinned_blocks() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_blocks_are_reused_by_the_first_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned phase leaves blocks in torch's caching host allocator: a batch pinned afterwards at the
    plan's shape lands in one of them (its address is one the phase allocated)."""
    seen: list[int] = []
    real = torch.empty

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        t = real(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("pin_memory"):
            seen.append(t.data_ptr())
        return t

    plan = WarmUpPlan(torch.device("cuda"), model=DEFAULT_MODEL, segment=8.0, batch_size=8)
    monkeypatch.setattr(warmup.torch, "empty", spy)
    warmup._pinned(plan, warmup._read_config(DEFAULT_MODEL))
    monkeypatch.setattr(warmup.torch, "empty", real)
    batch = torch.zeros(8, 2, round(8.0 * 44100)).pin_memory()
    assert batch.data_ptr() in seen


def test_a_failure_beside_stays_there(
    monkeypatch: pytest.MonkeyPatch, on_cpu: None, tiny_model_path: Path
) -> None:
    """A phase on a thread beside (here cuFFT's) that fails is reported once; cuBLAS's still runs."""

    def broken(*args: object) -> None:
        raise RuntimeError("no cuFFT")

    monkeypatch.setattr(warmup, "_cufft", broken)
    escaped: list[object] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    w = start_warm_up(_plan(tiny_model_path, forward=False))
    assert w is not None
    w.wait()
    assert w.error == "RuntimeError: no cuFFT" and escaped == []
    assert set(w.seconds) == {"context", "cublas"}
