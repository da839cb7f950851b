"""Opening sound files for reading: libsndfile (soundfile) first, PyAV (FFmpeg) as the fallback.

libsndfile reads WAV, FLAC, OGG/Vorbis/Opus, MP3 and AIFF, with sample-exact seeks. What it cannot read
(m4a/AAC, WMA, the audio of video files, ...) goes to PyAV, the optional extra ``bsmamba2[formats]``. Both
readers decode block by block, so memory stays flat in the file's length whichever one reads.

PyAV's timeline: container durations are estimates, so the length is taken from the packets' own
timestamps where they count samples (one pass over the packets, no decoding; FFmpeg drops the codec's
priming samples and the end padding is trimmed here), else by decoding once (~1000x real time for AAC).
Seeks land before the target by ``PREROLL_SECONDS`` and decode forward, because a lossy codec's first frame
after a jump lacks the overlap from the frame before it. (AAC's noise substitution draws its noise from the
decoder's random state, so after a jump those bands differ from a whole decode's; the positions are exact.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import soundfile as sf
from einops import rearrange

from bsmamba2.audio.convert import pcm_to_float
from bsmamba2.errors import AudioError

# What libsndfile reads (soundfile's first choice); other suffixes need PyAV.
LIBSNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
PYAV_SUFFIXES = (".m4a", ".aac", ".wma", ".mka", ".webm")  # audio containers only FFmpeg reads
FORMATS_EXTRA = "pip install 'bsmamba2[formats]'"
PREROLL_SECONDS = 0.2  # covers AAC's 2048-sample overlap, MP3's bit reservoir and Opus's 80 ms pre-roll


class Reader(Protocol):
    """An open sound file read in order from a position: ``read(n)`` gives (channels, <= n) float32."""

    sample_rate: int
    channels: int
    frames: int

    def seek(self, start: int) -> None: ...

    def read(self, n: int = -1) -> np.ndarray: ...

    def read_into(self, out: np.ndarray) -> int: ...

    def close(self) -> None: ...


def load_av() -> ModuleType | None:
    """PyAV, or None when the ``formats`` extra is not installed. Imported on first use only: it costs
    ~0.15 s, which every run would pay for files libsndfile reads anyway."""
    try:
        import av
    except ImportError:
        return None
    return av


def open_reader(path: str | os.PathLike[str]) -> Reader:
    """Open a sound file with soundfile, else PyAV. Raises AudioError (one line) when neither reads it,
    naming the ``formats`` extra when PyAV is missing and might have."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    try:
        return SoundfileReader(p)
    except Exception as e:  # soundfile raises several types for corrupt / unknown formats
        sf_error = short_error(e)
    suffix = p.suffix.lower()
    av = load_av()
    if av is None:
        if suffix in LIBSNDFILE_SUFFIXES:
            raise AudioError(f"{p}: cannot read audio ({sf_error})") from None
        what = f"{suffix} files need" if suffix else "this format needs"
        raise AudioError(f"{p}: cannot read audio: {what} PyAV ({FORMATS_EXTRA})") from None
    try:
        return PyavReader(p, av)
    except (av.FFmpegError, OSError, ValueError) as e:
        # a libsndfile format that FFmpeg cannot read either: libsndfile's message is the one users know
        why = sf_error if suffix in LIBSNDFILE_SUFFIXES else getattr(e, "strerror", None) or short_error(e)
        raise AudioError(f"{p}: cannot read audio ({why})") from None


def short_error(e: BaseException) -> str:
    """The first line of an exception's message (libsndfile's can run over several)."""
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class SoundfileReader:
    """A file libsndfile reads: sample-exact seeks, the header's length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = sf.SoundFile(str(path))
        self.sample_rate = int(self._f.samplerate)
        self.channels = int(self._f.channels)
        self.frames = int(self._f.frames)

    def seek(self, start: int) -> None:
        self._f.seek(start)

    def read(self, n: int = -1) -> np.ndarray:
        """The next n samples (all with -1) as (channels, <= n) float32."""
        data = self._f.read(frames=n, dtype="float32", always_2d=True)  # (frames, channels)
        return np.ascontiguousarray(rearrange(data, "n c -> c n"))

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (frames, channels) float32 in the file's interleaved layout; returns frames read."""
        return int(self._f.read(frames=out.shape[0], dtype="float32", always_2d=True, out=out).shape[0])

    def close(self) -> None:
        self._f.close()


