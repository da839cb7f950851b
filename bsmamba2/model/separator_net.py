"""BandSplitSeparator: band split → dual path → per-stem complex masks, for either mixer.

mixer="mamba2" is BSMamba2 (Kim & Choi 2025, the official code's exact structure); mixer="roformer" is the
BS-RoFormer baseline with the same band split, dual path and mask estimator. The dual-path blocks come from
the mixer registry (``mixers/registry.py``), so nothing here names a mixer. Nothing here reads files.

Axis legend: b batch, s stems, c audio channels, f frequency bins, t frames, k bands, d model dim,
r real/imaginary part.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.config import ModelConfig
from bsmamba2.model.bands import BandSplit, MaskEstimator
from bsmamba2.model.dualpath import dual_path, make_layers
from bsmamba2.model.mixers.base import BlockOptions
from bsmamba2.model.mixers.registry import get_mixer
from bsmamba2.model.mixers.ssd import backend_function, resolve_backend
from bsmamba2.model.norms import RMSNorm
from bsmamba2.spectral import istft, pad_to_min_length, stft


class BandSplitSeparator(nn.Module):
    """Waveform in, separated stems out.

    ``forward(wave (b, c, n)) -> (b, s, c, n)`` at ``cfg.sample_rate`` for any n ≥ 1, with c =
    ``cfg.audio_channels`` and the stems in ``cfg.stems`` order. ``forward_spec`` is the official model's
    spectrogram interface. The parameter names of the mamba2 variant are the official ones (OFFICIAL_SPEC §2.1),
    except ``layers.i.j.linear`` which is an nn.Linear.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        backend: str = "auto",
        *,
        device: torch.device | None = None,
        fused: bool = False,
    ) -> None:
        """``backend`` (the SSD of Mamba2 mixers) is resolved here, once, for ``device`` (see
        ``ssd.resolve_backend``); ``fused`` builds the fused form of blocks that have one. The model is created
        on the current default device; ``bsmamba2.model.build_model`` also moves it to ``device``."""
        super().__init__()
        self.cfg = cfg
        self.recompute = False  # activation checkpointing of the dual-path passes (training memory)
        self.backend = resolve_backend(backend, device)  # the registered name it resolved to
        self._scan = backend_function(self.backend)
        c = cfg.audio_channels
        band_features = tuple(2 * c * w for w in cfg.band_widths)  # real + imag for every channel and bin
        self.band_split = BandSplit(band_features, cfg.dim)
        self.fused = fused
        self.layers = self._make_layers(fused)
        self.final_norm = RMSNorm(cfg.dim)  # shared by all bands (official code; the paper puts one per band)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(band_features, cfg.dim, cfg.mask_mlp_mult) for _ in cfg.stems
        )

    def _make_layers(self, fused: bool) -> nn.ModuleList:
        """The dual-path layers: blocks of the registered mixer ``cfg.mixer``, built from its config section."""
        spec = get_mixer(self.cfg.mixer)
        options = BlockOptions(scan=self._scan, fused=fused)
        return make_layers(
            self.cfg.depth, lambda: spec.build_block(self.cfg.dim, self.cfg.mixer_settings, options)
        )

    @property
    def stems(self) -> tuple[str, ...]:
        return self.cfg.stems

    def forward_spec(self, X: Tensor) -> Tensor:
        """X complex (b, c, f, t) -> estimated stem spectrograms, complex64 (b, s, c, f, t)."""
        b, c, f, t = X.shape
        if c != self.cfg.audio_channels or f != self.cfg.n_bins:
            raise ValueError(
                f"expected a spectrogram with {self.cfg.audio_channels} channels and {self.cfg.n_bins} bins, "
                f"got shape {tuple(X.shape)}"
            )
        x = rearrange(torch.view_as_real(X), "b c f t r -> b t (f c r)")  # feature 4f + 2c + r (§1.2)
        z = self.band_split(x)  # (b, t, k, d)
        z = dual_path(z, self.layers, recompute=self.recompute and self.training)  # (b, t, k, d)
        z = self.final_norm(z)
        masks = torch.stack([est(z) for est in self.mask_estimators], dim=1)  # (b, s, t, f·c·2)
        # The mask is complex and unbounded; it is cast to float32 before use, as the official code does.
        masks = rearrange(masks.float(), "b s t (f c r) -> b s c f t r", c=c, r=2).contiguous()
        return X.to(torch.complex64)[:, None] * torch.view_as_complex(masks)  # (b, s, c, f, t)

    def forward(self, wave: Tensor) -> Tensor:
        """wave (b, c, n) -> stems (b, s, c, n), float32."""
        if wave.dim() != 3 or wave.shape[1] != self.cfg.audio_channels:
            raise ValueError(
                f"expected a waveform (batch, {self.cfg.audio_channels}, samples), got shape {tuple(wave.shape)}"
            )
        padded, n = pad_to_min_length(wave.float(), self.cfg.n_fft)
        X = stft(padded, self.cfg.n_fft, self.cfg.hop_length)  # (b, c, f, t)
        S = self.forward_spec(X)  # (b, s, c, f, t)
        return istft(S, self.cfg.n_fft, self.cfg.hop_length, length=padded.shape[-1])[..., :n]
