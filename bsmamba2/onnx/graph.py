"""The exported network: the model between the STFT and the iSTFT, real-valued tensors only.

Graph contract (format version 1; axis legend: b batch, c audio channels, f frequency bins, t frames,
s stems, r real/imaginary part):

    input  "spec"  float32 (b, c, f, t, r=2)      view_as_real of the model's STFT of the mixture
    output "stems" float32 (b, s, c, f, t, r=2)   view_as_real of every stem's spectrogram (mask · mixture)

b and t are dynamic; c = ``audio_channels``, f = n_fft // 2 + 1 and s = len(stems) are fixed by the model.
The STFT settings, the stems and the full model config travel in the file's ``metadata_props``
(:func:`metadata`), so a runner needs nothing else: STFT -> graph -> iSTFT (:mod:`bsmamba2.onnx.runtime`).
"""

from __future__ import annotations

import json

import torch
from einops import rearrange
from torch import Tensor, nn

from bsmamba2 import __version__
from bsmamba2.config import ModelConfig
from bsmamba2.model.dualpath import dual_path
from bsmamba2.model.separator_net import BandSplitSeparator

FORMAT = "bsmamba2-onnx"
FORMAT_VERSION = 1
INPUT = "spec"
OUTPUT = "stems"


class SpectralCore(nn.Module):
    """``forward_spec`` of a BandSplitSeparator on real tensors: (b, c, f, t, 2) -> (b, s, c, f, t, 2).

    The complex product mask · mixture is written out in real and imaginary parts (ONNX has no complex
    type); everything else calls the model's own modules.
    """

    def __init__(self, model: BandSplitSeparator) -> None:
        super().__init__()
        self.model = model

    def forward(self, spec: Tensor) -> Tensor:  # (b, c, f, t, r) -> (b, s, c, f, t, r)
        m = self.model
        x = rearrange(spec, "b c f t r -> b t (f c r)")  # feature 4f + 2c + r (OFFICIAL_SPEC §1.2)
        z = m.band_split(x)  # (b, t, k, d)
        z = m.final_norm(dual_path(z, m.layers))  # (b, t, k, d)
        masks = torch.stack([est(z) for est in m.mask_estimators], dim=1)  # (b, s, t, f·c·r)
        masks = rearrange(masks.float(), "b s t (f c r) -> b s c f t r", c=m.cfg.audio_channels, r=2)
        xr, xi = spec[:, None, ..., 0].float(), spec[:, None, ..., 1].float()  # (b, 1, c, f, t)
        mr, mi = masks[..., 0], masks[..., 1]  # (b, s, c, f, t)
        return torch.stack([xr * mr - xi * mi, xr * mi + xi * mr], dim=-1)


def stft_settings(cfg: ModelConfig) -> dict[str, object]:
    """The front end the graph expects (bsmamba2.spectral.stft), spelled out for a runner in another language."""
    return {
        "n_fft": cfg.n_fft,
        "hop_length": cfg.hop_length,
        "win_length": cfg.n_fft,
        "window": "hann",
        "periodic": True,
        "center": True,
        "pad_mode": "reflect",
        "normalized": False,
        "onesided": True,
        "min_samples": cfg.n_fft // 2 + 1,  # shorter signals are zero-padded to this before the STFT
    }


def metadata(cfg: ModelConfig, source: str = "") -> dict[str, str]:
    """The file's ``metadata_props``: format and version, config JSON, stems, sample rate, STFT, tensor layout."""
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "producer": f"bsmamba2 {__version__}",
        "source": source,
        "config": cfg.to_json(),
        "stems": json.dumps(list(cfg.stems)),
        "sample_rate": str(cfg.sample_rate),
        "audio_channels": str(cfg.audio_channels),
        "stft": json.dumps(stft_settings(cfg), sort_keys=True),
        "input": f"{INPUT}: float32 (batch, channels, bins, frames, 2 = real/imag) of the mixture's STFT",
        "output": f"{OUTPUT}: float32 (batch, stems, channels, bins, frames, 2 = real/imag) stem spectrograms",
    }
