"""Validated model configuration.

Every model default lives here, once. ``ModelConfig.paper()`` is the authors' official BSMamba2 setting
(OFFICIAL_SPEC §1.1, §1.6); ``ModelConfig.roformer_paper()`` is the BS-RoFormer baseline of the paper's
Table I; ``ModelConfig.tiny()`` is for tests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The official 62-band layout over the 1025 bins of a 2048-point STFT (OFFICIAL_SPEC §1.1):
# 24 bands of 2 bins, 12 of 4, 8 of 12, 8 of 24, 8 of 48, then 128 and 129.
PAPER_BAND_WIDTHS: tuple[int, ...] = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

MIXERS = ("mamba2", "roformer")
DEFAULT_STEMS: dict[int, tuple[str, ...]] = {
    1: ("vocals",),
    2: ("vocals", "other"),
    4: ("vocals", "drums", "bass", "other"),
}


def scale_band_widths(n_bins: int, widths: tuple[int, ...] = PAPER_BAND_WIDTHS) -> tuple[int, ...]:
    """Scale the paper's band layout to another bin count (for small test STFTs).

    Keeps the number of bands where possible; every band has at least one bin and the widths sum to n_bins.
    """
    total = sum(widths)
    if n_bins == total:
        return widths
    k = min(len(widths), n_bins)
    src = widths[:k] if k < len(widths) else widths
    raw = [w * n_bins / sum(src) for w in src]
    out = [max(1, int(r)) for r in raw]
    # Distribute the remainder to the widest bands (largest fractional parts first).
    diff = n_bins - sum(out)
    order = sorted(range(k), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while diff != 0:
        j = order[i % k]
        if diff > 0:
            out[j] += 1
            diff -= 1
        elif out[j] > 1:
            out[j] -= 1
            diff += 1
        i += 1
    return tuple(out)


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a band-split separator (BSMamba2 or the BS-RoFormer baseline).

    Defaults reproduce the authors' official BSMamba2 (48.1M parameters).
    """

    mixer: str = "mamba2"  # "mamba2" (BSMamba2) or "roformer" (BS-RoFormer baseline)
    dim: int = 256  # D: feature size of every band token
    depth: int = 6  # L: number of dual-path layers (each = one time pass + one band pass)
    stems: tuple[str, ...] = ("vocals",)  # one mask estimator per stem, in this order
    audio_channels: int = 2  # 2 = stereo folded into band features (official), 1 = mono
    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 441
    band_widths: tuple[int, ...] = PAPER_BAND_WIDTHS
    mask_mlp_mult: int = 4  # hidden size of the mask MLP = mult * dim
    # Mamba2 mixer (mamba_ssm v2.2.2 defaults with expand=4, OFFICIAL_SPEC §1.6)
    d_state: int = 128
    expand: int = 4
    headdim: int = 64
    ngroups: int = 1
    d_conv: int = 4
    # Block length of the chunked SSD. It changes rounding only, never the function (the official fused
    # kernel used 256); 64 keeps the plain-PyTorch path's O(length·chunk) memory four times smaller.
    chunk_size: int = 64
    # RoFormer mixer (paper Table I baseline: dim 384, depth 6, 8 heads)
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if isinstance(self.stems, list):
            object.__setattr__(self, "stems", tuple(self.stems))
        if isinstance(self.band_widths, list):
            object.__setattr__(self, "band_widths", tuple(self.band_widths))
        for name in ("dim", "depth", "n_fft", "hop_length", "sample_rate", "d_state", "expand", "headdim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.stems or len(set(self.stems)) != len(self.stems):
            raise ValueError(f"stems must be a non-empty list of distinct names, got {self.stems}")
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if any(w <= 0 for w in self.band_widths):
            raise ValueError("every band must have at least one bin")
        if sum(self.band_widths) != self.n_bins:
            raise ValueError(
                f"band widths sum to {sum(self.band_widths)} but n_fft={self.n_fft} gives {self.n_bins} bins"
            )
        if self.mixer == "mamba2":
            if self.d_inner % self.headdim:
                raise ValueError(f"expand*dim={self.d_inner} must be divisible by headdim={self.headdim}")
            if self.nheads % self.ngroups:
                raise ValueError(f"nheads={self.nheads} must be divisible by ngroups={self.ngroups}")
            if self.chunk_size <= 0:
                raise ValueError("chunk_size must be positive")

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_bands(self) -> int:
        return len(self.band_widths)

    @property
    def num_stems(self) -> int:
        return len(self.stems)

    @property
    def d_inner(self) -> int:
        return self.expand * self.dim

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    # ---- presets -------------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> ModelConfig:
        """The authors' official BSMamba2 (OFFICIAL_SPEC §1): 48,098,188 parameters."""
        return cls(**overrides)

    @classmethod
    def roformer_paper(cls, **overrides: Any) -> ModelConfig:
        """BS-RoFormer baseline of the paper's Table I: dim 384, depth 6, 8 heads of 64."""
        return cls(**{"mixer": "roformer", "dim": 384, **overrides})

    @classmethod
    def tiny(cls, mixer: str = "mamba2", **overrides: Any) -> ModelConfig:
        """A few-thousand-parameter model on a 256-point STFT, for tests (runs in milliseconds on CPU)."""
        n_fft = overrides.pop("n_fft", 256)
        base: dict[str, Any] = dict(
            mixer=mixer,
            dim=16,
            depth=1,
            n_fft=n_fft,
            hop_length=overrides.pop("hop_length", 64),
            band_widths=_tiny_bands(n_fft // 2 + 1),
            d_state=8,
            expand=2,
            headdim=8,
            chunk_size=16,
            heads=2,
            dim_head=8,
        )
        base.update(overrides)
        return cls(**base)

    # ---- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stems"] = list(self.stems)
        d["band_widths"] = list(self.band_widths)
        if not d["extra"]:
            d.pop("extra")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _tiny_bands(n_bins: int) -> tuple[int, ...]:
    """A band layout with the paper's shape (narrow low bands, wide high bands) for a small STFT."""
    widths = [2] * 8 + [4] * 4 + [8] * 4
    rest = n_bins - sum(widths)
    if rest <= 0:
        return scale_band_widths(n_bins)
    return tuple(widths + [rest // 2, rest - rest // 2])
