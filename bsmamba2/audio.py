"""Audio I/O: the only module that reads or writes sound files.

Arrays are float32 NumPy of shape (channels, frames). Reading can seek (``start``/``frames``) so long files
are never loaded whole; resampling uses soxr; writes are atomic (temp file in the same folder + rename), so
a crash never leaves a partial output file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bsmamba2.atomic import temp_beside
from bsmamba2.errors import AudioError, UserError

log = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 44100
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT", "32": "FLOAT"}


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a sound file."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header. Raises AudioError (one line) for missing, unreadable or empty files."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    try:
        i = sf.info(str(p))
    except Exception as e:  # soundfile raises several types for corrupt / unknown formats
        raise AudioError(f"{p}: cannot read audio ({_short(e)})") from None
    if i.frames <= 0:
        raise AudioError(f"{p}: audio file is empty (0 samples)")
    return AudioInfo(p, int(i.samplerate), int(i.channels), int(i.frames))


def read(
    path: str | os.PathLike[str],
    start: int = 0,
    frames: int = -1,
    sample_rate: int | None = None,
    channels: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read ``frames`` samples from ``start`` (in the file's own rate), as float32 (channels, frames).

    ``sample_rate``: resample to this rate (soxr, high quality). ``channels``: 1 averages to mono, 2 duplicates
    mono to stereo; other conversions raise AudioError. Returns (audio, rate).
    """
    p = Path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            rate = int(f.samplerate)
            if start:
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)  # (frames, channels)
    except AudioError:
        raise
    except Exception as e:
        if not p.exists():
            raise AudioError(f"{p}: no such file") from None
        raise AudioError(f"{p}: cannot read audio ({_short(e)})") from None
    audio = np.ascontiguousarray(data.T)  # (channels, frames)
    if channels is not None:
        audio = convert_channels(audio, channels, name=str(p))
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, rate


def convert_channels(audio: np.ndarray, channels: int, name: str = "audio") -> np.ndarray:
    """(C, N) -> (channels, N): mono->stereo duplicates, stereo->mono averages; nothing else is guessed."""
    c = audio.shape[0]
    if c == channels:
        return audio
    if c == 1 and channels == 2:
        return np.repeat(audio, 2, axis=0)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    raise AudioError(f"{name}: has {c} channels, expected {channels}")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (C, N) float32 audio with soxr (VHQ). Returns (C, round(N * rate_out / rate_in))."""
    if rate_in == rate_out:
        return audio
    out = soxr.resample(audio.T, rate_in, rate_out, quality="VHQ")  # soxr wants (frames, channels)
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T)


def write(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> Path:
    """Atomically write (C, N) audio. The format follows the suffix (.wav/.flac/...); ``subtype`` is a
    soundfile subtype or one of "16", "24", "float". Raises UserError if the folder is not writable."""
    p = Path(path)
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {audio.shape}")
    if subtype is not None:
        subtype = SUBTYPES.get(subtype, subtype)
    fmt = p.suffix.lstrip(".").upper() or "WAV"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(temp_beside(p))
    except OSError as e:
        raise UserError(f"{p.parent}: cannot write output ({e.strerror or e})") from None
    try:
        sf.write(tmp, np.ascontiguousarray(audio.T), sample_rate, subtype=subtype, format=fmt)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | sf.LibsndfileError | RuntimeError | ValueError):
            raise UserError(f"{p}: cannot write output ({_short(e)})") from None
        raise
    return p


def is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def read_frames(path: str | os.PathLike[str], start: int, out: np.ndarray) -> int:
    """Fill ``out`` (frames, file channels) float32 with samples from ``start``, in the file's own interleaved
    layout and rate (no resampling, no channel conversion, no new array: the data loader's fast path).
    Samples past the end of the file are zeros. Returns the number of frames actually read."""
    p = Path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            if start:
                f.seek(start)
            got = f.read(frames=out.shape[0], dtype="float32", always_2d=True, out=out)
    except Exception as e:
        if not p.exists():
            raise AudioError(f"{p}: no such file") from None
        raise AudioError(f"{p}: cannot read audio ({_short(e)})") from None
    n = got.shape[0]
    if n < out.shape[0]:
        out[n:] = 0.0
    return n


_WAV_DTYPES = {(1, 16): ("<i2", 1 / 32768), (1, 32): ("<i4", 1 / 2147483648), (3, 32): ("<f4", 1.0)}


@dataclass(frozen=True)
class WavLayout:
    """Where the samples of a plain WAV file are: ``frames`` x ``channels`` values of ``dtype`` from byte
    ``offset``; float audio = value * ``scale``."""

    offset: int
    dtype: str
    scale: float
    channels: int
    frames: int


def wav_layout(path: str | os.PathLike[str]) -> WavLayout | None:
    """Parse the header of a plain WAV file (PCM 16/32-bit or float32); None for anything else (FLAC,
    24-bit, RF64, malformed): callers then fall back to :func:`read`."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            fmt = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], int.from_bytes(hdr[4:], "little")
                if cid == b"fmt ":
                    body = f.read(size)
                    tag = int.from_bytes(body[0:2], "little")
                    if tag == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag opens the GUID
                        tag = int.from_bytes(body[24:26], "little")
                    fmt = (tag, int.from_bytes(body[14:16], "little"), int.from_bytes(body[2:4], "little"))
                    if size % 2:
                        f.seek(1, 1)
                elif cid == b"data":
                    if fmt is None or (fmt[0], fmt[1]) not in _WAV_DTYPES:
                        return None
                    dtype, scale = _WAV_DTYPES[(fmt[0], fmt[1])]
                    width = np.dtype(dtype).itemsize * fmt[2]
                    frames = min(size, p.stat().st_size - f.tell()) // width
                    return WavLayout(f.tell(), dtype, scale, fmt[2], frames) if frames > 0 else None
                else:
                    f.seek(size + (size % 2), 1)
    except (OSError, ValueError):
        return None


def read_wav_into(path: str | os.PathLike[str], layout: WavLayout, start: int, out: np.ndarray) -> None:
    """Read raw samples ``[start, start + len(out))`` of a WAV described by ``layout`` into ``out``
    ((n, channels) of ``layout.dtype``, reused by the caller) with one pread: no decoding, no new array, no
    page faults on a fresh mapping (the data loader's fast path). Raises AudioError if the file is shorter
    than its header promised (e.g. truncated after it was scanned)."""
    p = Path(path)
    view = out.data.cast("B")  # out must be C-contiguous: it is the caller's reused buffer
    want = view.nbytes
    try:
        fd = os.open(p, os.O_RDONLY)
        try:
            got = os.preadv(fd, [view], layout.offset + start * out.strides[0])
        finally:
            os.close(fd)
    except OSError as e:
        raise AudioError(f"{p}: cannot read audio ({e.strerror or e})") from None
    if got < want:
        raise AudioError(f"{p}: file is shorter than its header says (truncated?)")
