"""The audio package (bsmamba2.audio): streaming resampling equals the whole-signal one, channel layouts,
length fitting, the sample FIFO, the block reader and the atomic writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import audio
from bsmamba2.errors import AudioError, UserError


def test_streaming_resampler_matches_whole_signal() -> None:
    x = (0.3 * np.random.default_rng(0).standard_normal((2, 20000))).astype(np.float32)
    whole = audio.resample(x, 48000, 44100)
    rs = audio.Resampler(48000, 44100, 2)
    cuts = [0, 1, 700, 5000, 5001, 13000, 20000]
    pieces = [rs(x[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    pieces.append(rs(np.zeros((2, 0), np.float32), last=True))
    streamed = np.concatenate(pieces, axis=-1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    same = audio.Resampler(44100, 44100, 2)
    assert same(x) is x


def test_channel_layouts() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert audio.to_layout(x, 2).shape == (2, 2)
    assert audio.to_layout(x, 1).shape == (1, 2)
    mono = np.ones((1, 3), np.float32)
    assert audio.convert_channels(mono, 2).shape == (2, 3)
    with pytest.raises(AudioError, match="3 channels"):
        audio.convert_channels(np.zeros((3, 4), np.float32), 2)
    with pytest.raises(AudioError, match="--downmix"):
        audio.output_channels(6, allow_downmix=False)
    assert audio.output_channels(6, allow_downmix=True) == 2
    # 5.1 at full scale on every channel stays within full scale
    assert np.abs(audio.downmix(np.ones((6, 4), np.float32))).max() <= 1.0


def test_fit_length_and_finite() -> None:
    x = np.ones((2, 5), np.float32)
    assert audio.fit_length(x, 3).shape == (2, 3)
    padded = audio.fit_length(x, 8)
    assert padded.shape == (2, 8) and not padded[:, 5:].any()
    assert audio.fit_length(np.ones((3, 2, 5)), 4).shape == (3, 2, 4)
    with pytest.raises(AudioError, match="NaN"):
        audio.check_finite(np.array([[0.0, np.inf]]), "x")


def test_sample_fifo_pops_across_blocks() -> None:
    fifo = audio.SampleFifo(1)
    for a, b in ((0, 3), (3, 4), (4, 9)):
        fifo.push(np.arange(a, b, dtype=np.float32)[None])
    np.testing.assert_array_equal(fifo.pop(2), [[0, 1]])
    np.testing.assert_array_equal(fifo.pop(5), [[2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(fifo.pop(4), [[7, 8, 0, 0]])  # runs dry: zero-padded


def test_read_blocks_cover_the_file(write_audio) -> None:
    src = write_audio("b.wav", seconds=0.1)
    x, _ = audio.read(src)
    blocks = list(audio.read_blocks(src, x.shape[-1], 1000))
    assert all(b.shape[-1] <= 1000 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=-1), x)


def test_write_is_atomic_and_keeps_the_umask(tmp_path: Path) -> None:
    p = audio.write(tmp_path / "a" / "x.wav", np.zeros((2, 100), np.float32), 44100)
    assert p.exists() and sorted(os.listdir(p.parent)) == ["x.wav"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(UserError, match="cannot write"):  # FLAC cannot hold floats
        audio.write(tmp_path / "a" / "y.flac", np.zeros((2, 100), np.float32), 44100, subtype="FLOAT")
    assert sorted(os.listdir(p.parent)) == ["x.wav"]


def test_block_writer_commit_and_abort(tmp_path: Path) -> None:
    w = audio.AtomicWriter(tmp_path / "o.wav", 8000, 1, subtype="16")
    w.write(np.full((1, 10), 2.0, np.float32))  # clipped for PCM
    assert not (tmp_path / "o.wav").exists()
    assert w.commit() == tmp_path / "o.wav" and w.clipped == 10
    y, rate = audio.read(tmp_path / "o.wav")
    assert rate == 8000 and y.shape == (1, 10) and y.max() <= 1.0
    w = audio.AtomicWriter(tmp_path / "p.wav", 8000, 1)
    w.write(np.zeros((1, 10), np.float32))
    w.abort()
    assert sorted(os.listdir(tmp_path)) == ["o.wav"]


@pytest.mark.parametrize(
    ("suffix", "subtype"), [("wav", "24"), ("wav", "16"), ("flac", "24"), ("flac", "16")]
)
def test_block_writer_bytes_equal_one_libsndfile_write(tmp_path: Path, suffix: str, subtype: str) -> None:
    """Block by block, clipping only blocks that need it, gives byte for byte the file that libsndfile
    writes from the whole clipped signal at once (edge values, blocks clipped below or above only, an
    empty block)."""
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)  # never past 1 by itself
    x[:, 9000:9050] = -1.5  # the third block clips below only
    x[:, 17000:17100] += 1.2  # the last one above only
    edges = np.array([1.0, -1.0, 0.5 / 8388607, -0.5 / 8388607, 1.5 / 8388607, 0.99999994, -1.0000001])
    x[0, : edges.size] = edges
    x[1, : edges.size] = -edges
    w = audio.AtomicWriter(tmp_path / f"blocks.{suffix}", 44100, 2, subtype=subtype)
    for a, b in ((0, 5000), (5000, 5000), (5000, 16500), (16500, 30000)):  # the second block is empty
        w.write(x[:, a:b])
    w.commit()
    want = tmp_path / f"whole.{suffix}"
    sf.write(str(want), np.clip(x, -1.0, 1.0).T, 44100, subtype=audio.SUBTYPES[subtype])
    assert w.clipped == int(np.count_nonzero(np.abs(x) > 1.0)) > 100
    assert (tmp_path / f"blocks.{suffix}").read_bytes() == want.read_bytes()


def test_block_writer_keeps_float_samples_unclipped(tmp_path: Path) -> None:
    x = np.array([[0.5, 1.5, -2.0, 0.0]], np.float32)
    w = audio.AtomicWriter(tmp_path / "f.wav", 8000, 1, subtype="float")
    w.write(x)
    assert w.commit() == tmp_path / "f.wav" and w.clipped == 0
    np.testing.assert_array_equal(audio.read(tmp_path / "f.wav")[0], x)


def test_callers_arrays_to_channels_first() -> None:
    x = np.arange(10, dtype=np.float32).reshape(5, 2)  # (N, C)
    y, found = audio.channels_first(x)
    assert found == "fc" and y.shape == (2, 5) and y.flags.c_contiguous
    np.testing.assert_array_equal(audio.from_channels_first(y, found), x)
    mono, found = audio.channels_first(np.zeros(7, np.int16))
    assert found == "mono" and mono.shape == (1, 7) and mono.dtype == np.float32
    assert audio.from_channels_first(mono, found).shape == (7,)
    with pytest.raises(UserError, match="layout="):
        audio.channels_first(np.zeros((3, 3), np.float32))
    np.testing.assert_array_equal(
        audio.pcm_to_float(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5]
    )
    np.testing.assert_array_equal(
        audio.pcm_to_float(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128]
    )
