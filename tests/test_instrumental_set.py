"""scripts/instrumental_set.py: recordings without voice become an evaluation set whose leakage evaluate scores."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import cli

REPO = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_script_instrumental_set", REPO / "scripts" / "instrumental_set.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _recording(path: Path, seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
    return sf.read(path, dtype="float32", always_2d=True)[0]


def test_recordings_become_tracks_with_the_middle_excerpt_and_silent_vocals(tmp_path: Path) -> None:
    s = _script()
    a = _recording(tmp_path / "rec" / "album" / "one song.wav", 8.0, 48000, 2, 0)
    b = _recording(tmp_path / "rec" / "other.flac", 3.0, 22050, 1, 1)
    _recording(tmp_path / "rec" / "tiny.wav", 1.0, 44100, 2, 2)  # shorter than --min-seconds: skipped
    sf.write(tmp_path / "rec" / "silent.wav", np.zeros((44100 * 3, 2), np.float32), 44100)  # skipped too
    (tmp_path / "rec" / "notes.txt").write_text("not audio")
    out = tmp_path / "set"
    assert s.main([str(tmp_path / "rec"), "-o", str(out), "--seconds", "4", "--min-seconds", "2"]) == 0
    tracks = sorted(p.name for p in (out / "test").iterdir())
    assert tracks == ["album-one_song", "rec-other"]
    mix, rate = sf.read(out / "test" / "album-one_song" / "mixture.wav", dtype="float32", always_2d=True)
    assert rate == 48000 and mix.shape == (4 * 48000, 2)
    np.testing.assert_array_equal(mix, a[2 * 48000 : 6 * 48000])  # the middle 4 s, bit for bit
    voc, _ = sf.read(out / "test" / "album-one_song" / "vocals.wav", always_2d=True)
    assert voc.shape == mix.shape and not voc.any()
    source = json.loads((out / "test" / "album-one_song" / "source.json").read_text())
    assert source["start_s"] == 2.0 and source["seconds"] == 4.0
    short, rate = sf.read(out / "test" / "rec-other" / "mixture.wav", dtype="float32", always_2d=True)
    assert rate == 22050 and short.shape == b.shape  # shorter than --seconds: all of it, still mono
    np.testing.assert_allclose(short, b, atol=0)


def test_a_bad_request_stops_with_one_line(tmp_path: Path) -> None:
    s = _script()
    with pytest.raises(SystemExit, match="no such file"):
        s.main([str(tmp_path / "missing.wav"), "-o", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no audio files"):
        s.main([str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    _recording(tmp_path / "r" / "a.wav", 6.0, 44100, 2, 0)
    assert s.main([str(tmp_path / "r"), "-o", str(tmp_path / "o")]) == 0
    with pytest.raises(SystemExit, match="not empty"):
        s.main([str(tmp_path / "r"), "-o", str(tmp_path / "o")])


def test_evaluate_scores_the_set_as_instrumental(tmp_path: Path) -> None:
    """Every second of every track counts as silent, and a model that returns the mixture leaks 0 dB."""
    s = _script()
    _recording(tmp_path / "r" / "a.wav", 6.0, 44100, 2, 0)
    _recording(tmp_path / "r" / "b.wav", 6.0, 48000, 2, 1)
    assert s.main([str(tmp_path / "r"), "-o", str(tmp_path / "set"), "--seconds", "5"]) == 0
    out = tmp_path / "eval"
    argv = ["evaluate", "--baseline", "mixture", "--data", str(tmp_path / "set"), "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(p.read_text()) for p in sorted((out / "baseline" / "tracks").glob("*.json"))]
    assert len(rows) == 2 and summary["failed"] == []
    for row in rows:
        leak = row["vocal_leakage"]
        assert leak["instrumental"] and abs(leak["silent_seconds"] - 5.0) < 1e-3
        assert abs(leak["leakage_db"]) < 1e-3  # the mixture as the vocal estimate: as loud as the mixture


def test_leakage_bands_puts_a_tone_in_its_own_band() -> None:
    spec = importlib.util.spec_from_file_location(
        "_script_leakage_bands", REPO / "scripts" / "leakage_bands.py"
    )
    assert spec is not None and spec.loader is not None
    lb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lb)
    t = np.arange(44100) / 44100
    x = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)])
    e = lb.band_energies(x)
    assert e.shape == (len(lb.EDGES_HZ) - 1,)
    share = e / e.sum()
    assert share[2] > 0.79 and share[5] > 0.19 and share[2] + share[5] > 0.999  # 250-500 Hz and 2-4 kHz


def _effect_set() -> Any:
    spec = importlib.util.spec_from_file_location("_script_effect_set", REPO / "scripts" / "effect_set.py")
    assert spec is not None and spec.loader is not None
    rs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rs)
    return rs


def test_effect_set_rings_the_accompaniment_and_keeps_the_vocals(tmp_path: Path) -> None:
    rs = _effect_set()
    track = tmp_path / "data" / "test" / "song"
    track.mkdir(parents=True)
    rng = np.random.default_rng(0)
    stems = {s: (0.1 * rng.standard_normal((44100, 2))).astype(np.float32) for s in ("vocals", "other")}
    stems["bass"] = np.zeros((44100, 2), np.float32)
    stems["bass"][1000] = 0.5  # an impulse: its room is what comes out
    for s, x in stems.items():
        sf.write(track / f"{s}.wav", x, 44100, subtype="FLOAT")
    (track / "meta.json").write_text('{"phrases": []}')
    assert rs.main([str(tmp_path / "data"), str(tmp_path / "out"), "--rt60", "0.5", "--wet", "0.5"]) == 0
    out = tmp_path / "out" / "test" / "song"
    read = {p.stem: sf.read(p, dtype="float32", always_2d=True)[0] for p in out.glob("*.wav")}
    np.testing.assert_array_equal(read["vocals"], stems["vocals"])
    np.testing.assert_allclose(read["mixture"], read["vocals"] + read["bass"] + read["other"], atol=1e-6)
    assert np.abs(read["bass"][2000:20000]).max() > 1e-3  # the impulse rings ...
    assert np.abs(read["bass"][:1000]).max() < 1e-6  # ... only after it arrives (FFT rounding aside)
    assert (out / "meta.json").read_text() == '{"phrases": []}'
    with pytest.raises(SystemExit, match="exists"):
        rs.main([str(tmp_path / "data"), str(tmp_path / "out"), "--mono"])
    with pytest.raises(SystemExit, match="at least one effect"):
        rs.main([str(tmp_path / "data"), str(tmp_path / "out2")])


def test_effect_set_mono_lowpass_drive_and_gain(tmp_path: Path) -> None:
    rs = _effect_set()
    track = tmp_path / "data" / "test" / "song"
    track.mkdir(parents=True)
    t = np.arange(44100, dtype=np.float32) / 44100
    tone = lambda hz: np.sin(2 * np.pi * hz * t)  # noqa: E731
    vocals = np.stack([tone(300), 0.5 * tone(300)], 1).astype(np.float32)
    other = np.stack([0.2 * tone(200) + 0.02 * tone(9000), np.zeros_like(t)], 1).astype(np.float32)
    sf.write(track / "vocals.wav", vocals, 44100, subtype="FLOAT")
    sf.write(track / "other.wav", other, 44100, subtype="FLOAT")
    args = ["--mono", "--lowpass", "4000", "--drive", "12", "--gain", "-6"]
    assert rs.main([str(tmp_path / "data"), str(tmp_path / "out"), *args]) == 0
    out = tmp_path / "out" / "test" / "song"
    read = {p.stem: sf.read(p, dtype="float32", always_2d=True)[0] for p in out.glob("*.wav")}
    for x in read.values():
        np.testing.assert_array_equal(x[:, 0], x[:, 1])  # mono
    np.testing.assert_allclose(read["mixture"], read["vocals"] + read["other"], atol=1e-6)
    # vocals: not driven, folded (0.75 x the tone), 6 dB down; the 300 Hz tone passes the low-pass
    np.testing.assert_allclose(read["vocals"][:, 0], 0.75 * tone(300) * 10 ** (-6 / 20), atol=1e-4)
    spec = np.abs(np.fft.rfft(read["other"][:, 0]))
    assert spec[9000] < 1e-3 * spec[200]  # the 9 kHz tone is gone ...
    assert spec[600] > 1e-2 * spec[200]  # ... and the saturator made harmonics of 200 Hz
