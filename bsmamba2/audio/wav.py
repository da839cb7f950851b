"""The data loader's raw-WAV fast path: parse a plain WAV header once, then read sample ranges with one
``preadv`` into a reused buffer (no decoding, no new array). Anything but plain PCM 16/32-bit or float32
WAV falls back to :func:`bsmamba2.audio.io.read_frames`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bsmamba2.errors import AudioError

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
    24-bit, RF64, malformed): callers then fall back to :func:`bsmamba2.audio.io.read_frames`."""
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


def truncated_wav(path: str | os.PathLike[str]) -> bool:
    """True for a RIFF/WAVE file whose data chunk is shorter than its header says (a cut-off download or
    copy); libsndfile then reads the frames that are there without a word. False for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            end = os.fstat(f.fileno()).st_size
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return False
                cid, size = hdr[:4], int.from_bytes(hdr[4:], "little")
                if cid == b"data":
                    # 0 and 0xFFFFFFFF: sizes left unset by a streaming writer (or RF64), not a cut
                    return size not in (0, 0xFFFFFFFF) and f.tell() + size > end
                f.seek(size + (size % 2), 1)
    except OSError:
        return False
