"""bsmamba2.cli.startup: the collector paused over a command process's start-up, and the teardown skipped."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import cli
from bsmamba2.cli import separate_jobs, startup

REPO = Path(__file__).resolve().parents[1]
FAST = ["--segment", "0.25", "--no-overlap", "--bit-depth", "float", "--batch-size", "1"]


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    yield
    startup.resume_gc()
    gc.unfreeze()
    gc.enable()


def test_pause_then_resume_freezes_and_enables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(startup.ENV, raising=False)
    startup.pause_gc()
    assert not gc.isenabled() and startup.gc_paused()
    startup.resume_gc()
    assert gc.isenabled() and not startup.gc_paused()
    assert gc.get_freeze_count() > 0  # start-up's objects went to the permanent generation


def test_switched_off_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(startup.ENV, "0")
    startup.pause_gc()
    assert gc.isenabled() and not startup.gc_paused()
    assert not startup.fast_exit(cli.importlib.import_module("bsmamba2.cli.separate"))


def test_resume_without_pause_does_nothing() -> None:
    gc.disable()  # someone else's choice: not ours to undo
    startup.resume_gc()
    assert not gc.isenabled()


def test_only_opted_in_commands_exit_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(startup.ENV, raising=False)
    mod = cli.importlib.import_module
    assert startup.fast_exit(mod("bsmamba2.cli.separate")) and startup.fast_exit(mod("bsmamba2.cli.demo"))
    assert not startup.fast_exit(mod("bsmamba2.cli.train")) and not startup.fast_exit(None)


def test_main_in_process_neither_pauses_nor_exits() -> None:
    assert cli.main(["--version"]) == 0  # returns: a caller's process is never ended
    assert gc.isenabled()


def _song(path: Path) -> Path:
    x = 0.1 * np.random.default_rng(0).standard_normal((4410, 2)).astype(np.float32)
    sf.write(str(path), x, 44100, subtype="FLOAT")
    return path


def test_separate_resumes_the_collector_before_the_model_runs(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(startup.ENV, raising=False)
    seen: list[bool] = []
    real: Callable[..., None] = separate_jobs._wait_for_warm_up
    monkeypatch.setattr(
        separate_jobs, "_wait_for_warm_up", lambda *a: (seen.append(gc.isenabled()), real(*a))[1]
    )
    startup.pause_gc()  # as the executable's entry does
    src = _song(tmp_path / "a.wav")
    argv = ["-q", "separate", str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path), *FAST]
    assert cli.main(argv) == 0
    assert seen == [True]  # resumed right after the load, before the first forward


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsmamba2", *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def test_fast_exit_process_writes_the_same_files_and_codes(tmp_path: Path, tiny_model_path: Path) -> None:
    """``python -m bsmamba2 separate`` with and without the fast start and exit: same outputs, bit for bit,
    same exit codes and messages; a failing input still exits 1 with its one-line error."""
    src = _song(tmp_path / "a.wav")
    outs = {}
    for flag in ("1", "0"):
        env = {**os.environ, startup.ENV: flag}
        out = tmp_path / f"o{flag}"
        args = ["-q", "separate", str(src), "-o", str(out), "--model", str(tiny_model_path), *FAST]
        done = _run([*args, "--timings", str(tmp_path / f"t{flag}.json")], env)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"t{flag}.json").is_file()
        outs[flag] = {p.name: sf.read(str(p))[0] for p in sorted((out / "a").glob("*.wav"))}
        bad = _run(["separate", str(tmp_path / "missing.wav"), "-o", str(out)], env)
        assert bad.returncode == 1
        assert "no such file" in bad.stderr and bad.stderr.rstrip().endswith("failed 1")
    assert outs["1"].keys() == outs["0"].keys() == {"vocals.wav", "instrumental.wav"}
    for name in outs["1"]:
        np.testing.assert_array_equal(outs["1"][name], outs["0"][name])
