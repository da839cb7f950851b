"""Sound files: header facts, seeking reads, atomic whole-file writes and a block-by-block atomic writer.

Arrays are float32 NumPy of shape (channels, frames). Reading can seek (``start``/``frames``) so long files
are never loaded whole; what libsndfile cannot read goes through PyAV (:mod:`~bsmamba2.audio.decode`). Every write goes to a temp file beside the target that is renamed into place only
when complete (``bsmamba2.atomic``), so a crash never leaves a partial output file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bsmamba2.atomic import atomic_write, temp_beside
from bsmamba2.audio.convert import convert_channels, resample
from bsmamba2.audio.decode import LIBSNDFILE_SUFFIXES, PYAV_SUFFIXES, open_reader, short_error
from bsmamba2.errors import AudioError, UserError

log = logging.getLogger(__name__)

# The one sample-rate constant: the paper models, the bundled one, MUSDB18HQ and the official evaluation all run
# at 44.1 kHz (ModelConfig.sample_rate defaults to the same value). Evaluation, plots and the demo use it.
MODEL_SAMPLE_RATE = 44100
AUDIO_EXTENSIONS = LIBSNDFILE_SUFFIXES + PYAV_SUFFIXES  # what folder inputs are searched for
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT", "32": "FLOAT"}
# MP3 (libsndfile >= 1.1 encodes it through LAME): the MPEG-1 Layer III bitrates in kbps, and the sample rates
# MPEG-1/2/2.5 define. Constant bitrate, so the size and the quality are what was asked for.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DEFAULT_MP3_BITRATE = 320


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
    r = open_reader(p)
    try:
        rate, channels, frames = r.sample_rate, r.channels, r.frames
    finally:
        r.close()
    if frames <= 0:
        raise AudioError(f"{p}: audio file is empty (0 samples)")
    return AudioInfo(p, rate, channels, frames)


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
    r = open_reader(p)
    try:
        rate = r.sample_rate
        if start:
            r.seek(start)
        audio = r.read(frames)  # (channels, frames)
    except AudioError:
        raise
    except Exception as e:  # libsndfile's and FFmpeg's read errors
        raise AudioError(f"{p}: cannot read audio ({short_error(e)})") from None
    finally:
        r.close()
    if channels is not None:
        audio = convert_channels(audio, channels, name=str(p))
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, rate


def read_frames(path: str | os.PathLike[str], start: int, out: np.ndarray) -> int:
    """Fill ``out`` (frames, file channels) float32 with samples from ``start``, in the file's own interleaved
    layout and rate (no resampling, no channel conversion, no new array: the data loader's fast path).
    Samples past the end of the file are zeros. Returns the number of frames actually read."""
    p = Path(path)
    r = open_reader(p)
    try:
        if start:
            r.seek(start)
        n = r.read_into(out)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{p}: cannot read audio ({short_error(e)})") from None
    finally:
        r.close()
    if n < out.shape[0]:
        out[n:] = 0.0
    return n


def write(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
    bitrate: int | None = None,
) -> Path:
    """Atomically write (C, N) audio. The format follows the suffix (.wav/.flac/.mp3/...); ``subtype`` is a
    soundfile subtype or one of "16", "24", "float" (MP3 has none); ``bitrate``: MP3 only, kbps (default
    320). Raises UserError if the folder is not writable or the format cannot hold this audio."""
    p = Path(path)
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {audio.shape}")
    options = encoding(p, sample_rate, subtype, bitrate)
    _make_folder(p)
    try:
        with atomic_write(p) as tmp:
            sf.write(str(tmp), np.ascontiguousarray(audio.T), sample_rate, **options)
    except OSError as e:
        raise UserError(f"{p}: cannot write output ({e.strerror or short_error(e)})") from None
    except (RuntimeError, ValueError) as e:  # libsndfile's errors are RuntimeErrors
        raise UserError(f"{p}: cannot write output ({short_error(e)})") from None
    return p


class AtomicWriter:
    """Write a sound file block by block into a hidden temp file beside it; ``commit()`` renames it into
    place, ``abort()`` deletes it, so a failure never leaves a partial output. PCM and MP3 output is clipped
    to [-1, 1] (libsndfile would wrap PCM around; decoders clip MP3 anyway); clipped samples are counted.
    ``subtype`` and ``bitrate`` as for :func:`write`.

    The temp file follows ``bsmamba2.atomic``'s rules (``temp_beside``: same folder, umask permissions);
    ``atomic_write`` itself cannot serve here because the file stays open across many calls.
    """

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        channels: int,
        subtype: str | None = None,
        bitrate: int | None = None,
    ) -> None:
        self.path = Path(path)
        options = encoding(self.path, sample_rate, subtype, bitrate)
        self.clip = options["subtype"] is None or options["subtype"].startswith(("PCM", "MPEG"))
        self.clipped = 0
        _make_folder(self.path)
        try:
            self.tmp = temp_beside(self.path)
        except OSError as e:
            raise UserError(f"{self.path.parent}: cannot write output ({e.strerror or e})") from None
        try:
            self._f = sf.SoundFile(
                str(self.tmp),
                "w",
                samplerate=sample_rate,
                channels=channels,
                **options,
            )
        except Exception as e:  # soundfile raises several types for unsupported format/subtype pairs
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"{self.path}: cannot write this format ({short_error(e)})") from None

    def write(self, block: np.ndarray) -> None:
        """Append (C, n) float32 samples."""
        # Two reductions find whether anything clips without making arrays; only then are the samples
        # counted and clipped (the usual output has none to clip).
        if self.clip and block.size and (block.max() > 1.0 or block.min() < -1.0):
            self.clipped += int(np.count_nonzero(np.abs(block) > 1.0))
            block = np.clip(block, -1.0, 1.0)
        try:
            self._f.write(np.ascontiguousarray(block.T))
        except Exception as e:
            raise self._failure(e) from None

    def commit(self) -> Path:
        """Close the temp file and rename it over the target; returns the target path."""
        try:
            self._f.close()  # flushes libsndfile's buffer and header: a full disk can show only here
            os.replace(self.tmp, self.path)
        except Exception as e:
            raise self._failure(e) from None
        if self.clipped:
            log.warning(
                "%s: %d samples clipped to [-1, 1] (use --bit-depth float to keep them)",
                self.path,
                self.clipped,
            )
        return self.path

    def _failure(self, e: Exception) -> UserError:
        # libsndfile reports a full disk as "System error."; the free space says what it was
        why = e.strerror if isinstance(e, OSError) and e.strerror else short_error(e)
        with contextlib.suppress(OSError):
            if shutil.disk_usage(self.tmp.parent).free < 1 << 20:
                why = "no space left on device"
        return UserError(f"{self.path}: cannot write output ({why})")

    def abort(self) -> None:
        """Close and delete the temp file; the target is untouched."""
        with contextlib.suppress(Exception):
            self._f.close()
        self.tmp.unlink(missing_ok=True)


def is_audio_file(path: Path) -> bool:
    """A visible file with a sound-file suffix (what folder inputs are searched for)."""
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _format(path: Path) -> str:
    return path.suffix.lstrip(".").upper() or "WAV"


def encoding(path: Path, sample_rate: int, subtype: str | None, bitrate: int | None) -> dict[str, Any]:
    """soundfile's keywords (format, subtype, and MP3's bitrate settings) for writing ``path``; UserError
    for a bitrate on another format, a bitrate MP3 lacks, or a sample rate it cannot hold."""
    fmt = _format(path)
    if fmt != "MP3":
        if bitrate is not None:
            raise UserError(f"{path}: a bitrate applies to mp3 output only ({fmt.lower()} has none)")
        return {"format": fmt, "subtype": SUBTYPES.get(subtype, subtype) if subtype is not None else None}
    kbps = DEFAULT_MP3_BITRATE if bitrate is None else bitrate
    if kbps not in MP3_BITRATES:
        raise UserError(
            f"{path}: no MP3 bitrate of {kbps} kbps (choose from {', '.join(map(str, MP3_BITRATES))})"
        )
    if sample_rate not in MP3_SAMPLE_RATES:
        raise UserError(
            f"{path}: MP3 holds sample rates of 8 to 48 kHz, not {sample_rate} Hz; choose wav or flac output"
        )
    # libsndfile sets a constant bitrate from a "compression level" c in [0, 1]: kbps = int(hi - c * (hi - lo)),
    # over the range of the MPEG version the rate belongs to (MPEG-2 and 2.5 top out at 160 and 64 kbps).
    lo, hi = (32, 320) if sample_rate >= 32000 else (8, 160) if sample_rate >= 16000 else (8, 64)
    if kbps > hi:
        log.info("%s: MP3 at %d Hz holds at most %d kbps; writing %d kbps", path, sample_rate, hi, hi)
    level = min(1.0, max(0.0, (hi - kbps - 0.5) / (hi - lo)))  # the half keeps int() from rounding down
    return {
        "format": fmt,
        "subtype": "MPEG_LAYER_III",
        "compression_level": level,
        "bitrate_mode": "CONSTANT",
    }


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot write output ({e.strerror or e})") from None
