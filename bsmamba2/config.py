"""Validated model configuration.

Every model default lives here, once. ``ModelConfig.paper()`` is the authors' official BSMamba2 setting
(OFFICIAL_SPEC §1.1, §1.6); ``ModelConfig.roformer_paper()`` is the BS-RoFormer baseline of the paper's
Table I; ``ModelConfig.tiny()`` is for tests.

The settings of each sequence mixer are a section of ``ModelConfig`` named after the mixer (``cfg.mamba2``,
``cfg.roformer``; YAML ``model.mamba2.d_state: 64``). Configs written before the sections existed kept those
settings as flat keys (``d_state``, ``heads``, ...); ``from_dict`` and ``model_config_from_dict`` still read
them (``LEGACY_KEYS``), ``to_dict`` writes the sections.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bsmamba2.configio import ConfigError, check_keys, coerce_mapping, from_mapping

# The official 62-band layout over the 1025 bins of a 2048-point STFT (OFFICIAL_SPEC §1.1):
# 24 bands of 2 bins, 12 of 4, 8 of 12, 8 of 24, 8 of 48, then 128 and 129.
PAPER_BAND_WIDTHS: tuple[int, ...] = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

PRESETS = ("paper", "roformer_paper", "tiny")  # ModelConfig class methods a YAML model section may name
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


def _check_positive(obj: Any, section: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value <= 0:
            raise ValueError(f"{section}.{f.name} must be positive, got {value}")


@dataclass(frozen=True)
class Mamba2Config:
    """Settings of the Mamba2 mixer (mamba_ssm v2.2.2 defaults with expand=4, OFFICIAL_SPEC §1.6)."""

    d_state: int = 128  # N: state size of every head
    expand: int = 4  # d_inner = expand · dim
    headdim: int = 64  # P: channels per head, so d_inner / headdim heads
    ngroups: int = 1  # B and C are shared by the heads of a group
    d_conv: int = 4  # kernel length of the causal depthwise convolution
    # Block length of the chunked SSD. It changes rounding only, never the function (the official fused
    # kernel used 256); 64 keeps the plain-PyTorch path's O(length·chunk) memory four times smaller.
    chunk_size: int = 64

    def __post_init__(self) -> None:
        _check_positive(self, "mamba2")

    def d_inner(self, dim: int) -> int:
        """Channels inside the mixer for a model of width ``dim``."""
        return self.expand * dim

    def nheads(self, dim: int) -> int:
        return self.d_inner(dim) // self.headdim

    def check(self, dim: int) -> None:
        """ValueError unless the heads and groups tile a model of width ``dim``."""
        if self.d_inner(dim) % self.headdim:
            raise ValueError(f"expand*dim={self.d_inner(dim)} must be divisible by headdim={self.headdim}")
        if self.nheads(dim) % self.ngroups:
            raise ValueError(f"nheads={self.nheads(dim)} must be divisible by ngroups={self.ngroups}")


@dataclass(frozen=True)
class RoFormerConfig:
    """Settings of the RoFormer mixer of the BS-RoFormer baseline (paper Table I: 8 heads of 64)."""

    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4  # feed-forward hidden size = ff_mult · dim

    def __post_init__(self) -> None:
        _check_positive(self, "roformer")

    def check(self, dim: int) -> None:
        """Any width works: attention projects to heads · dim_head and back."""


# Each mixer's settings class, by mixer name; the ModelConfig field of that name holds them. The model side
# registers the mixer under the same name (bsmamba2.model.mixers), which checks it against this table.
MIXER_SETTINGS: dict[str, type] = {"mamba2": Mamba2Config, "roformer": RoFormerConfig}
MIXERS = tuple(MIXER_SETTINGS)
# The flat keys that model configs (checkpoint JSON, YAML) had before the mixer sections, and their section.
LEGACY_KEYS: dict[str, str] = {
    **{k: "mamba2" for k in ("d_state", "expand", "headdim", "ngroups", "d_conv", "chunk_size")},
    **{k: "roformer" for k in ("heads", "dim_head", "ff_mult")},
}


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a band-split separator (BSMamba2 or the BS-RoFormer baseline).

    Defaults reproduce the authors' official BSMamba2 (48.1M parameters). ``mixer`` picks the sequence
    mixer; its settings are the section of the same name (``mamba2`` or ``roformer``), the other is unused.
    A section may be given as a mapping of the settings that differ from its defaults.
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
    # Causal (streamable) model: the time-axis blocks run forward only and the STFT frames end at their
    # last sample (``bsmamba2.model.framing``); the band axis is unchanged. Needs a streamable mixer (mamba2).
    causal: bool = False
    # Frames of lookahead of a causal model: the masks of frame t are read from the network's output at frame
    # t + lookahead (a delayed decision: every time block still runs forward only). Adds lookahead · hop
    # samples of latency.
    lookahead: int = 0
    mamba2: Mamba2Config = field(default_factory=Mamba2Config)
    roformer: RoFormerConfig = field(default_factory=RoFormerConfig)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if isinstance(self.stems, list):
            object.__setattr__(self, "stems", tuple(self.stems))
        if isinstance(self.band_widths, list):
            object.__setattr__(self, "band_widths", tuple(self.band_widths))
        for name, settings_cls in MIXER_SETTINGS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, from_mapping(settings_cls, value, name))
        for name in ("dim", "depth", "n_fft", "hop_length", "sample_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.stems or len(set(self.stems)) != len(self.stems):
            raise ValueError(f"stems must be a non-empty list of distinct names, got {self.stems}")
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.lookahead < 0 or (self.lookahead and not self.causal):
            raise ValueError(f"lookahead must be >= 0 and needs causal=True, got {self.lookahead}")
        if self.causal and 2 * self.hop_length > self.n_fft:  # the causal inverse divides by the window sum
            raise ValueError(
                f"a causal model needs hop_length <= n_fft / 2, got {self.hop_length}/{self.n_fft}"
            )
        if any(w <= 0 for w in self.band_widths):
            raise ValueError("every band must have at least one bin")
        if sum(self.band_widths) != self.n_bins:
            raise ValueError(
                f"band widths sum to {sum(self.band_widths)} but n_fft={self.n_fft} gives {self.n_bins} bins"
            )
        self.mixer_settings.check(self.dim)

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def mixer_settings(self) -> Any:
        """The section of the active mixer (``self.mamba2`` or ``self.roformer``)."""
        return getattr(self, self.mixer)

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
    def latency(self) -> int:
        """Algorithmic latency of the causal model in samples: n_fft − 1 (a sample waits for the last frame
        that covers it to end) + lookahead · hop. A stream's output is the offline output delayed by exactly
        this many samples. 0 for non-causal models (they need the whole input)."""
        return self.n_fft - 1 + self.lookahead * self.hop_length if self.causal else 0

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
        """A few-thousand-parameter model on a 256-point STFT, for tests (runs in milliseconds on CPU).

        A mixer section given as a mapping changes only the settings it names (``mamba2={"d_state": 32}``)."""
        n_fft = overrides.pop("n_fft", 256)
        base: dict[str, Any] = dict(
            mixer=mixer,
            dim=16,
            depth=1,
            n_fft=n_fft,
            hop_length=overrides.pop("hop_length", 64),
            band_widths=_tiny_bands(n_fft // 2 + 1),
            mamba2=dict(d_state=8, expand=2, headdim=8, chunk_size=16),
            roformer=dict(heads=2, dim_head=8),
        )
        return cls(**_merged(base, overrides))

    # ---- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready): the mixer settings as sections, ``{"mamba2": {"d_state": ...}}``."""
        d = dataclasses.asdict(self)
        d["stems"] = list(self.stems)
        d["band_widths"] = list(self.band_widths)
        if not d["extra"]:
            d.pop("extra")
        # Written only when set, so the files of non-causal models stay what they were (older readers too).
        for key in ("causal", "lookahead"):
            if not d[key]:
                d.pop(key)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """From ``to_dict``'s form, or from the flat form of older files (``d_state`` beside ``dim``).

        Unknown keys and mistyped values are a ``ConfigError`` (a ValueError); invalid models a ValueError."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a model config must be a mapping, got {type(d).__name__}")
        return from_mapping(cls, nest_legacy_keys(d), "model")

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes``; a mixer section given as a mapping changes only the settings it names."""
        for name in MIXER_SETTINGS:
            if isinstance(changes.get(name), Mapping):
                changes[name] = dataclasses.replace(getattr(self, name), **changes[name])
        return dataclasses.replace(self, **changes)


