"""Does a song's own accompaniment make its vocals harder to separate than a stranger's at the same level?

For each track of a synthetic split (``bsmamba2 synth`` output), two mixtures with the same vocal stem:
  own      the track's mixture: vocals over its own accompaniment (same key, tempo, sometimes its melody);
  foreign  the same vocals over the next track's accompaniment (trimmed or looped to length), scaled to the
           own accompaniment's energy, so the vocal-to-accompaniment ratio is the same.
The model separates both; the script prints vocal uSDR per track and the mean difference. Training draws
random mixes (every stem from its own track), so a large own < foreign gap says the model has not learnt
songs whose parts agree, which coherent training items (``data.p_aligned``) show it.

    python scripts/coherence_check.py DATA [--subset test] [--model FILE] [--device cpu] [--limit 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bsmamba2 import audio
from bsmamba2.api import Separator
from bsmamba2.evaluate.metrics import usdr


def _stem(track: Path, name: str) -> np.ndarray:
    x, _ = audio.read(track / f"{name}.wav")
    return np.asarray(x, np.float64)


def _accompaniment(track: Path) -> np.ndarray:
    parts = [_stem(track, s) for s in ("drums", "bass", "other") if (track / f"{s}.wav").exists()]
    return np.sum(parts, axis=0)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // x.shape[-1])
    return np.tile(x, (1, reps))[:, :n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--subset", default="test")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=8)
    a = ap.parse_args()
    tracks = sorted(p for p in (Path(a.data) / a.subset).iterdir() if (p / "vocals.wav").exists())[: a.limit]
    if len(tracks) < 2:
        raise SystemExit(f"coherence_check: need at least 2 tracks under {a.data}/{a.subset}")
    sep = Separator.from_pretrained(a.model, device=a.device)
    sr = sep.sample_rate
    rows = []
    for i, t in enumerate(tracks):
        voc = _stem(t, "vocals")
        own = _accompaniment(t)
        other = _fit(_accompaniment(tracks[(i + 1) % len(tracks)]), voc.shape[-1])
        other *= np.sqrt((own**2).sum() / max((other**2).sum(), 1e-12))
        var_db = 10 * np.log10((voc**2).sum() / max((own**2).sum(), 1e-12))
        scores = []
        for acc in (own, other):
            est = sep.separate((voc + acc).astype(np.float32), sr, layout="cf")["vocals"].numpy()
            scores.append(usdr(voc, est))
        rows.append((t.name, var_db, *scores))
        print(
            f"{t.name:24s} VAR {var_db:6.1f} dB  own {scores[0]:6.2f}  foreign {scores[1]:6.2f}", flush=True
        )
    d = np.array([r[3] - r[2] for r in rows])
    print(
        f"mean own {np.mean([r[2] for r in rows]):.2f} dB, foreign {np.mean([r[3] for r in rows]):.2f} dB, "
        f"foreign - own {d.mean():+.2f} dB (min {d.min():+.2f}, max {d.max():+.2f}) over {len(rows)} tracks"
    )


if __name__ == "__main__":
    main()
