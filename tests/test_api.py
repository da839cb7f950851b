"""The Python API (bsmamba2.api.Separator): shapes and rates kept, the exact residual, progress reports for
waveforms and files, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ScaleModel

from bsmamba2 import audio
from bsmamba2.api import Separator
from bsmamba2.apply import chunk_stride, num_chunks
from bsmamba2.errors import UserError


def test_separator_api_keeps_shape_and_rate(half_model: ScaleModel, tmp_path: Path, write_audio) -> None:
    sep = Separator(half_model, segment=0.1, overlap=0.5)
    assert sep.stems == ("vocals", "instrumental")
    t = np.arange(4800) / 48000
    mono = torch.from_numpy((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))  # (N,) at 48 kHz
    out = sep.separate(mono, 48000)
    assert out["vocals"].shape == mono.shape
    torch.testing.assert_close(out["vocals"] + out["instrumental"], mono)
    torch.testing.assert_close(out["vocals"][1000:-1000], 0.5 * mono[1000:-1000], atol=1e-3, rtol=0)
    stereo = np.random.default_rng(0).standard_normal((2, 3000)).astype(np.float32)
    assert sep.separate(stereo, 44100)["vocals"].shape == (2, 3000)
    with pytest.raises(UserError, match="NaN"):
        sep.separate(np.full(100, np.nan, np.float32), 44100)
    with pytest.raises(UserError, match="downmix"):
        sep.separate(np.zeros((6, 100), np.float32), 44100, layout="cf")
    paths = sep.separate_file(write_audio("x.wav", seconds=0.05), tmp_path / "sep")
    assert set(paths) == {"vocals", "instrumental"} and all(p.exists() for p in paths.values())


def test_missing_default_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bsmamba2.api

    monkeypatch.setattr(bsmamba2.api, "DEFAULT_MODEL", tmp_path / "none.safetensors")
    with pytest.raises(UserError, match="--model"):
        Separator.from_pretrained()


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 2), (16000, 1)])
def test_residual_is_exact_at_the_inputs_rate(half_model: ScaleModel, rate: int, channels: int) -> None:
    x = (0.3 * np.random.default_rng(1).standard_normal((channels, 9000))).astype(np.float32)
    out = Separator(half_model, segment=0.05).separate(x, rate)
    torch.testing.assert_close(out["vocals"] + out["instrumental"], torch.from_numpy(x), rtol=0, atol=1e-7)
    assert torch.equal(out["instrumental"], torch.from_numpy(x) - out["vocals"])


def test_callback_reports_every_batch_of_a_waveform(half_model: ScaleModel) -> None:
    infos: list[dict[str, Any]] = []
    sep = Separator(half_model, segment=0.02, overlap=0.5, batch_size=3, callback=infos.append)
    sep.separate(np.zeros((2, 44100), np.float32), 44100)
    expected = num_chunks(44100, sep.segment_samples, chunk_stride(sep.segment_samples, 0.5))
    done = [i["processed"] for i in infos]
    assert len(infos) == -(-expected // 3) > 1  # one report per batch of 3
    assert len(half_model.calls) == expected and {c[0] for c in half_model.calls} == {1}  # CPU: 1 per call
    assert done == sorted(done) and done[-1] == expected
    assert all(i["total"] == expected and i["path"] is None and i["sample_rate"] == 44100 for i in infos)
    assert [i["position"] for i in infos] == sorted(i["position"] for i in infos)


def test_callback_reports_a_file_at_another_rate(half_model: ScaleModel, tmp_path: Path, write_audio) -> None:
    infos: list[dict[str, Any]] = []
    sep = Separator(half_model, segment=0.01, overlap=0.25, batch_size=2, callback=infos.append)
    src = write_audio("r.wav", sr=22050, seconds=0.3)
    sep.separate_file(src, tmp_path / "o", bit_depth="float", progress=True)  # a terminal bar rides along
    done = [i["processed"] for i in infos]
    assert len(infos) > 2 and done == sorted(done)
    assert infos[-1]["processed"] == infos[-1]["total"]  # exact once the stream is finished
    assert infos[-1]["position"] == infos[-1]["length"]
    assert all(i["path"] == str(src) for i in infos)
    positions = [i["position"] for i in infos]
    assert positions == sorted(positions)


# ---- array inputs: layout, integer PCM, downmix ------------------------------------------------------------


def test_frames_channels_arrays_are_read_the_right_way_round(half_model: ScaleModel) -> None:
    sep = Separator(half_model, segment=0.05)
    x = (0.3 * np.random.default_rng(2).standard_normal((2, 5000))).astype(np.float32)  # (C, N)
    cf = sep.separate(x, 44100)
    fc = sep.separate(x.T.copy(), 44100)  # (N, C): soundfile's layout, found by the size-2 axis
    assert fc["vocals"].shape == (5000, 2)  # outputs keep the caller's layout
    torch.testing.assert_close(fc["vocals"].T, cf["vocals"])
    explicit = sep.separate(torch.from_numpy(x.T.copy()), 44100, layout="fc")
    torch.testing.assert_close(explicit["instrumental"], fc["instrumental"])
    torch.testing.assert_close(sep.separate(x, 44100, layout="cf")["vocals"], cf["vocals"])
    assert sep.separate(x[:1].T.copy(), 44100)["vocals"].shape == (5000, 1)  # (N, 1): mono


@pytest.mark.parametrize("shape", [(2, 2), (6, 5000), (1, 2)])
def test_ambiguous_shapes_name_the_layout_argument(half_model: ScaleModel, shape: tuple[int, int]) -> None:
    with pytest.raises(UserError, match="layout=") as e:
        Separator(half_model, segment=0.05).separate(np.zeros(shape, np.float32), 44100)
    assert "--" not in str(e.value)  # an API message, not a CLI flag


def test_bad_layout_and_dtype_are_clear_errors(half_model: ScaleModel) -> None:
    sep = Separator(half_model, segment=0.05)
    with pytest.raises(UserError, match="layout"):
        sep.separate(np.zeros((2, 100), np.float32), 44100, layout="tf")
    with pytest.raises(UserError, match="int64"):
        sep.separate(np.zeros((2, 100), np.int64), 44100)
    with pytest.raises(UserError, match="waveform"):
        sep.separate(np.zeros((2, 2, 100), np.float32), 44100)


def test_downmix_of_a_frames_channels_array(half_model: ScaleModel) -> None:
    sep = Separator(half_model, segment=0.05)
    x = (0.3 * np.random.default_rng(3).standard_normal((6, 4000))).astype(np.float32)  # 5.1, (C, N)
    cf = sep.separate(x, 44100, layout="cf", downmix=True)
    fc = sep.separate(x.T.copy(), 44100, layout="fc", downmix=True)
    assert cf["vocals"].shape == (2, 4000) and fc["vocals"].shape == (4000, 2)
    torch.testing.assert_close(fc["vocals"].T, cf["vocals"])
    torch.testing.assert_close(cf["vocals"] + cf["instrumental"], torch.from_numpy(audio.downmix(x)))
    with pytest.raises(UserError, match="downmix=True") as e:
        sep.separate(x.T.copy(), 44100, layout="fc")
    assert "--downmix" not in str(e.value)


@pytest.mark.parametrize(
    ("dtype", "scale", "offset"),
    [(np.int16, 32768, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128), (np.int8, 128, 0)],
)
def test_integer_pcm_is_scaled(identity_model: ScaleModel, dtype: type, scale: int, offset: int) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(4)
    pcm = rng.integers(info.min, info.max, size=(3000, 2), endpoint=True).astype(dtype)  # (N, C)
    want = (pcm.astype(np.float64) - offset) / scale  # in [-1, 1)
    sep = Separator(identity_model, segment=0.05)
    for given in (pcm, torch.from_numpy(pcm)):
        out = sep.separate(given, 44100)["vocals"]  # identity model: vocals = the input
        assert out.dtype == torch.float32 and out.abs().max() <= 1.0
        np.testing.assert_allclose(out.numpy(), want, atol=1e-6)
