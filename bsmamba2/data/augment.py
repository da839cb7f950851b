"""Per-stem augmentations for random-mix training: what to do to one stem, drawn from a NumPy Generator.

The sampler applies the draw in the same pass that reads the stem (gain and polarity as one scale factor,
channel swap as a view), so no augmentation costs an extra copy of the audio.

The official recipe (OFFICIAL_SPEC §6) uses only a random gain U(0.5, 1.5) and silent stems (p = 0.1, vocals
included); channel swap and polarity flip are common extras, off by default. The random draws happen in a
fixed order whatever is enabled, so switching one augmentation off does not reshuffle the others.
"""

from __future__ import annotations

import numpy as np


def draw(
    rng: np.random.Generator,
    gain_range: tuple[float, float] | None,
    p_silent: float,
    p_channel_swap: float,
    p_polarity_flip: float,
) -> tuple[bool, float, bool, bool]:
    """Draw one stem's augmentation: (silent, gain, swap channels, flip polarity)."""
    u = rng.random(4)
    silent = bool(u[0] < p_silent)
    gain = 1.0 if gain_range is None else float(gain_range[0] + (gain_range[1] - gain_range[0]) * u[1])
    return silent, gain, bool(u[2] < p_channel_swap), bool(u[3] < p_polarity_flip)
