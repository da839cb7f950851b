"""Audio: the only package that touches sound files or converts samples (soundfile and soxr live here).

- :mod:`~bsmamba2.audio.io`: header facts, seeking reads, atomic writes (whole file, or block by block);
- :mod:`~bsmamba2.audio.decode`: opening files to read, libsndfile first, PyAV (extra ``formats``) for the
  rest (m4a/AAC, ...);
- :mod:`~bsmamba2.audio.convert`: resampling (whole or streaming), channel layouts, down-mixing, length
  fitting, the finite-sample check, callers' arrays (layout, integer PCM);
- :mod:`~bsmamba2.audio.stream`: a block reader and a sample FIFO for disk-to-disk streaming;
- :mod:`~bsmamba2.audio.wav`: the data loader's raw-WAV fast path.

Arrays are float32 NumPy (channels, frames) throughout.
"""

from bsmamba2.audio.convert import (
    LAYOUTS,
    Resampler,
    channels_first,
    check_finite,
    convert_channels,
    downmix,
    fit_length,
    from_channels_first,
    output_channels,
    pcm_to_float,
    resample,
    to_layout,
)
from bsmamba2.audio.decode import FORMATS_EXTRA, Reader, open_reader
from bsmamba2.audio.io import (
    AUDIO_EXTENSIONS,
    DEFAULT_MP3_BITRATE,
    MODEL_SAMPLE_RATE,
    MP3_BITRATES,
    SUBTYPES,
    AtomicWriter,
    AudioInfo,
    info,
    is_audio_file,
    read,
    read_frames,
    short_error,
    write,
)
from bsmamba2.audio.stream import SampleFifo, read_blocks
from bsmamba2.audio.wav import WavLayout, read_wav_into, wav_layout

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_MP3_BITRATE",
    "FORMATS_EXTRA",
    "LAYOUTS",
    "MODEL_SAMPLE_RATE",
    "MP3_BITRATES",
    "SUBTYPES",
    "AtomicWriter",
    "AudioInfo",
    "Reader",
    "Resampler",
    "SampleFifo",
    "WavLayout",
    "channels_first",
    "check_finite",
    "convert_channels",
    "downmix",
    "fit_length",
    "from_channels_first",
    "info",
    "is_audio_file",
    "open_reader",
    "output_channels",
    "pcm_to_float",
    "read",
    "read_blocks",
    "read_frames",
    "read_wav_into",
    "resample",
    "short_error",
    "to_layout",
    "wav_layout",
    "write",
]
