"""Precision choice on CPU (bsmamba2/device.py): 'auto' measures fp32 against bf16 once per model and caches it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bsmamba2 import device


class _Timed(nn.Module):
    """A waveform model whose forward sleeps longer in one precision: the choice must follow the clock."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.slow = slow
        self.calls = 0
        self.cfg = SimpleNamespace(
            n_fft=16, sample_rate=100, audio_channels=2, to_dict=lambda: {"slow": slow}
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (b, c, n) -> (b, 1, c, n)
        self.calls += 1
        in_bf16 = torch.is_autocast_enabled("cpu")
        time.sleep(0.05 if in_bf16 == (self.slow == "bf16") else 0.0)
        return wave[:, None]


@pytest.mark.parametrize("slow", ["bf16", "fp32"])
def test_the_faster_precision_is_chosen_and_cached(slow: str, tmp_path: Path) -> None:
    cache = tmp_path / "cpu_precision.json"
    model = _Timed(slow)
    want = None if slow == "bf16" else torch.bfloat16
    assert device.measured_cpu_precision(model, cache=cache) == want
    calls = model.calls
    assert calls == 4  # a warm-up and a timed run of each
    assert device.measured_cpu_precision(model, cache=cache) == want and model.calls == calls  # cached
    assert list(json.loads(cache.read_text()).values()) == ["fp32" if slow == "bf16" else "bf16"]


def test_auto_measures_only_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu = torch.device("cpu")
    model = _Timed("bf16")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.resolve_precision(cpu, "auto", model=model) is None and model.calls == 0
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_precision(cpu, "auto") == torch.bfloat16  # no model: the capability rule
    assert device.resolve_precision(cpu, "auto", model=model) is None  # measured: fp32 was faster
    assert (tmp_path / "bsmamba2" / "cpu_precision.json").exists()
    assert device.resolve_precision(cpu, "bf16", model=model) == torch.bfloat16  # explicit: never measured


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_cpu_allocator_tuning_starts_no_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """mallopt is found among the process's own symbols: no `ldconfig -p` child on every CLI start."""
    import platform
    import subprocess

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    applied = device.tune_cpu_allocator()
    assert applied == (platform.libc_ver()[0] == "glibc")
