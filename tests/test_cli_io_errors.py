"""OS errors in ``separate``, ``stream`` and ``export``: a full disk or a read-only folder ends in one line
naming the file and the reason, exit 1, and leaves no partial or temp file (a small tmpfs, as root)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from bsmamba2 import cli
from bsmamba2.atomic import atomic_write
from bsmamba2.checkpoints import save_model
from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model

FAST = ["--segment", "0.25", "--no-overlap", "--bit-depth", "float"]
Mount = Callable[..., Path]


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """mount_tmpfs(name, size="64k", read_only=False): a fresh tmpfs at tmp_path/name, unmounted after."""
    mounted: list[Path] = []

    def make(name: str, size: str = "64k", read_only: bool = False) -> Path:
        where = tmp_path / name
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("needs root to mount a tmpfs")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def one_error_line(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and len(lines[0]) < 400, err
    assert all(w in lines[0] for w in words), err


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_separate_onto_a_full_or_read_only_disk(
    tiny_model_path: Path, write_audio, mount_tmpfs: Mount, capsys: pytest.CaptureFixture[str], disk: str
) -> None:
    src = write_audio("song.wav", seconds=2.0)  # 2 x 2 x 88200 float32 samples: far more than 64 KiB
    out = mount_tmpfs("out", read_only=disk == "read-only")
    assert cli.main(["separate", str(src), "-o", str(out), "--model", str(tiny_model_path), *FAST]) == 1
    why = "no space left on device" if disk == "full" else "Read-only file system"
    one_error_line(capsys.readouterr().err, "song", why)
    assert files_in(out) == [] and list(out.iterdir()) == []  # no temp file, no empty track folder


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model(
        build_model(ModelConfig.tiny(causal=True)), tmp_path_factory.mktemp("m") / "c.safetensors"
    )


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_stream_onto_a_full_or_read_only_disk(
    causal_model: Path, write_audio, mount_tmpfs: Mount, capsys: pytest.CaptureFixture[str], disk: str
) -> None:
    src = write_audio("song.wav", seconds=2.0)
    out = mount_tmpfs("out", read_only=disk == "read-only")
    argv = ["stream", str(src), "-o", str(out / "song"), "-m", str(causal_model), "--bit-depth", "float"]
    assert cli.main(argv) == 1
    why = "no space left on device" if disk == "full" else "Read-only file system"
    one_error_line(capsys.readouterr().err, why)
    assert files_in(out) == []


def _fake_export(model: object, out: Path, **kw: object) -> None:
    """Writes like the exporter (through atomic_write), without the minute of tracing."""
    with atomic_write(out) as tmp:
        tmp.write_bytes(bytes(1 << 20))


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_export_onto_a_full_or_read_only_disk(
    tiny_model_path: Path,
    mount_tmpfs: Mount,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    disk: str,
) -> None:
    pytest.importorskip("onnx")
    import bsmamba2.cli.export

    monkeypatch.setattr(bsmamba2.cli.export, "export_onnx", _fake_export)
    out = mount_tmpfs("out", read_only=disk == "read-only")
    assert cli.main(["export", str(tiny_model_path), "-o", str(out / "m.onnx")]) == 1
    why = "No space left on device" if disk == "full" else "Read-only file system"
    one_error_line(capsys.readouterr().err, why)
    assert files_in(out) == []
