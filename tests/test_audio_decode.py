"""Reading what libsndfile cannot (bsmamba2.audio.decode): m4a/AAC through PyAV, whole, seeking and block
by block, through ``bsmamba2 separate``; and without PyAV, a one-line error naming the ``formats`` extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import audio, cli
from bsmamba2.audio import decode
from bsmamba2.errors import AudioError

av = pytest.importorskip("av")

SR = 44100
FAST = ["--segment", "0.25", "--no-overlap", "--bit-depth", "float"]


def tones(n: int, sr: int = SR) -> np.ndarray:
    """(2, n) float32: two sine tones (AAC codes tones closely, so decoded samples can be compared)."""
    t = np.arange(n) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t + 1)]).astype(
        np.float32
    )


def write_m4a(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    """Encode (C, N) float32 as AAC in an MP4 container, as phones and music stores ship it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "stereo" if x.shape[0] == 2 else "mono"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    return path


def test_m4a_reads_whole_with_its_exact_length(tmp_path: Path) -> None:
    x = tones(3 * SR + 123)
    src = write_m4a(tmp_path / "song.m4a", x)
    head = audio.info(src)
    assert (head.sample_rate, head.channels, head.frames) == (
        SR,
        2,
        x.shape[-1],
    )  # priming and padding trimmed
    y, rate = audio.read(src)
    assert rate == SR and y.shape == x.shape and y.dtype == np.float32
    # lossy, but aligned: the decoded tones match the encoded ones away from the edges
    assert np.corrcoef(y[0, 4096:-4096], x[0, 4096:-4096])[0, 1] > 0.999


@pytest.mark.parametrize("start", [0, 5000, 30000, 60001])
def test_m4a_seeking_reads_match_the_whole_decode(tmp_path: Path, start: int) -> None:
    src = write_m4a(tmp_path / "s.m4a", tones(2 * SR))
    whole, _ = audio.read(src)
    part, _ = audio.read(src, start=start, frames=20000)
    assert part.shape == (2, 20000)
    np.testing.assert_allclose(part, whole[:, start : start + 20000], atol=1e-4)
    out = np.empty((1000, 2), np.float32)  # the data loader's path: (frames, channels)
    assert audio.read_frames(src, start, out) == 1000
    np.testing.assert_allclose(out.T, whole[:, start : start + 1000], atol=1e-4)


def test_millisecond_stamped_containers_count_and_seek_exactly(tmp_path: Path) -> None:
    """Matroska stamps milliseconds: the length is counted by decoding and seeks decode from the start, so
    a lossless (FLAC in .mka) file reads back sample for sample, from anywhere."""
    x = tones(48000 + 17, sr=48000)
    pcm = np.round(x * 32767).astype(np.int16)  # (C, N)
    src = tmp_path / "lossless.mka"
    with av.open(str(src), "w") as c:
        s = c.add_stream("flac", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.T).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    assert audio.info(src).frames == x.shape[-1]
    want = pcm.astype(np.float32) / 32768
    np.testing.assert_array_equal(audio.read(src)[0], want)
    np.testing.assert_array_equal(audio.read(src, start=30001, frames=9000)[0], want[:, 30001:39001])


def test_m4a_block_reads_cover_the_file(tmp_path: Path) -> None:
    src = write_m4a(tmp_path / "b.m4a", tones(SR))
    whole, _ = audio.read(src)
    blocks = list(audio.read_blocks(src, whole.shape[-1], 3000))
    assert all(b.shape[-1] <= 3000 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=-1), whole)


def test_separate_an_m4a_file_and_a_folder_of_them(tiny_model_path: Path, tmp_path: Path) -> None:
    x = tones(SR // 2)
    one = write_m4a(tmp_path / "in" / "a.m4a", x)
    write_m4a(tmp_path / "in" / "b.m4a", x[:1])  # mono
    assert (
        cli.main(["separate", str(one), "-o", str(tmp_path / "o1"), "-m", str(tiny_model_path), *FAST]) == 0
    )
    v, rate = sf.read(str(tmp_path / "o1" / "a" / "vocals.wav"), always_2d=True)
    assert rate == SR and v.shape == (x.shape[-1], 2)
    assert (
        cli.main(
            ["separate", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "-m", str(tiny_model_path), *FAST]
        )
        == 0
    )
    mono, _ = sf.read(str(tmp_path / "o2" / "b" / "instrumental.wav"), always_2d=True)
    assert mono.shape == (x.shape[-1], 1)


def test_without_pyav_m4a_names_the_extra(
    tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_m4a(tmp_path / "only" / "song.m4a", tones(SR // 4))
    monkeypatch.setattr(decode, "load_av", lambda: None)
    with pytest.raises(AudioError, match=r"bsmamba2\[formats\]"):
        audio.info(src)
    for target in (src, src.parent):  # the file, and a folder holding only m4a
        assert (
            cli.main(["separate", str(target), "-o", str(tmp_path / "o"), "-m", str(tiny_model_path), *FAST])
            == 1
        )
        err = capsys.readouterr().err
        assert "bsmamba2[formats]" in err and "no audio files" not in err and "Traceback" not in err
        assert [line for line in err.splitlines() if "error:" in line] == [
            line for line in err.splitlines() if "m4a" in line
        ]


def test_libsndfile_formats_never_need_pyav(write_audio, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_audio("x.flac", seconds=0.1, subtype="PCM_16")
    monkeypatch.setattr(decode, "load_av", lambda: None)
    assert audio.info(src).frames == 4410
    bad = src.with_suffix(".wav")
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot read audio") as e:
        audio.info(bad)
    assert "bsmamba2[formats]" not in str(e.value)  # a broken WAV is not a missing extra
