"""The CUDA driver's start beside ``import torch`` (``bsmamba2.cli.cuda_prestart``): which device, the driver
calls in order on a thread of their own, nothing off CUDA or when switched off, failures stay on the thread,
no torch imported; and ``bsmamba2 separate`` calls it once its arguments parse."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bsmamba2 import cli
from bsmamba2.cli import cuda_prestart, separate
from bsmamba2.cli.cuda_prestart import WARM_UP_ENV, device_index

ROOT = Path(__file__).resolve().parents[1]


class FakeDriver:
    """Stands in for libcuda: records (call, thread name, argument); ``count`` devices; ``fail``: the call
    that returns an error code."""

    def __init__(self, count: int = 2, fail: str | None = None) -> None:
        self.count, self.fail = count, fail
        self.calls: list[tuple[str, str, Any]] = []

    def _record(self, call: str, arg: Any = None) -> int:
        self.calls.append((call, threading.current_thread().name, arg))
        return 100 if call == self.fail else 0

    def cuInit(self, flags: int) -> int:  # noqa: N802 - the driver's names
        return self._record("cuInit", flags)

    def cuDeviceGetCount(self, out: Any) -> int:  # noqa: N802
        out._obj.value = self.count
        return self._record("cuDeviceGetCount")

    def cuDeviceGet(self, out: Any, ordinal: int) -> int:  # noqa: N802
        out._obj.value = ordinal
        return self._record("cuDeviceGet", ordinal)

    def cuDevicePrimaryCtxRetain(self, out: Any, dev: ctypes.c_int) -> int:  # noqa: N802
        out._obj.value = 1234
        return self._record("cuDevicePrimaryCtxRetain", dev.value)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WARM_UP_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(cuda_prestart, "_retained", [])


def test_device_index_follows_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [device_index(n) for n in ("auto", "cuda", "CUDA:3", "cpu", "mps", "cuda:x")] == [0, 0, 3] + [
        None
    ] * 3
    monkeypatch.setenv("LOCAL_RANK", "5")  # torchrun
    assert (device_index("auto"), device_index("cuda"), device_index("cuda:1")) == (5, 5, 1)


@pytest.mark.parametrize(("device", "ordinal"), [("auto", 1), ("cuda:1", 1), ("cuda", 1)])
def test_driver_calls_in_order_on_a_thread(
    monkeypatch: pytest.MonkeyPatch, device: str, ordinal: int
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")  # "auto" / "cuda": 3 modulo the 2 devices
    driver = FakeDriver(count=2)
    opened: list[str] = []
    thread = cuda_prestart.start(device, load=lambda name: opened.append(name) or driver)
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert opened == [cuda_prestart.DRIVER]
    assert [(c, a) for c, _, a in driver.calls] == [
        ("cuInit", 0),
        ("cuDeviceGetCount", None),
        ("cuDeviceGet", ordinal),
        ("cuDevicePrimaryCtxRetain", ordinal),
    ]
    assert {name for _, name, _ in driver.calls} == {thread.name} != {threading.current_thread().name}
    assert [c.value for c in cuda_prestart._retained] == [1234]  # kept retained


def test_nothing_starts_off_cuda_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver()
    before = threading.active_count()
    assert cuda_prestart.start("cpu", load=lambda name: driver) is None
    assert cuda_prestart.start("mps", load=lambda name: driver) is None
    monkeypatch.setenv(WARM_UP_ENV, "0")
    assert cuda_prestart.start("cuda", load=lambda name: driver) is None
    assert driver.calls == [] and threading.active_count() == before


def _no_driver(name: str) -> Any:
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize(
    ("device", "driver", "last"),
    [
        ("cuda", _no_driver, None),  # no driver installed
        ("cuda", FakeDriver(fail="cuInit"), "cuInit"),  # a driver but no GPU it can use
        ("cuda", FakeDriver(count=0), "cuDeviceGetCount"),  # no visible device
        ("cuda:4", FakeDriver(count=2), "cuDeviceGetCount"),  # no such device: torch says so later
        ("cuda", FakeDriver(fail="cuDevicePrimaryCtxRetain"), "cuDevicePrimaryCtxRetain"),
    ],
)
def test_failures_stay_on_the_thread(
    monkeypatch: pytest.MonkeyPatch, device: str, driver: Any, last: str | None
) -> None:
    escaped: list[object] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    load = driver if callable(driver) and not isinstance(driver, FakeDriver) else (lambda name: driver)
    thread = cuda_prestart.start(device, load=load)
    assert thread is not None
    thread.join(timeout=30)
    assert escaped == [] and cuda_prestart._retained == []
    if isinstance(driver, FakeDriver):
        assert driver.calls[-1][0] == last  # stopped there


def _run_python(code: str) -> None:
    """``code`` in a fresh interpreter on this tree, the warm-up switch unset; it must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(WARM_UP_ENV, None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_imports_no_torch() -> None:
    """The real driver library (absent here, or present): either way torch stays unimported."""
    code = (
        "import sys; from bsmamba2.cli import cuda_prestart as p; t = p.start('cuda'); t.join(60); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    _run_python(code)


@pytest.mark.parametrize(("argv", "started"), [([], "cpu"), (["--engine", "onnx"], None)])
def test_separate_starts_it_once_the_arguments_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], started: str | None
) -> None:
    """``cli.main`` calls ``separate.before_torch``, which starts the driver for the parsed --device; an ONNX
    model needs no torch context."""
    seen: list[str] = []
    monkeypatch.setattr(cuda_prestart, "start", lambda device: seen.append(device))
    monkeypatch.setattr(separate, "run", lambda args: 0)
    assert cli.main(["separate", str(tmp_path / "x.wav"), "--device", "cpu", *argv]) == 0
    assert seen == ([started] if started else [])


@pytest.mark.gpu
@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason="needs a CUDA GPU")
def test_torch_runs_in_the_context_started_before_it() -> None:
    """On a GPU: the primary context retained before ``import torch`` is the one torch then works in."""
    code = (
        "import ctypes; from bsmamba2.cli import cuda_prestart as p; p.start('cuda:0').join(60); "
        "assert p._retained, 'no context retained'; import torch; torch.zeros(1, device='cuda:0').sum().item(); "
        "cur = ctypes.c_void_p(); assert ctypes.CDLL(p.DRIVER).cuCtxGetCurrent(ctypes.byref(cur)) == 0; "
        "assert cur.value == p._retained[0].value, (cur.value, p._retained[0].value)"
    )
    _run_python(code)
