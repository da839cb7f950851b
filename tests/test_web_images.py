"""bsmamba2.web.images: the PNG encoder round-trips through a real decoder, and the spectrograms put low
notes at the bottom and draw a quieter signal darker on the shared scale."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsmamba2.web.images import MAX_FRAMES, N_MELS, colorize, encode_png, write_spectrograms

SR = 44100


def test_png_round_trips_through_pillow() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode_png(rgb))).convert("RGB"))
    assert np.array_equal(back, rgb)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(rgb.astype(np.float32))


def test_colorize_runs_dark_to_bright() -> None:
    rgb = colorize(np.linspace(0, 1, 11)[None])  # (1, 11, 3)
    brightness = rgb.astype(int).sum(-1)[0]
    assert np.all(np.diff(brightness) > 0)


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int).sum(-1)  # (H, W) brightness


def test_spectrograms_low_notes_at_the_bottom_and_shared_scale(tmp_path: Path) -> None:
    t = np.arange(2 * SR) / SR
    low = (0.5 * np.sin(2 * np.pi * 110 * t)).astype(np.float32)[None]  # (1, N)
    pngs = write_spectrograms({"mixture": low, "vocals": 0.01 * low}, SR, tmp_path)
    assert set(pngs) == {"mixture", "vocals"}
    mix, voc = _load(pngs["mixture"]), _load(pngs["vocals"])
    assert mix.shape[0] == N_MELS and mix.shape[1] <= MAX_FRAMES and mix.shape == voc.shape
    rows = mix.mean(axis=1)  # brightness per mel row, top row first
    assert rows.argmax() > 3 * N_MELS // 4  # a 110 Hz tone lights a row near the bottom
    assert voc.mean() < mix.mean()  # 40 dB quieter: darker on the one scale


def test_long_signals_stay_at_most_max_frames_wide(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((2, 30 * SR)).astype(np.float32)
    png = write_spectrograms({"mixture": x}, SR, tmp_path)["mixture"]
    assert MAX_FRAMES // 2 < _load(png).shape[1] <= MAX_FRAMES
