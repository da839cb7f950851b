"""The work of ``bsmamba2 separate`` (``bsmamba2.cli.separate_jobs``): device defaults, files in flight and
where the CUDA warm-up (``tests/test_cli_warmup.py``) starts and ends."""

from __future__ import annotations

import argparse
import threading
import time

import pytest
import torch

from bsmamba2 import cli
from bsmamba2.cli import options, separate_jobs, warmup
from bsmamba2.cli import separate as cli_separate
from bsmamba2.cli.warmup import WarmUpPlan
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
    """``run_jobs`` on a (stand-in) CUDA device starts the warm-up before the model loads, for the bundled
    model at the resolved batch size, and has joined it when it returns; BSMAMBA2_CUDA_WARM_UP=0
    (benchmarks) skips it."""
    threads: list[threading.Thread] = []
    order: list[str] = []

    class FakeWarmUp:
        def __init__(self, plan: WarmUpPlan) -> None:
            self.plan = plan
            self.thread = threading.Thread(target=time.sleep, args=(0.3,))  # still running after the jobs
            self.thread.start()
            threads.append(self.thread)

        def wait(self) -> float:
            self.thread.join()
            return 0.0

    def fake_start(plan: WarmUpPlan) -> FakeWarmUp | None:
        if warmup.warm_up_level() == "off":
            return None
        order.append(
            f"warm-up on {plan.device}, {plan.model.name if plan.model else None}, {plan.batch_size}"
        )
        return FakeWarmUp(plan)

    def fake_jobs(*args: object) -> int:
        order.append("jobs")
        return 0

    monkeypatch.setattr(options, "check", lambda args: None)
    monkeypatch.setattr(separate_jobs, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(separate_jobs, "start_warm_up", fake_start)
    monkeypatch.setattr(separate_jobs, "_run_jobs", fake_jobs)
    if env is None:
        monkeypatch.delenv(warmup.WARM_UP_ENV, raising=False)
    else:
        monkeypatch.setenv(warmup.WARM_UP_ENV, env)
    args = _parsed()
    args.inputs = [str(write_audio("a.wav", seconds=0.1))]
    args.quiet = True
    assert separate_jobs.run_jobs(args) == 0
    first = f"warm-up on cuda, default.safetensors, {options.CUDA_BATCH_SIZE}"
    assert order == ([first, "jobs"] if started else ["jobs"])
    assert all(not t.is_alive() for t in threads)
