"""The ``bsmamba2`` dispatcher (``bsmamba2.cli``): subcommand table, lazy imports, ``--version``, ``-q`` / ``-v``,
and console logging that does not glue onto a progress bar."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import bsmamba2
from bsmamba2 import cli, device

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_has_a_module_with_the_pair() -> None:
    assert set(cli.SUBCOMMANDS) == {
        "separate",
        "train",
        "evaluate",
        "synth",
        "convert",
        "demo",
        "serve",
        "export",
        "stream",
    }
    for name, (module_name, help_text) in cli.SUBCOMMANDS.items():
        assert module_name == f"bsmamba2.cli.{name}" and help_text
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run)


@pytest.mark.parametrize(
    "name", ["separate", "train", "evaluate", "synth", "convert", "demo", "serve", "export", "stream"]
)
def test_subcommand_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bsmamba2 {name}") and "--quiet" in out


def test_help_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS) and "--version" in out and "--quiet" in out
    assert cli.main([]) == 2
    assert cli.main(["separat"]) == 2
    assert "unknown command 'separat'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bsmamba2 {bsmamba2.__version__}"


def test_quiet_and_verbose_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "-v", "synth", "--help"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--quiet" in err and "--verbose" in err


def test_help_imports_no_subcommand_module() -> None:
    code = (
        "import sys; from bsmamba2.cli import SUBCOMMANDS, main; main(['--help']); "
        "mods = {m for m, _ in SUBCOMMANDS.values()} | {'bsmamba2.cli.options'}; "
        "print(sorted(mods & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["separate", "--help"], ["separate"]])
def test_help_and_usage_errors_do_not_import_torch(argv: list[str]) -> None:
    """``bsmamba2 --help``, ``separate --help`` and a usage error answer without loading torch (~1.7 s)."""
    code = (
        "import sys; from bsmamba2.cli import main; code = main(sys.argv[1:]); "
        "print(code, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == f"{2 if argv == ['separate'] else 0} False"


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bsmamba2", "--version"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"bsmamba2 {bsmamba2.__version__}"


# ---- logging: levels, -q, and bars ---------------------------------------------------------------------


FAST = ["--segment", "0.25", "--no-overlap", "--bit-depth", "float", "--batch-size", "1"]


def _separate(model: Path, src: Path, out: Path, *flags: str) -> int:
    return cli.main([*flags, "separate", str(src), "-o", str(out), "--model", str(model), *FAST])


def test_info_by_default_and_quiet_shows_no_info_and_no_bar(
    tiny_model_path: Path,
    tmp_path: Path,
    write_audio: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = write_audio("song.wav", seconds=1.0)
    assert _separate(tiny_model_path, src, tmp_path / "a") == 0
    err = capsys.readouterr().err
    assert "INFO" in err and "chunk" in err  # the "-> OUT" line and the chunk bar
    for flag in ("-q", "--quiet"):
        assert _separate(tiny_model_path, src, tmp_path / flag, flag) == 0
        assert capsys.readouterr().err == ""
    # after the subcommand too
    assert (
        cli.main(
            ["separate", str(src), "-o", str(tmp_path / "c"), "--model", str(tiny_model_path), *FAST, "-q"]
        )
        == 0
    )
    assert capsys.readouterr().err == ""
    assert (tmp_path / "c" / "song" / "vocals.wav").exists()


def _warn_on_first_block(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    """Log a warning when the first output block is written: after 1 of 4 chunks, with the bar on screen."""
    from bsmamba2.audio.io import AtomicWriter

    real_write = AtomicWriter.write
    warned: list[bool] = []

    def write(self: AtomicWriter, block) -> None:  # type: ignore[no-untyped-def]
        if not warned:
            warned.append(True)
            logging.getLogger("bsmamba2.audio.io").warning(message)
        real_write(self, block)

    monkeypatch.setattr(AtomicWriter, "write", write)


def test_quiet_still_shows_warnings_and_errors(
    tiny_model_path: Path,
    tmp_path: Path,
    write_audio: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _warn_on_first_block(monkeypatch, "a warning")
    src = write_audio("song.wav", seconds=1.0)
    assert _separate(tiny_model_path, src, tmp_path / "o", "-q") == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["WARNING bsmamba2.audio.io: a warning"]  # no bar, no INFO, no summary
    assert _separate(tiny_model_path, tmp_path / "missing.wav", tmp_path / "o", "-q") == 1
    err = capsys.readouterr().err
    assert "missing.wav" in err and "error:" in err


def test_developer_lines_are_debug(
    tiny_model_path: Path,
    tmp_path: Path,
    write_audio: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The device / precision line is for developers: shown with -v, not by default."""
    src = write_audio("song.wav", seconds=0.3)
    device._logged.clear()  # log_once: once per process
    assert _separate(tiny_model_path, src, tmp_path / "a") == 0
    assert "tiny.safetensors on" not in capsys.readouterr().err
    device._logged.clear()
    assert _separate(tiny_model_path, src, tmp_path / "b", "-v") == 0
    assert re.search(r"DEBUG .*tiny\.safetensors on cpu", capsys.readouterr().err)


def test_a_warning_during_a_bar_starts_its_own_line(
    tiny_model_path: Path,
    tmp_path: Path,
    write_audio: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warning logged while the chunk bar is drawn goes through tqdm: the bar is cleared first, so the
    warning is never glued onto the bar's text."""
    _warn_on_first_block(monkeypatch, "a warning mid-bar")
    src = write_audio("song.wav", seconds=1.0)  # four 0.25 s chunks, one per batch
    assert _separate(tiny_model_path, src, tmp_path / "o") == 0
    err = capsys.readouterr().err
    assert "chunk" in err  # the bar was drawn
    (line,) = [seg for seg in re.split(r"[\r\n]", err) if "a warning mid-bar" in seg]
    assert line.startswith("WARNING"), repr(line)


def test_quiet_train_turns_the_step_bar_off(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "tiny.yaml")
    assert cli.main(["train", config, "--print-config"]) == 0
    assert "progress: true" in capsys.readouterr().out
    assert cli.main(["-q", "train", config, "--print-config"]) == 0
    assert "progress: false" in capsys.readouterr().out