def nest_legacy_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of model-config mapping ``d`` with the old flat mixer keys moved into their sections:
    ``{"d_state": 64}`` -> ``{"mamba2": {"d_state": 64}}``. A key given both ways is a ConfigError."""
    out = dict(d)
    for key, section in LEGACY_KEYS.items():
        if key not in out:
            continue
        value = out.pop(key)
        settings = out.get(section, {})
        if not isinstance(settings, Mapping):
            raise ConfigError(f"model.{key} cannot be combined with a built model.{section} section")
        if key in settings:
            raise ConfigError(f"model.{key} and model.{section}.{key} are the same setting; give it once")
        out[section] = {**settings, key: value}
    return out


def model_config_from_dict(d: Any) -> ModelConfig:
    """A YAML model section -> ModelConfig: ``{preset: tiny, dim: 32, mamba2: {d_state: 16}}`` is the preset's
    model with those fields changed (a section's keys change only those settings of the preset's section).
    Without a preset the paper's model is the base; flat legacy keys (``d_state: 16``) are read as their
    section's. Every problem is a one-line ``ConfigError`` (a UserError)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section 'model' must be a mapping, got {d!r}")
    d = nest_legacy_keys(d)
    check_keys(ModelConfig, d, "model", also=("preset",))
    preset = d.pop("preset", "paper")
    if preset not in PRESETS:
        raise ConfigError(f"model.preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    kwargs = coerce_mapping(ModelConfig, d, "model", build=False)
    try:
        return getattr(ModelConfig, preset)(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid model config: {e}") from None


def _merged(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``overrides``; a mixer section given as a mapping on both sides is merged."""
    out = dict(base)
    for key, value in overrides.items():
        if key in MIXER_SETTINGS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = {**out[key], **value}
        out[key] = value
    return out


def _tiny_bands(n_bins: int) -> tuple[int, ...]:
    """A band layout with the paper's shape (narrow low bands, wide high bands) for a small STFT."""
    widths = [2] * 8 + [4] * 4 + [8] * 4
    rest = n_bins - sum(widths)
    if rest <= 0:
        return scale_band_widths(n_bins)
    return tuple(widths + [rest // 2, rest - rest // 2])
