"""Sample conversions on (channels, frames) float32 arrays: resampling (whole or streaming), channel layouts,
down-mixing, length fitting, the finite-sample check, and callers' arrays (any layout, integer PCM) brought to
that form. No file is touched here."""

from __future__ import annotations

import numpy as np
import soxr
from einops import rearrange

from bsmamba2.errors import AudioError, UserError

# ITU-R BS.775 5.1 -> stereo (L R C LFE Ls Rs, the WAV/FLAC channel order), LFE dropped, normalised so a
# full-scale signal on every channel cannot exceed full scale.
_DOWNMIX_51 = np.array(
    [
        [1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0],
        [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071],
    ],
    dtype=np.float32,
) / np.float32(1.0 + 0.7071 + 0.7071)


# ---- sample rate ------------------------------------------------------------------------------------


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (C, N) float32 audio with soxr (VHQ). Returns (C, round(N * rate_out / rate_in))."""
    if rate_in == rate_out:
        return audio
    out = soxr.resample(audio.T, rate_in, rate_out, quality="VHQ")  # soxr wants (frames, channels)
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T)


class Resampler:
    """Streaming soxr resampler over (C, n) blocks; identity when the rates match.

    ``resampler(block)`` returns the (C, m) samples ready so far; ``resampler(block, last=True)`` flushes the
    few milliseconds soxr holds back. The concatenated output equals :func:`resample` of the whole signal
    (soxr streams are delay-compensated).
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.stream = (
            soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")
            if rate_in != rate_out
            else None
        )
        self.channels = channels

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)  # (m, C)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, self.channels).T)


# ---- channels ---------------------------------------------------------------------------------------


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


def downmix(x: np.ndarray) -> np.ndarray:
    """(C, N) with C > 2 -> (2, N) stereo.

    6 channels are treated as 5.1 (L R C LFE Ls Rs) and mixed with the ITU-R BS.775 coefficients (centre and
    surrounds at -3 dB, LFE dropped, scaled by 1/2.414 so nothing clips). Any other count: even-numbered
    channels (0, 2, ...) are averaged into the left, odd-numbered into the right.
    """
    c = x.shape[0]
    if c <= 2:
        return x
    if c == 6:
        return _DOWNMIX_51 @ x
    return np.stack([x[0::2].mean(axis=0), x[1::2].mean(axis=0)]).astype(np.float32)


def output_channels(in_channels: int, allow_downmix: bool, name: str = "audio") -> int:
    """Channels of the written outputs: the input's (1 or 2), or 2 after a downmix; error for >2 otherwise."""
    if in_channels <= 2:
        return in_channels
    if not allow_downmix:
        raise AudioError(f"{name}: has {in_channels} channels; pass --downmix to mix it down to stereo first")
    return 2


def to_layout(x: np.ndarray, channels: int) -> np.ndarray:
    """(C, N) -> (channels, N): downmix beyond stereo, then mono<->stereo (duplicate / average)."""
    if x.shape[0] > 2:
        x = downmix(x)
    return convert_channels(x, channels)


# ---- length and validity ----------------------------------------------------------------------------


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad the last axis of (..., N) to exactly n (resampling round trips can be off by a
    sample; reads past the end come up short). A trimmed result is a view."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise AudioError if ``x`` holds a NaN or an Inf (a corrupt file, or a bad array from a caller)."""
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or Inf samples")


# ---- arrays from callers ----------------------------------------------------------------------------

# Array layouts: "cf" = (channels, frames), "fc" = (frames, channels) (soundfile's), "mono" = (frames,).
LAYOUTS = ("cf", "fc")
# Integer PCM -> float: (value - offset) / scale, so the full integer range maps onto [-1, 1). No other
# integer width has one PCM meaning (an int64 array is usually a mistake, e.g. np.array of Python ints).
_PCM_SCALES = {
    np.dtype(np.int8): (128.0, 0.0),
    np.dtype(np.int16): (32768.0, 0.0),
    np.dtype(np.int32): (2147483648.0, 0.0),
    np.dtype(np.uint8): (128.0, 128.0),  # WAV's 8-bit PCM is unsigned, silence at 128
}


def pcm_to_float(x: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Samples of any shape -> float32 of the same shape: floats are cast; integer PCM (int8, int16, int32,
    uint8) is scaled to [-1, 1). Raises UserError for other dtypes (int64, bool, complex, ...)."""
    if x.dtype in _PCM_SCALES:
        scale, offset = _PCM_SCALES[x.dtype]
        return ((x.astype(np.float64) - offset) / scale).astype(np.float32)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    raise UserError(
        f"{name}: samples of dtype {x.dtype} are not audio; pass floats, or int8/int16/int32/uint8 PCM"
    )


def channels_first(
    x: np.ndarray, layout: str | None = None, *, allow_downmix: bool = False, name: str = "waveform"
) -> tuple[np.ndarray, str]:
    """A caller's samples -> ((C, N) float32, the layout they came in: "cf", "fc" or "mono").

    x: (N,), (C, N) or (N, C), float or integer PCM (see :func:`pcm_to_float`). ``layout``: "cf" or "fc"
    says which; None applies the rule: the axis of size 1 or 2 is channels when the other is longer. Any
    other shape ((2, 2), (6, N), ...) needs ``layout=``. More than two channels need ``allow_downmix``.
    Raises UserError naming the API arguments (``layout=``, ``downmix=True``).
    """
    if layout is not None and layout not in LAYOUTS:
        raise UserError(
            f"{name}: unknown layout={layout!r} (choose 'cf' for (channels, frames), 'fc' for (frames, channels))"
        )
    if x.ndim == 1:
        found = "mono"
    elif x.ndim != 2:
        raise UserError(
            f"{name}: must be (channels, frames), (frames, channels) or (frames,), got shape {x.shape}"
        )
    elif layout is not None:
        found = layout
    elif x.shape[0] <= 2 < x.shape[1]:
        found = "cf"
    elif x.shape[1] <= 2 < x.shape[0]:
        found = "fc"
    else:
        raise UserError(
            f"{name}: shape {x.shape} does not say which axis is channels; "
            "pass layout='cf' for (channels, frames) or layout='fc' for (frames, channels)"
        )
    y = pcm_to_float(x, name)
    # axes: c = channels, n = frames
    y = y[None] if found == "mono" else rearrange(y, "n c -> c n") if found == "fc" else y
    if y.shape[0] > 2 and not allow_downmix:
        raise UserError(f"{name}: has {y.shape[0]} channels; pass downmix=True to mix it down to stereo")
    return np.ascontiguousarray(y), found


def from_channels_first(y: np.ndarray, layout: str) -> np.ndarray:
    """(C, N) -> the caller's layout found by :func:`channels_first`: (C, N), (N, C), or (N,) for "mono"."""
    if layout == "mono":
        return y[0]
    return (
        np.ascontiguousarray(rearrange(y, "c n -> n c")) if layout == "fc" else y
    )  # c = channels, n = frames
