"""Chunked inference (bsmamba2.apply): exactness with an identity model, the paper's plain concatenation,
batching, streaming from disk and its failure modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ScaleModel
from torch import nn

from bsmamba2 import audio
from bsmamba2.apply import (
    OverlapAdd,
    apply_file,
    apply_model,
    chunk_stride,
    chunk_window,
    downmix,
    num_chunks,
)
from bsmamba2.errors import AudioError, UserError


class ChunkMeanModel(nn.Module):
    """Output depends on the whole chunk (x - its mean): exposes any chunking / padding difference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=-1, keepdim=True))[:, None]


def test_identity_is_exact_for_random_layouts(identity_model: ScaleModel) -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 2500))
        seg = int(rng.integers(1, 400))
        overlap = 0.0 if trial % 3 == 0 else float(rng.uniform(0, 0.95))
        transition = "linear" if trial % 2 else "none"
        x = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32))
        y = apply_model(
            identity_model,
            x,
            segment=seg,
            overlap=overlap,
            batch_size=int(rng.integers(1, 5)),
            transition=transition,
        )
        assert y.shape == (1, 2, n)
        torch.testing.assert_close(y[0], x, rtol=0, atol=2e-6, msg=f"n={n} seg={seg} overlap={overlap}")


def test_shorter_than_one_chunk_is_zero_padded(identity_model: ScaleModel) -> None:
    x = torch.randn(2, 37)
    y = apply_model(identity_model, x, segment=100, overlap=0.5)
    assert identity_model.calls == [(1, 2, 100)]
    torch.testing.assert_close(y[0], x, rtol=0, atol=1e-6)


def test_no_overlap_is_the_papers_plain_concatenation() -> None:
    torch.manual_seed(0)
    n, seg = 1000, 300
    x = torch.randn(2, n)
    y = apply_model(ChunkMeanModel(), x, segment=seg, overlap=0.0, batch_size=3)
    # OFFICIAL_SPEC §7: zero-pad to a multiple of the chunk, run chunks independently, concatenate, trim.
    padded = torch.nn.functional.pad(x, (0, seg - n % seg))
    chunks = padded.unfold(-1, seg, seg)  # (C, K, seg)
    ref = (chunks - chunks.mean(-1, keepdim=True)).reshape(2, -1)[:, :n]
    torch.testing.assert_close(y[0], ref)


def test_chunks_are_batched() -> None:
    model = ScaleModel((1.0, 2.0))
    x = torch.randn(2, 1000)
    y = apply_model(model, x, segment=100, overlap=0.5, batch_size=4)
    assert num_chunks(1000, 100, chunk_stride(100, 0.5)) == 19
    assert [c[0] for c in model.calls] == [4, 4, 4, 4, 3]
    torch.testing.assert_close(y[1], 2 * x)


def test_linear_windows_cross_fade_to_a_constant() -> None:
    seg, stride = 100, 50
    w = chunk_window(seg, stride, "linear")
    assert (w > 0).all() and w.max() <= 1
    total = torch.zeros(400)
    for s in range(0, 300, stride):
        total[s : s + seg] += w
    interior = total[seg:300]
    torch.testing.assert_close(interior, torch.full_like(interior, interior[0].item()))


def test_streaming_matches_in_memory() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 3000)).astype(np.float32))
    for overlap in (0.0, 0.25, 0.5):
        ref = apply_model(ChunkMeanModel(), x, segment=256, overlap=overlap, batch_size=2)
        engine = OverlapAdd(ChunkMeanModel(), segment=256, overlap=overlap, batch_size=2)
        pieces, i = [], 0
        while i < x.shape[-1]:
            k = int(rng.integers(1, 700))
            pieces.append(engine.push(x[:, i : i + k]))
            i += k
        pieces.append(engine.finish())
        out = torch.cat([p for p in pieces if p is not None], dim=-1)
        assert torch.equal(out, ref)


def test_bad_model_output_is_reported() -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Nan(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, None] * float("nan")

    with pytest.raises(ValueError, match=r"\(B, S, C, L\)"):
        apply_model(Wrong(), torch.randn(2, 50), segment=20)
    with pytest.raises(UserError, match="NaN"):
        apply_model(Nan(), torch.randn(2, 50), segment=20)
    with pytest.raises(ValueError, match="overlap"):
        apply_model(Wrong(), torch.randn(2, 50), segment=20, overlap=1.0)


