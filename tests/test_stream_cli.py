"""``bsmamba2 stream``: a file or stdin PCM, block by block, stems equal to the API's, atomic outputs,
one-line errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2 import cli
from bsmamba2.checkpoints import save_model
from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.streaming import StreamingSeparator


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    out = {}
    for name, cfg in (("causal", ModelConfig.tiny(causal=True)), ("bi", ModelConfig.tiny())):
        out[name] = folder / f"{name}.safetensors"
        save_model(build_model(cfg), out[name])
    return out


def _api(model: Path, x: np.ndarray, rate: int, **kw: float) -> dict[str, np.ndarray]:
    """What StreamingSeparator gives for x (C, n), the latency's leading samples dropped."""
    from bsmamba2.checkpoints import load_model

    sep = StreamingSeparator(load_model(model), sample_rate=rate, channels=x.shape[0], **kw)
    outs = [sep.push(x), sep.flush()]
    skip = round(sep.latency * rate / sep.model_rate)
    return {k: torch.cat([o[k] for o in outs], dim=-1).numpy()[:, skip:] for k in sep.stems}


@pytest.mark.parametrize("rate", [44100, 48000])
def test_file_in_stems_out(models: dict[str, Path], tmp_path: Path, rate: int, capsys) -> None:
    x = (0.3 * np.random.default_rng(rate).standard_normal((2, rate // 2))).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, rate, subtype="FLOAT")
    code = cli.main(
        ["stream", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out"), "-m", str(models["causal"])]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "real-time factor" in printed and "latency 255 samples" in printed
    expect = _api(models["causal"], x, rate)
    for stem in ("vocals", "instrumental"):
        got, file_rate = sf.read(tmp_path / "out" / f"{stem}.wav", dtype="float32", always_2d=True)
        assert file_rate == rate and got.shape == (x.shape[1], 2)  # aligned with the input, same length
        np.testing.assert_allclose(got.T, expect[stem][:, : x.shape[1]], rtol=0, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["instrumental.wav", "vocals.wav"]


def test_stdin_pcm_and_block_mode(models: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    x = (0.3 * np.random.default_rng(1).standard_normal((1, 9000))).astype(np.float32)
    pcm = np.round(x * 32767).astype("<i2")
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.T.tobytes() + b"\x01"))
    )  # + half a frame
    args = ["stream", "-", "--rate", "22050", "--channels", "1", "--pcm", "s16", "-m", str(models["bi"])]
    assert cli.main([*args, "--block", "0.1", "--lookahead", "0.05", "-o", str(tmp_path)]) == 0
    got, _ = sf.read(tmp_path / "vocals.wav", dtype="float32", always_2d=True)
    expect = _api(models["bi"], pcm.astype(np.float32) / 32768, 22050, block=0.1, lookahead=0.05)
    assert got.shape == (9000, 1)
    np.testing.assert_allclose(got.T, expect["vocals"][:, :9000], rtol=0, atol=1e-6)


def test_errors_are_one_line_and_leave_no_file(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert cli.main(["stream", "-", "-o", str(tmp_path)]) == 1
    assert "--rate" in capsys.readouterr().err
    x = np.zeros((2, 4000), np.float32)
    sf.write(tmp_path / "in.wav", x.T, 44100, subtype="FLOAT")
    args = ["stream", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out"), "-m", str(models["causal"])]
    assert cli.main([*args, "--block", "1"]) == 1
    assert "causal" in capsys.readouterr().err
    x[1, 3000] = np.nan
    sf.write(tmp_path / "in.wav", x.T, 44100, subtype="FLOAT")
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial or temp file


def test_mp3_stream_at_a_bitrate(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    av = pytest.importorskip("av")
    x = (0.3 * np.random.default_rng(5).standard_normal((2, 22050))).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, 44100, subtype="FLOAT")
    argv = ["stream", str(tmp_path / "in.wav"), "-m", str(models["causal"]), "--format", "mp3"]
    assert cli.main([*argv, "-o", str(tmp_path / "out"), "--bitrate", "128"]) == 0
    with av.open(str(tmp_path / "out" / "vocals.mp3")) as c:
        assert int(c.streams.audio[0].bit_rate) // 1000 == 128
    capsys.readouterr()
    assert cli.main([*argv, "-o", str(tmp_path / "bad"), "--bit-depth", "16"]) != 0
    err = capsys.readouterr().err
    assert "--bitrate" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
