"""Drum grooves: ten styles on a 16th-note grid, per-song variations, humanised timing, fills and crashes."""

from __future__ import annotations

from typing import Any

import numpy as np

# Drum grooves on a grid of 4 steps per beat: piece -> steps (velocity from the accent rules below).
STYLES: dict[str, dict[str, Any]] = {
    "rock": {"beats": 4, "tempo": (90, 150), "kick": (0, 8, 10), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "pop": {"beats": 4, "tempo": (88, 128), "kick": (0, 6, 8), "snare": (4, 12), "hat": tuple(range(16)), "swing": 0.0},
    "funk": {"beats": 4, "tempo": (92, 118), "kick": (0, 3, 6, 10), "snare": (4, 12), "ghost": (7, 9, 15), "hat": tuple(range(16)), "swing": 0.08},
    "disco": {"beats": 4, "tempo": (110, 128), "kick": (0, 4, 8, 12), "clap": (4, 12), "open_hat": (2, 6, 10, 14), "hat": (0, 4, 8, 12), "swing": 0.0},
    "halftime": {"beats": 4, "tempo": (130, 170), "kick": (0, 3, 10), "snare": (8,), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "hiphop": {"beats": 4, "tempo": (78, 98), "kick": (0, 7, 10), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.18},
    "ballad": {"beats": 4, "tempo": (62, 84), "kick": (0, 10), "rim": (4, 12), "ride": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.0},
    "shuffle": {"beats": 4, "tempo": (84, 120), "kick": (0, 8), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14), "swing": 0.33},
    "waltz": {"beats": 3, "tempo": (84, 150), "kick": (0,), "snare": (4, 8), "hat": (0, 2, 4, 6, 8, 10), "swing": 0.0},
    "electro": {"beats": 4, "tempo": (118, 132), "kick": (0, 4, 8, 12), "clap": (4, 12), "hat": (2, 6, 10, 14), "shaker": tuple(range(16)), "swing": 0.0},
}  # fmt: skip


# How often each groove is picked (pop and rock feels dominate popular music; waltzes are rare).
STYLE_WEIGHTS = np.array([3, 3, 1.5, 1, 1, 1.5, 1.5, 1, 0.5, 1]) / 15.0  # in STYLES order


def make_kit(rng: np.random.Generator) -> dict[str, float]:
    """Tuning of one drum kit (each song gets its own)."""
    u = rng.uniform
    return {
        "kick_f0": u(120, 260), "kick_f1": u(42, 62), "kick_sweep": u(0.015, 0.05), "kick_len": u(0.3, 0.7),
        "kick_click": u(0.05, 0.5), "kick_drive": u(1.0, 3.0),
        "snare_f": u(160, 240), "snare_lo": u(800, 2500), "snare_decay": u(0.06, 0.18), "snare_snap": u(0.6, 1.2),
        "hat_decay": u(0.03, 0.09), "hat_lo": u(5000, 9000), "metal_f": u(280, 420), "tom_f": u(80, 120),
    }  # fmt: skip


def drum_track(
    style: str,
    sections: list[tuple[str, int, int]],
    bar: float,
    beats: int,
    tempo: float,
    rng: np.random.Generator,
) -> list[tuple[str, float, float]]:
    """Drum events (piece, time s, velocity): the style's groove with per-song variations, humanised timing,
    section-dependent density, fills before section changes and crashes on downbeats."""
    st = STYLES[style]
    steps = 4 * beats
    step = bar / steps
    groove: dict[str, list[int]] = {p: list(v) for p, v in st.items() if p in
                                    ("kick", "snare", "clap", "rim", "hat", "open_hat", "ride", "ghost", "shaker")}  # fmt: skip
    # per-song variations: an extra kick, a different timekeeper
    if rng.random() < 0.5:
        groove["kick"] = sorted(set(groove["kick"]) | {int(rng.choice([2, 7, 11, 14, 15])) % steps})
    if "hat" in groove and rng.random() < 0.25:
        groove["ride"] = groove.pop("hat")
    if rng.random() < 0.3 and "shaker" not in groove:
        groove["shaker"] = list(range(0, steps, 2))
    swing = float(st["swing"]) + (rng.uniform(0, 0.1) if rng.random() < 0.3 else 0.0)
    no_drum_intro = rng.random() < 0.4
    fill_kind = int(rng.integers(3))
    events: list[tuple[str, float, float]] = []

    def at(s: float, b: int) -> float:
        # swing delays the off-beat eighths (s % 4 == 2) or sixteenths (odd s)
        sw = swing * step if (s % 4 == 2 and swing > 0.2) or (s % 2 == 1 and 0 < swing <= 0.2) else 0.0
        return b * bar + s * step + sw + float(rng.normal(0, 0.004))

    for name, b0, nb in sections:
        for b in range(b0, b0 + nb):
            intro = name == "intro"
            if intro and no_drum_intro:
                continue
            last = b == b0 + nb - 1
            fill_from = steps - (8 if (last and rng.random() < 0.4) else 4) if last and not intro else steps
            if b == b0 and name in ("chorus", "bridge") and b > 0:
                events.append(("crash", b * bar + float(rng.normal(0, 0.003)), float(rng.uniform(0.7, 1.0))))
            for piece, ss in groove.items():
                if intro and piece not in ("hat", "ride", "shaker", "kick"):
                    continue
                if name == "bridge" and piece in ("snare", "clap") and rng.random() < 0.5:
                    continue
                for s in ss:
                    if s >= fill_from:
                        continue
                    accent = 1.0 if s % 4 == 0 else (0.8 if s % 2 == 0 else 0.6)
                    vel = {"ghost": 0.25, "hat": 0.55 * accent, "shaker": 0.35 * accent}.get(
                        piece, 0.9 * accent + 0.1
                    )
                    vel *= float(rng.uniform(0.85, 1.1)) * (1.1 if name == "chorus" else 1.0)
                    events.append(("snare" if piece == "ghost" else piece, at(s, b), min(vel, 1.0)))
            if name == "chorus" and "open_hat" not in groove and rng.random() < 0.5:
                events.append(("open_hat", at(steps - 2, b), 0.6))
            if fill_from < steps:  # a fill over the last beat(s) of the section
                for j, s in enumerate(range(fill_from, steps)):
                    cresc = 0.5 + 0.5 * j / max(1, steps - fill_from - 1)
                    if fill_kind == 0:  # tom run, high to low
                        piece = ("tom_hi", "tom_mid", "tom_lo")[min(2, 3 * j // max(1, steps - fill_from))]
                    elif fill_kind == 1:  # snare roll
                        piece = "snare"
                    else:  # snare / tom alternation on eighths
                        if s % 2:
                            continue
                        piece = "snare" if (s // 2) % 2 else "tom_mid"
                    events.append((piece, at(s, b), cresc))
                events.append(("kick", at(fill_from, b), 0.9))
    return events
