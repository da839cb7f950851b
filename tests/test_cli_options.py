"""Shared options (``bsmamba2.cli.options``): one definition per option, and bad values refused in one line
before any model is loaded."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from bsmamba2 import cli
from bsmamba2.audio.formats import BIT_DEPTHS, FORMATS
from bsmamba2.cli import options
from bsmamba2.device import BACKENDS, PRECISIONS


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "error:" in line
    return line


SEPARATE_BAD = [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-2"], "--batch-size"),
    (["--segment", "0"], "--segment"),
    (["--segment", "-1"], "--segment"),
    (["--segment", "nan"], "--segment"),
    (["--segment", "inf"], "--segment"),
    (["--overlap", "1"], "--overlap"),
    (["--overlap", "nan"], "--overlap"),
    (["--format", "flac", "--bit-depth", "float"], "FLAC"),
    (["--device", "tpu"], "tpu"),
    (["--device", "cpu", "--precision", "fp16"], "fp16"),
]


@pytest.mark.parametrize(("flags", "names"), SEPARATE_BAD, ids=[" ".join(f) for f, _ in SEPARATE_BAD])
def test_separate_refuses_bad_values_before_loading(
    flags: list[str],
    names: str,
    no_loading: list[object],
    write_audio: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = write_audio("a.wav", seconds=0.1)
    assert cli.main(["separate", str(src), *flags]) == 1
    assert names in _one_line(capsys.readouterr().err)
    assert no_loading == [] and not (src.parent / "separated").exists()


EVALUATE_BAD = [
    (["--batch-size", "0"], "--batch-size"),
    (["--segment", "1", "0"], "--segment"),
    (["--segment", "nan"], "--segment"),
    (["--overlap", "1.5"], "--overlap"),
    (["--limit", "0"], "--limit"),
    (["--device", "tpu"], "tpu"),
]


@pytest.mark.parametrize(("flags", "names"), EVALUATE_BAD, ids=[" ".join(f) for f, _ in EVALUATE_BAD])
def test_evaluate_refuses_bad_values_before_loading(
    flags: list[str], names: str, no_loading: list[object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", "m.safetensors", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main([*args, *flags]) == 1
    assert names in _one_line(capsys.readouterr().err)
    assert no_loading == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_demo_refuses_bad_seconds_before_loading(
    seconds: str, no_loading: list[object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "-o", str(tmp_path / "o"), "--seconds", seconds]) == 1
    assert "--seconds" in _one_line(capsys.readouterr().err)
    assert no_loading == [] and not (tmp_path / "o").exists()


def test_demo_refuses_an_unknown_preset_before_loading(
    no_loading: list[object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "-o", str(tmp_path / "o"), "--preset", "loud"]) == 2
    assert "loud" in capsys.readouterr().err
    assert no_loading == []


def test_choices_come_from_their_definitions() -> None:
    parser = argparse.ArgumentParser()
    options.add_device(parser)
    options.add_output(parser)
    choices = {a.dest: a.choices for a in parser._actions if a.choices is not None}
    assert choices == {
        "precision": PRECISIONS,
        "backend": BACKENDS,
        "format": FORMATS,
        "bit_depth": BIT_DEPTHS,
    }


def test_copies_for_help_equal_their_sources() -> None:
    """The choices and defaults options.py copies so that --help needs no torch are the real ones."""
    from bsmamba2 import api, apply, device
    from bsmamba2.model.mixers import ssd

    assert options.DEVICES == device.DEVICES
    assert options.PRECISIONS == device.PRECISIONS
    assert options.BACKENDS == device.BACKENDS == ssd.USER_BACKENDS
    assert options.BACKEND_HELP == device.BACKEND_HELP == ssd.BACKEND_HELP
    assert options.DEFAULT_OVERLAP == apply.DEFAULT_OVERLAP
    assert options.ENGINES == api.ENGINES
    assert (api.FORMATS, api.BIT_DEPTHS) == (FORMATS, BIT_DEPTHS)  # the API re-exports audio.formats'


def test_each_command_keeps_its_defaults() -> None:
    def defaults(name: str) -> argparse.Namespace:
        module = __import__(f"bsmamba2.cli.{name}", fromlist=["add_arguments"])
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        return parser.parse_args(["x"] if name == "separate" else ["--data", "d", "--baseline", "mixture"])

    sep, ev = defaults("separate"), defaults("evaluate")
    assert (sep.segment, sep.overlap, sep.batch_size) == (8.0, 0.25, None)  # batch: per device, at run time
    assert (ev.segment, ev.overlap, ev.batch_size) == ([8.0], 0.0, 4)
    for a in (sep, ev):
        assert (a.device, a.precision, a.backend, a.model) == ("auto", "auto", "auto", None)
    assert (sep.format, sep.bit_depth) == ("wav", None)  # None: 24 once checked, an error with mp3
    options.check(sep, device=False)
    assert sep.bit_depth == "24"
