"""Scores of one separated track, shared by ``bsmamba2 evaluate`` and training validation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bsmamba2.evaluate.metrics import csdr, usdr


def score_track(
    estimates: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """uSDR and cSDR (1 s frames at 44.1 kHz) of every stem of ``references``.

    estimates, references: {stem: (C, N) float array}; every reference stem needs an estimate of the same
    shape (extra estimates, e.g. a derived "instrumental", are ignored). Returns {stem: {"usdr", "csdr"}}.
    """
    missing = [s for s in references if s not in estimates]
    if missing:
        raise ValueError(f"no estimate for stem(s) {', '.join(missing)}")
    return {
        stem: {"usdr": usdr(ref, estimates[stem]), "csdr": csdr(ref, estimates[stem])}
        for stem, ref in references.items()
    }
