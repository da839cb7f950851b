"""The registry from ``ModelConfig.mixer`` names to mixers: each name's settings class and block builder.

``BandSplitSeparator`` asks it for the block of ``cfg.mixer`` and never names a mixer itself. To add a mixer:
write its module (a ``SequenceMixer`` and a ``build_block(dim, settings, options)``), add its settings
dataclass to ``bsmamba2.config`` (``MIXER_SETTINGS`` and a ``ModelConfig`` field of the same name, where every
default lives), and register it at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from bsmamba2.config import MIXER_SETTINGS, Mamba2Config, RoFormerConfig
from bsmamba2.model.mixers import mamba2, roformer
from bsmamba2.model.mixers.base import BlockOptions

# (dim, the mixer's settings section, build options) -> one dual-path block, (n, l, dim) -> (n, l, dim)
BuildBlock = Callable[[int, Any, BlockOptions], nn.Module]


@dataclass(frozen=True)
class MixerSpec:
    """A registered mixer."""

    name: str
    settings_cls: type  # the dataclass of its ModelConfig section
    build_block: BuildBlock


_MIXERS: dict[str, MixerSpec] = {}


def register_mixer(name: str, settings_cls: type, build_block: BuildBlock) -> None:
    """Make ``ModelConfig(mixer=name)`` build its dual-path blocks with ``build_block``."""
    if MIXER_SETTINGS.get(name) is not settings_cls:
        raise ValueError(
            f"mixer {name!r}: bsmamba2.config.MIXER_SETTINGS must map it to {settings_cls.__name__} "
            f"(and ModelConfig needs a field {name!r} of that type)"
        )
    if name in _MIXERS:
        raise ValueError(f"mixer {name!r} is registered already")
    _MIXERS[name] = MixerSpec(name, settings_cls, build_block)


def get_mixer(name: str) -> MixerSpec:
    if name not in _MIXERS:
        raise ValueError(f"unknown mixer {name!r}; registered: {', '.join(_MIXERS)}")
    return _MIXERS[name]


def registered_mixers() -> tuple[str, ...]:
    return tuple(_MIXERS)


register_mixer("mamba2", Mamba2Config, mamba2.build_block)
register_mixer("roformer", RoFormerConfig, roformer.build_block)
