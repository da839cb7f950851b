"""What a model's outputs are called, and the one place the residual stem is computed.

A single-stem model also yields the rest of the mixture: "instrumental" = mixture - vocals for a vocals
model, "no_<stem>" otherwise. The subtraction is done at the caller's rate and layout (the input's), so
stem + residual equals the mixture exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def residual_name(stems: Sequence[str]) -> str | None:
    """Name of ``mixture - stem`` for a single-stem model ("instrumental" for vocals), else None."""
    if len(stems) != 1:
        return None
    return "instrumental" if stems[0] == "vocals" else f"no_{stems[0]}"


def output_names(stems: Sequence[str]) -> tuple[str, ...]:
    """The model's stems, plus the residual for a single-stem model."""
    resid = residual_name(stems)
    return (*stems, *([resid] if resid else []))


def add_residual(
    mix: np.ndarray, estimates: Mapping[str, np.ndarray], stems: Sequence[str]
) -> dict[str, np.ndarray]:
    """``estimates`` plus the residual ``mix - estimates[stems[0]]`` for a single-stem model.

    mix and every estimate: (C, N) at one rate. A residual already in ``estimates`` (e.g. a baseline that
    estimates it directly) is kept; multi-stem models get a plain copy of ``estimates``.
    """
    out = dict(estimates)
    resid = residual_name(stems)
    if resid is not None and resid not in out:
        out[resid] = mix - out[stems[0]]
    return out
