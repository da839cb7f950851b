"""The work of ``bsmamba2 separate`` (``bsmamba2.cli.separate_jobs``): device defaults and the CUDA warm-up
thread, which must do nothing off CUDA."""

from __future__ import annotations

import argparse
import threading
import time

import pytest
import torch

from bsmamba2 import cli
from bsmamba2.cli import options, separate_jobs
from bsmamba2.cli import separate as cli_separate
from bsmamba2.errors import UserError


def _parsed(*argv: str) -> argparse.Namespace:
    return cli.command_parser("separate", cli_separate).parse_args(["x.wav", *argv])


def test_batch_size_and_fused_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parsed("--device", "cpu")
    assert separate_jobs._device_defaults(args) == torch.device("cpu")
    assert (args.batch_size, args.fused) == (options.DEFAULT_BATCH_SIZE, False)
    monkeypatch.setattr(separate_jobs, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(options, "CUDA_BATCH_SIZE", 7)
    monkeypatch.setattr(options, "CUDA_FUSED", True)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere")
    args = _parsed()
    assert separate_jobs._device_defaults(args) == torch.device("cuda")
    assert (args.batch_size, args.fused) == (7, True)
    args = _parsed("--batch-size", "2", "--no-fused")  # what the user says wins
    separate_jobs._device_defaults(args)
    assert (args.batch_size, args.fused) == (2, False)
    assert _parsed("--engine", "onnx").fused is None
    args = _parsed("--engine", "onnx")
    separate_jobs._device_defaults(args)
    assert args.fused is False  # an ONNX file has no glue to compile


def _record_cuda_calls(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[tuple[str, str]]:
    """Stand-ins for the CUDA calls of the warm-up: each records (call, thread name)."""
    calls: list[tuple[str, str]] = []

    def init() -> None:
        calls.append(("init", threading.current_thread().name))
        if fail:
            raise RuntimeError("no CUDA driver")

    def ones(*shape: int, device: torch.device) -> torch.Tensor:
        calls.append((f"ones on {device}", threading.current_thread().name))
        return torch.ones(*shape)

    monkeypatch.setattr(torch.cuda, "init", init)
    monkeypatch.setattr(torch, "ones", ones)
    return calls


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_warm_up_does_nothing_off_cuda(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    calls = _record_cuda_calls(monkeypatch)
    before = threading.active_count()
    assert separate_jobs.warm_up(torch.device(device)) is None
    assert calls == [] and threading.active_count() == before


def test_warm_up_creates_the_context_on_its_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_cuda_calls(monkeypatch)
    thread = separate_jobs.warm_up(torch.device("cuda:1"))
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [c for c, _ in calls] == ["init", "ones on cuda:1"]
    assert {name for _, name in calls} == {thread.name} != {threading.current_thread().name}


def test_warm_up_failure_is_left_to_the_callers_own_cuda_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_cuda_calls(monkeypatch, fail=True)
    escaped: list[object] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    thread = separate_jobs.warm_up(torch.device("cuda"))
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive() and [c for c, _ in calls] == ["init"]  # stopped at the error
    assert escaped == []  # and did not raise it out of the thread


def test_files_in_flight_per_device_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(separate_jobs.FILES_IN_FLIGHT_ENV, raising=False)
    assert separate_jobs._files_in_flight(torch.device("cpu")) == 1
    assert separate_jobs._files_in_flight(torch.device("cuda:1")) == separate_jobs.FILES_IN_FLIGHT.get(
        "cuda", 1
    )
    monkeypatch.setattr(separate_jobs, "FILES_IN_FLIGHT", {"cuda": 2})
    assert separate_jobs._files_in_flight(torch.device("cuda:1")) == 2
    assert separate_jobs._files_in_flight(torch.device("cpu")) == 1
    monkeypatch.setenv(separate_jobs.FILES_IN_FLIGHT_ENV, "3")
    assert separate_jobs._files_in_flight(torch.device("cpu")) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(separate_jobs.FILES_IN_FLIGHT_ENV, bad)
        with pytest.raises(UserError, match=separate_jobs.FILES_IN_FLIGHT_ENV):
            separate_jobs._files_in_flight(torch.device("cpu"))


@pytest.mark.parametrize(("env", "started"), [(None, True), ("0", False)])
def test_separate_starts_the_warm_up_on_cuda_and_joins_it(
    monkeypatch: pytest.MonkeyPatch, write_audio, env: str | None, started: bool
) -> None:
    """``run_jobs`` on a (stand-in) CUDA device starts the warm-up before the model loads and has joined it
    when it returns; BSMAMBA2_CUDA_WARM_UP=0 (benchmarks) skips it."""
    threads: list[threading.Thread] = []
    order: list[str] = []

    def fake_warm_up(device: torch.device) -> threading.Thread:
        order.append(f"warm-up on {device}")
        t = threading.Thread(target=time.sleep, args=(0.3,))  # still running when the jobs are done
        t.start()
        threads.append(t)
        return t

    def fake_jobs(*args: object) -> int:
        order.append("jobs")
        return 0

    monkeypatch.setattr(options, "check", lambda args: None)
    monkeypatch.setattr(separate_jobs, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(separate_jobs, "warm_up", fake_warm_up)
    monkeypatch.setattr(separate_jobs, "_run_jobs", fake_jobs)
    if env is None:
        monkeypatch.delenv(separate_jobs.WARM_UP_ENV, raising=False)
    else:
        monkeypatch.setenv(separate_jobs.WARM_UP_ENV, env)
    args = _parsed()
    args.inputs = [str(write_audio("a.wav", seconds=0.1))]
    args.quiet = True
    assert separate_jobs.run_jobs(args) == 0
    assert order == (["warm-up on cuda", "jobs"] if started else ["jobs"])
    assert all(not t.is_alive() for t in threads)
