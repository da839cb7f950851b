"""What a job separates: an upload streamed to disk under a size limit and checked to be usable audio, or
the example song (generated once per server by the demo's synthesizer)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

from bsmamba2 import audio
from bsmamba2.atomic import atomic_write
from bsmamba2.audio import MODEL_SAMPLE_RATE as SAMPLE_RATE
from bsmamba2.audio.decode import LIBSNDFILE_SUFFIXES, PYAV_SUFFIXES, load_av
from bsmamba2.demo import DEFAULT_PRESET, DEFAULT_SEED, make_example
from bsmamba2.errors import AudioError, UserError

# What the reader decodes: libsndfile's formats, plus m4a/AAC and the other FFmpeg-only containers where PyAV
# (the ``formats`` extra) is installed.
UPLOAD_SUFFIXES = LIBSNDFILE_SUFFIXES + (PYAV_SUFFIXES if load_av() is not None else ())
EXAMPLE_NAME = "example song"


class UploadError(UserError):
    """A refused upload; ``status`` is the HTTP status the page gets with the message."""

    status = 400


class TooLarge(UploadError):
    status = 413


def upload_suffix(filename: str) -> str:
    """The lower-case suffix of an uploaded file's name, if it is one we take; else UploadError."""
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        kinds = ", ".join(s[1:] for s in UPLOAD_SUFFIXES)
        raise UploadError(f"{filename or 'the upload'}: not a supported file type (choose {kinds})")
    return suffix


async def receive(chunks: AsyncIterator[bytes], dest: Path, *, limit: int, name: str) -> int:
    """Write the request body to ``dest`` (atomically), refusing it past ``limit`` bytes; returns its size."""
    size = 0
    with atomic_write(dest) as tmp, tmp.open("wb") as f:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"{name}: larger than the {limit / 1e6:g} MB upload limit")
            f.write(chunk)
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    return size


def check_audio(path: Path, *, name: str, max_seconds: float) -> audio.AudioInfo:
    """The upload's header facts; UploadError (naming ``name``, not the temp path) if it is not readable
    audio, is empty or is longer than ``max_seconds``."""
    try:
        found = audio.info(path)
    except AudioError as e:
        message = str(e).replace(str(path), name)
        raise UploadError(message if "empty" in message else f"{name}: not a readable audio file") from None
    if found.duration > max_seconds:
        raise UploadError(
            f"{name}: {found.duration:.0f} s long; this server takes songs up to {max_seconds:g} s"
        )
    return found


class ExampleSong:
    """The demo's example song, written once under ``folder`` on first use (thread-safe)."""

    def __init__(self, folder: Path, seconds: float) -> None:
        self.path = folder / "example.wav"
        self.seconds = seconds
        self._lock = threading.Lock()

    def get(self) -> Path:
        with self._lock:
            if not self.path.exists():
                mix, _, _ = make_example(self.seconds, DEFAULT_PRESET, DEFAULT_SEED)  # (2, N)
                audio.write(self.path, mix, SAMPLE_RATE, subtype="float")
        return self.path
