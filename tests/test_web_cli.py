"""``bsmamba2 serve``: its options and defaults (localhost, port 7860, the bundled model), and one-line errors
for a bad model, folder, port or a missing web extra, before anything listens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bsmamba2.cli import main
from bsmamba2.cli import serve as cli
from bsmamba2.web.settings import WebSettings


def parse(*argv: str) -> WebSettings:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.settings_from_args(parser.parse_args(list(argv)))


def test_defaults_listen_on_localhost_with_the_bundled_model() -> None:
    s = parse()
    assert (s.host, s.port, s.model, s.models_dir) == ("127.0.0.1", 7860, None, None)
    assert s.max_upload_bytes == 200_000_000 and s.max_queue >= 5


def test_options_reach_the_settings(tmp_path: Path) -> None:
    s = parse("--host", "0.0.0.0", "--port", "8080", "--models", str(tmp_path), "--max-upload-mb", "1.5",
              "--segment", "2", "--batch-size", "1", "--job-ttl", "5", "--max-queue", "3")  # fmt: skip
    assert (s.host, s.port, s.models_dir, s.max_upload_bytes) == ("0.0.0.0", 8080, tmp_path, 1_500_000)
    assert (s.segment, s.batch_size, s.job_ttl, s.max_queue) == (2.0, 1, 5.0, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "missing.safetensors"], "missing.safetensors: no such model file"),
        (["--models", "no_such_folder"], "no_such_folder: no such folder"),
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["--max-queue", "0"], "--max-queue must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsmamba2 serve: error:") and message in err and "\n" not in err


def test_missing_web_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert main(["serve"]) == 1
    assert "pip install 'bsmamba2[web]'" in capsys.readouterr().err


def test_loopback_addresses() -> None:
    assert all(cli._is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.1.2.3"))
    assert not any(cli._is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.org"))


def test_help_lists_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
