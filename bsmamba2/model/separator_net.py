"""BandSplitSeparator: band split → dual path → per-stem complex masks, for either mixer.

mixer="mamba2" is BSMamba2 (Kim & Choi 2025, the official code's exact structure); mixer="roformer" is the
BS-RoFormer baseline with the same band split, dual path and mask estimator. The dual-path blocks come from
the mixer registry (``mixers/registry.py``), so nothing here names a mixer. Nothing here reads files.

Axis legend: b batch, s stems, c audio channels, f frequency bins, t frames, k bands, d model dim,
r real/imaginary part.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.config import ModelConfig
from bsmamba2.model.bands import BandSplit, GroupedBands, MaskEstimator
from bsmamba2.model.dualpath import dual_path, dual_path_state, dual_path_step, make_layers
from bsmamba2.model.framing import causal_istft, causal_stft
from bsmamba2.model.mixers.base import BlockOptions, NotStreamableError
from bsmamba2.model.mixers.registry import get_mixer
from bsmamba2.model.mixers.ssd import backend_function, resolve_backend
from bsmamba2.model.norms import RMSNorm
from bsmamba2.spectral import istft, pad_to_min_length, stft


class SpecStreamState(NamedTuple):
    """What a causal model carries from one frame of a stream to the next (``BandSplitSeparator.step_spec``)."""

    layers: list[Any]  # per dual-path layer, its time block's state (Mamba2: conv tail and SSM state)
    pending: Tensor  # complex64 (b, c, f, j ≤ lookahead): frames whose masks the network has not reached yet
    seen: int  # frames the network has run on so far


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
        """The dual-path layers: blocks of the registered mixer ``cfg.mixer``, built from its config section.
        A causal model's time blocks are the mixer's causal form; its band blocks are the usual ones."""
        spec = get_mixer(self.cfg.mixer)
        options = BlockOptions(scan=self._scan, fused=fused)
        time_options = dataclasses.replace(options, causal=self.cfg.causal)
        dim, settings = self.cfg.dim, self.cfg.mixer_settings
        return make_layers(
            self.cfg.depth,
            lambda: spec.build_block(dim, settings, options),
            lambda: spec.build_block(dim, settings, time_options),
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
        k = self.cfg.lookahead  # the network runs k frames ahead of the masks; past the end it sees silence
        z = self._features(F.pad(X, (0, k)) if k else X)  # (b, t + k, bands, d)
        with on_its_gpu(z):
            z = dual_path(z, self.layers, recompute=self.recompute and self.training)  # (b, t + k, bands, d)
        masks = self._masks(z)[..., k:]  # (b, s, c, f, t): the mask of frame i is the output at frame i + k
        return X.to(torch.complex64)[:, None] * masks  # (b, s, c, f, t)

    def _features(self, X: Tensor, grouped: GroupedBands | None = None) -> Tensor:
        """complex (b, c, f, t) -> band features (b, t, k, d)."""
        x = rearrange(torch.view_as_real(X), "b c f t r -> b t (f c r)")  # feature 4f + 2c + r (§1.2)
        return self.band_split(x) if grouped is None else grouped.split(x)  # (b, t, k, d)

    def _masks(self, z: Tensor, grouped: GroupedBands | None = None) -> Tensor:
        """Dual-path output z (b, t, k, d) -> complex64 masks (b, s, c, f, t)."""
        z = self.final_norm(z)
        if grouped is None:
            masks = torch.stack([est(z) for est in self.mask_estimators], dim=1)  # (b, s, t, f·c·2)
        else:
            masks = grouped.masks(z)
        # The mask is complex and unbounded; it is cast to float32 before use, as the official code does.
        c = self.cfg.audio_channels
        masks = rearrange(masks.float(), "b s t (f c r) -> b s c f t r", c=c, r=2).contiguous()
        return torch.view_as_complex(masks)

    # ---- streaming (causal models) ----------------------------------------------------------------------
    def stream_state(self, batch: int, device: torch.device | None = None) -> SpecStreamState:
        """The state of ``batch`` streams before their first frame (``NotStreamableError`` unless causal)."""
        if not self.cfg.causal:
            raise NotStreamableError("only a causal model (model.causal: true) can stream frame by frame")
        w = next(self.band_split.parameters())
        device = w.device if device is None else device
        layers = dual_path_state(self.layers, batch, self.cfg.num_bands, device, w.dtype)
        empty = torch.zeros(batch, self.cfg.audio_channels, self.cfg.n_bins, 0, device=device)
        return SpecStreamState(layers=layers, pending=empty.to(torch.complex64), seen=0)

    def grouped_bands(self) -> GroupedBands:
        """The band split and mask heads batched by band width, from the current weights (for ``step_spec``)."""
        return GroupedBands(self.band_split, list(self.mask_estimators))  # type: ignore[arg-type]

    def step_spec(
        self, X: Tensor, state: SpecStreamState, grouped: GroupedBands | None = None
    ) -> tuple[Tensor, SpecStreamState]:
        """The next l frames X complex (b, c, f, l) of causal streams -> (the stems of the frames decided now,
        complex64 (b, s, c, f, l'), the new state). l' = l once ``lookahead`` frames have been seen (fewer
        before); frames run one after another give ``forward_spec`` of the whole, frame for frame.
        ``grouped`` (``grouped_bands()``): the same function in fewer kernels, for small steps."""
        if X.shape[-1] == 0:
            empty = X.new_zeros(X.shape[0], self.cfg.num_stems, *X.shape[1:], dtype=torch.complex64)
            return empty, state
        z = self._features(X, grouped)
        with on_its_gpu(z):
            z, layers = dual_path_step(z, self.layers, state.layers)
        masks = self._masks(z, grouped)  # (b, s, c, f, l): network frames seen .. seen + l - 1
        queue = torch.cat([state.pending, X.to(torch.complex64)], dim=-1)  # frames still waiting for a mask
        ready = X.shape[-1] - max(0, self.cfg.lookahead - state.seen)  # masks of frames ≥ 0
        ready = max(ready, 0)
        out = queue[:, None, ..., :ready] * masks[..., X.shape[-1] - ready :]
        new = SpecStreamState(layers=layers, pending=queue[..., ready:], seen=state.seen + X.shape[-1])
        return out, new

    def forward(self, wave: Tensor) -> Tensor:
        """wave (b, c, n) -> stems (b, s, c, n), float32. A causal model's stem sample i depends on input
        samples ≤ i + ``cfg.latency`` only."""
        if wave.dim() != 3 or wave.shape[1] != self.cfg.audio_channels:
            raise ValueError(
                f"expected a waveform (batch, {self.cfg.audio_channels}, samples), got shape {tuple(wave.shape)}"
            )
        if self.cfg.causal:
            n_fft, hop, n = self.cfg.n_fft, self.cfg.hop_length, wave.shape[-1]
            return causal_istft(
                self.forward_spec(causal_stft(wave.float(), n_fft, hop)), n_fft, hop, length=n
            )
        padded, n = pad_to_min_length(wave.float(), self.cfg.n_fft)
        X = stft(padded, self.cfg.n_fft, self.cfg.hop_length)  # (b, c, f, t)
        S = self.forward_spec(X)  # (b, s, c, f, t)
        return istft(S, self.cfg.n_fft, self.cfg.hop_length, length=padded.shape[-1])[..., :n]


def on_its_gpu(t: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Make t's GPU the current CUDA device for the block (a no-op elsewhere). Triton kernels launch on the
    current device, so a model on cuda:1 while cuda:0 is current would otherwise run them on the wrong GPU."""
    if t.is_cuda and t.device.index is not None and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
