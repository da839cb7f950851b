"""Output formats of ``bsmamba2 separate`` and ``Separator.separate_file``: MP3 at a chosen bitrate, and
one-line errors, before any model loads, for a bitrate on a lossless format or an impossible one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ScaleModel

from bsmamba2 import audio, cli
from bsmamba2.api import Separator
from bsmamba2.errors import UserError

av = pytest.importorskip("av")  # reads the bitrate back from the MP3 stream


def bitrate_kbps(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.audio[0].bit_rate) // 1000


def separate(model: Path, *args: str | Path) -> int:
    return cli.main(["separate", *map(str, args), "--model", str(model), "--segment", "0.25", "--no-overlap"])


@pytest.mark.parametrize(
    ("flags", "kbps"), [([], 320), (["--bitrate", "192"], 192), (["--bitrate", "96"], 96)]
)
def test_mp3_output_at_a_bitrate(
    tiny_model_path: Path, tmp_path: Path, write_audio, flags: list[str], kbps: int
) -> None:
    src = write_audio("song.wav", seconds=0.5)
    assert separate(tiny_model_path, src, "-o", tmp_path / "o", "--format", "mp3", *flags) == 0
    x, rate = sf.read(str(src), always_2d=True)
    for stem in ("vocals", "instrumental"):
        out = tmp_path / "o" / "song" / f"{stem}.mp3"
        y, r = sf.read(str(out), always_2d=True)
        assert r == rate and y.shape == x.shape and np.isfinite(y).all()  # LAME's delay and padding trimmed
        assert bitrate_kbps(out) == kbps
    made = sorted(p.name for p in (tmp_path / "o" / "song").iterdir())
    assert made == [
        "bsmamba2.json",
        "instrumental.mp3",
        "vocals.mp3",
    ]  # the stems and their provenance record


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bitrate", "320"], "mp3"),  # wav is lossless
        (["--format", "flac", "--bitrate", "128"], "mp3"),
        (["--format", "mp3", "--bitrate", "100"], "100"),  # not an MP3 bitrate
        (["--format", "mp3", "--bitrate", "0"], "0"),
        (["--format", "mp3", "--bit-depth", "16"], "mp3"),  # mp3 has no bit depth: said, not ignored
    ],
)
def test_bad_bitrates_fail_before_loading(
    tmp_path: Path,
    write_audio,
    no_loading: list[object],
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    src = write_audio("song.wav", seconds=0.1)
    assert cli.main(["separate", str(src), "-o", str(tmp_path / "o"), *flags]) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "bitrate" in lines[0] and message in lines[0] and "Traceback" not in err
    assert no_loading == [] and not (tmp_path / "o").exists()


def test_api_writes_mp3_and_refuses_a_bitrate_on_flac(tmp_path: Path, write_audio) -> None:
    sep = Separator(ScaleModel((0.5,)), segment=0.05)
    src = write_audio("x.wav", sr=22050, seconds=0.3, channels=1)  # MPEG-2: its own bitrate table
    paths = sep.separate_file(src, tmp_path / "api", format="mp3", bitrate=128)
    assert paths["vocals"].suffix == ".mp3" and bitrate_kbps(paths["vocals"]) == 128
    y, rate = sf.read(str(paths["vocals"]), always_2d=True)
    assert rate == 22050 and y.shape == (6615, 1)
    with pytest.raises(UserError, match="bitrate"):
        sep.separate_file(src, tmp_path / "f", format="flac", bitrate=128)
    assert not (tmp_path / "f").exists()


def test_mp3_writers(tmp_path: Path) -> None:
    x = (0.2 * np.random.default_rng(0).standard_normal((2, 4410))).astype(np.float32)
    p = audio.write(tmp_path / "w.mp3", x, 44100, bitrate=160)
    assert bitrate_kbps(p) == 160 and sf.info(str(p)).frames == 4410
    w = audio.AtomicWriter(tmp_path / "b.mp3", 44100, 2, subtype="24", bitrate=64)  # a bit depth is moot
    for i in range(0, 4410, 1000):
        w.write(2 * x[:, i : i + 1000])  # over full scale: clipped, as for PCM
    assert w.commit() == tmp_path / "b.mp3" and w.clipped > 0 and bitrate_kbps(tmp_path / "b.mp3") == 64
    with pytest.raises(UserError, match="48 kHz"):  # MP3 has no 96 kHz
        audio.AtomicWriter(tmp_path / "hi.mp3", 96000, 2)
    with pytest.raises(UserError, match="bitrate"):
        audio.write(tmp_path / "x.wav", x, 44100, bitrate=320)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["b.mp3", "w.mp3"]