class PyavReader:
    """A file read through PyAV (FFmpeg): the first audio stream, decoded block by block.

    Where the stream's timestamps count samples (time base 1/rate: MP4/M4A, ...), the length comes from
    the packets and seeks jump (pre-rolled); elsewhere (WebM, ASF, ... stamp milliseconds, and codec delays
    make them drift) the length is counted by decoding once, and a seek decodes from the start.
    """

    def __init__(self, path: Path, av: Any) -> None:
        self.path = path
        self._av = av
        self._open()
        try:
            self.sample_rate = int(self._s.codec_context.sample_rate)
            self.channels = int(self._s.codec_context.layout.nb_channels)
            if self.sample_rate <= 0 or self.channels <= 0:
                raise ValueError("no sample rate or channel layout")
            self._exact = self._s.time_base == Fraction(1, self.sample_rate)
            self._first, self.frames = self._timeline()
            self.seek(0)
        except BaseException:
            self._c.close()
            raise

    def _open(self) -> None:
        """(Re)open the container: the only rewind that replays a codec's priming samples everywhere."""
        self._c = self._av.open(str(self.path))
        if not self._c.streams.audio:
            self._c.close()
            raise ValueError("no audio stream")
        self._s = self._c.streams.audio[0]

    def _timeline(self) -> tuple[int, int]:
        """(first sample's timestamp in samples, length)."""
        first, end = None, None
        if self._exact:
            for pkt in self._c.demux(self._s):
                if pkt.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if pkt.pts is None or not pkt.duration:  # raw streams (ADTS .aac) stamp nothing
                    first = end = None
                    break
                first = pkt.pts if first is None else min(first, pkt.pts)
                end = pkt.pts + pkt.duration if end is None else max(end, pkt.pts + pkt.duration)
        if first is not None and end is not None:
            origin = max(0, first)  # FFmpeg drops the priming samples, stamped before 0
            return origin, end - origin
        return 0, sum(frame.samples for frame in self._decoded())

    def _decoded(self) -> Iterator[Any]:
        """The stream's decoded frames from where the container stands; AudioError on a decoding error."""
        try:
            yield from self._c.decode(self._s)
        except (self._av.FFmpegError, ValueError) as e:
            why = getattr(e, "strerror", None) or short_error(e)
            raise AudioError(f"{self.path}: cannot decode audio ({why})") from None

    def seek(self, start: int) -> None:
        """Position at sample ``start`` (from the stream's first sample)."""
        self._pos = start
        self._pending: np.ndarray | None = None
        self._blocks = self._positioned(start)

    def _positioned(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """(position, (C, m) float32) of decoded frames, from at or before ``start``."""
        preroll = round(PREROLL_SECONDS * self.sample_rate)
        jump = self._exact and start > preroll
        pos: int | None = 0
        if jump:
            self._c.seek(self._first + start - preroll, stream=self._s, backward=True)
            pos = None
        else:
            self._c.close()
            self._open()
        for frame in self._decoded():
            if pos is None:  # the first frame after a jump: where it landed
                if frame.pts is None:  # no timestamp to go by: decode from the start instead
                    yield from self._positioned(0)
                    return
                pos = frame.pts - self._first
            block = frame_array(frame)
            yield pos, block
            pos += block.shape[-1]

    def read(self, n: int = -1) -> np.ndarray:
        """The next n samples (all with -1) as (channels, <= n) float32; short at the end of the file."""
        want = max(0, self.frames - self._pos if n < 0 else min(n, self.frames - self._pos))
        parts: list[np.ndarray] = []
        got = 0
        while got < want:
            if self._pending is None:
                nxt = next(self._blocks, None)
                if nxt is None:
                    break
                at, block = nxt
                skip = self._pos + got - at  # samples decoded before the position asked for
                if skip >= block.shape[-1]:
                    continue
                self._pending = block[:, max(0, skip) :]
            take = self._pending[:, : want - got]
            rest = self._pending[:, take.shape[-1] :]
            self._pending = rest if rest.shape[-1] else None
            parts.append(take)
            got += take.shape[-1]
        self._pos += got
        if not parts:
            return np.zeros((self.channels, 0), np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=-1))

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (frames, channels) float32; returns frames read."""
        x = self.read(out.shape[0])  # (C, n)
        out[: x.shape[-1]] = rearrange(x, "c n -> n c")
        return int(x.shape[-1])

    def close(self) -> None:
        self._c.close()


def frame_array(frame: Any) -> np.ndarray:
    """A decoded PyAV audio frame -> (channels, samples) float32 (integer sample formats scaled)."""
    a = frame.to_ndarray()  # planar: (C, m); packed: (1, m * C), interleaved
    if not frame.format.is_planar:
        # axes: n = samples, c = channels (interleaved in the packed row)
        a = rearrange(a.reshape(-1), "(n c) -> c n", c=frame.layout.nb_channels)
    return pcm_to_float(np.ascontiguousarray(a), "decoded audio")