# ---- from disk ----------------------------------------------------------------------------------------


def _outputs(d: Path, names: tuple[str, ...] = ("vocals", "instrumental")) -> dict[str, Path]:
    return {n: d / f"{n}.wav" for n in names}


def test_apply_file_matches_apply_model(tmp_path: Path, write_audio, half_model: ScaleModel) -> None:
    src = write_audio("a.wav", seconds=0.8)
    x, _ = audio.read(src)
    # small segment and batch so the file is read in many blocks
    out = apply_file(
        half_model, src, _outputs(tmp_path / "out"), segment=1000, overlap=0.5, batch_size=2, subtype="float"
    )
    v, _ = audio.read(out["vocals"])
    inst, _ = audio.read(out["instrumental"])
    ref = apply_model(half_model, torch.from_numpy(x), segment=1000, overlap=0.5).numpy()[0]
    np.testing.assert_allclose(v, ref, atol=1e-6)
    np.testing.assert_allclose(v + inst, x, atol=1e-6)  # instrumental = mixture - vocals


@pytest.mark.parametrize(
    ("rate", "channels", "frames"), [(48000, 2, 30000), (8000, 1, 5000), (22050, 1, 100)]
)
def test_apply_file_keeps_rate_channels_and_length(
    tmp_path: Path, write_audio, half_model: ScaleModel, rate: int, channels: int, frames: int
) -> None:
    t = np.arange(frames) / rate  # band-limited (< 4 kHz), so resampling round trips keep it
    tones = 0.2 * (
        np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 1000 * t + 1) + np.sin(2 * np.pi * 3000 * t + 2)
    )
    src = write_audio("b.wav", data=np.tile(tones, (channels, 1)).astype(np.float32), sr=rate)
    out = apply_file(half_model, src, _outputs(tmp_path / "o"), segment=4410, subtype="float")
    x, _ = audio.read(src)
    v, r = audio.read(out["vocals"])
    inst, _ = audio.read(out["instrumental"])
    assert r == rate and v.shape == x.shape == inst.shape
    np.testing.assert_allclose(v + inst, x, atol=1e-6)
    # a half-gain model through two resamplings: vocals ~ x / 2 away from the edges
    mid = slice(frames // 4, 3 * frames // 4)
    # (a 100-sample snippet is not band-limited: its resampling edges reach the middle)
    np.testing.assert_allclose(v[:, mid], 0.5 * x[:, mid], atol=1e-3 if frames > 1000 else 5e-3)


def test_apply_file_downmix(tmp_path: Path, write_audio, identity_model: ScaleModel) -> None:
    src = write_audio("surround.wav", channels=6, seconds=0.2)
    with pytest.raises(AudioError, match="--downmix"):
        apply_file(identity_model, src, _outputs(tmp_path / "o"), segment=2000)
    out = apply_file(
        identity_model, src, _outputs(tmp_path / "o"), segment=2000, allow_downmix=True, subtype="float"
    )
    x, _ = audio.read(src)
    v, _ = audio.read(out["vocals"])
    np.testing.assert_allclose(v, downmix(x), atol=1e-6)
    assert v.shape[0] == 2


def test_apply_file_failure_leaves_no_partial_output(
    tmp_path: Path, write_audio, identity_model: ScaleModel
) -> None:
    x = np.random.default_rng(0).standard_normal((2, 20000)).astype(np.float32) * 0.1
    x[0, 15000] = np.nan  # found only in a later block, after outputs were started
    src = write_audio("nan.wav", data=x)
    out_dir = tmp_path / "o"
    with pytest.raises(AudioError, match="NaN"):
        apply_file(identity_model, src, _outputs(out_dir), segment=1000, batch_size=1)
    assert list(out_dir.iterdir()) == []


def test_apply_file_clips_pcm_output(tmp_path: Path, write_audio) -> None:
    loud = ScaleModel((3.0,))
    src = write_audio("c.wav", seconds=0.1)
    out = apply_file(loud, src, {"vocals": tmp_path / "v.wav"}, segment=1000, subtype="16")
    data, _ = sf.read(str(out["vocals"]), dtype="float32")
    assert data.max() <= 1.0 and data.min() >= -1.0 and np.abs(data).max() > 0.99
