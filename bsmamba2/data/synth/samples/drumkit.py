"""Hydrogen drum kits: ``drumkit.xml`` + WAV/FLAC/OGG samples, mapped to the pieces the grooves play.

A kit's instruments are named freely ("Pearl Kick", "Hi-Hat Closed (Paiste...)", "c#3 - stick"); the pieces
of :mod:`..grooves` (kick, snare, hat, ...) are found by keywords in those names. Each instrument has one or
more layers, each for a velocity range; several layers in one range are played round-robin.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2 import audio
from bsmamba2.data.synth.samples.assets import DRUMKIT_HINT, AssetError

# piece -> name patterns, tried in order (the first instrument whose name matches wins)
PIECE_PATTERNS: dict[str, tuple[str, ...]] = {
    "kick": (r"\bkick\b", r"bass ?drum", r"\bbd\b"),
    "snare": (r"snare(?!.*(roll|rim))", r"\bsd\b"),
    "rim": (r"side ?stick", r"\bstick\b", r"rim"),
    "clap": (r"clap",),
    "hat": (
        r"(closed|cl)\b.*(hh|hat)",
        r"(hh|hat).*(closed|\bcl\b)",
        r"hi-?hat(?!.*open)",
        r"\bhh\b(?!.*open)",
    ),
    "open_hat": (r"open.*(hh|hat)", r"(hh|hat).*(open|\bop\b)", r"semi-?open"),
    "ride": (r"ride(?!.*bell)", r"ride"),
    "crash": (r"crash", r"splash", r"china"),
    "tom_hi": (r"tom.*(hi|high|1\b)", r"(hi|high).*tom"),
    "tom_mid": (r"tom.*(mid|2\b)", r"mid.*tom"),
    "tom_lo": (r"tom.*(low|lo\b|floor|3\b)", r"(low|floor).*tom"),
    "shaker": (r"shaker", r"maraca", r"tambourine", r"cabasa"),
}
# a piece the kit lacks is played on the first of these it has (or dropped)
FALLBACK = {
    "clap": ("snare",), "rim": ("snare",), "open_hat": ("hat",), "ride": ("hat", "open_hat"), "shaker": ("hat",),
    "crash": ("ride", "open_hat"), "tom_hi": ("tom_mid", "tom_lo", "snare"), "tom_mid": ("tom_lo", "tom_hi", "snare"),
    "tom_lo": ("tom_mid", "tom_hi", "snare"),
}  # fmt: skip
REQUIRED = ("kick", "snare", "hat")


@dataclass
class Layer:
    path: Path
    lo: float  # velocity range [lo, hi] in 0..1
    hi: float
    gain: float = 1.0


@dataclass
class Instrument:
    name: str
    volume: float
    layers: list[Layer]


@dataclass
class DrumKit:
    """A parsed kit: its name, its instruments, and the piece -> instrument map."""

    name: str
    folder: Path
    instruments: list[Instrument]
    pieces: dict[str, Instrument] = field(default_factory=dict)
    _audio: dict[tuple[Path, int], np.ndarray] = field(default_factory=dict, repr=False)

    def instrument_for(self, piece: str) -> Instrument | None:
        """The instrument that plays ``piece`` (through the fallbacks), or None."""
        for p in (piece, *FALLBACK.get(piece, ())):
            if p in self.pieces:
                return self.pieces[p]
        return None

    def sample(self, layer: Layer, sample_rate: int) -> np.ndarray:
        """A layer's audio as mono float32 at ``sample_rate`` (loaded once)."""
        key = (layer.path, sample_rate)
        if key not in self._audio:
            try:
                x, sr = sf.read(str(layer.path), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, OSError, RuntimeError) as e:
                raise AssetError(f"{layer.path}: unreadable drum sample ({e}): {DRUMKIT_HINT}") from None
            mono = x.mean(axis=1)[None]
            self._audio[key] = audio.resample(mono, sr, sample_rate)[0] * np.float32(layer.gain)
        return self._audio[key]

    def hit(
        self, piece: str, velocity: float, sample_rate: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        """One hit of ``piece`` at ``velocity`` in 0..1: the layer for that velocity (round-robin among equals),
        scaled by the velocity; None if the kit cannot play the piece."""
        inst = self.instrument_for(piece)
        if inst is None or not inst.layers:
            return None
        fits = [la for la in inst.layers if la.lo - 1e-6 <= velocity <= la.hi + 1e-6] or [
            min(inst.layers, key=lambda la: min(abs(velocity - la.lo), abs(velocity - la.hi)))
        ]
        layer = fits[int(rng.integers(len(fits)))]
        # Layers are recorded at their own loudness; within a layer, scale gently with velocity.
        return self.sample(layer, sample_rate) * np.float32(inst.volume * (0.55 + 0.45 * velocity))


def _text(el: ET.Element, tag: str, default: str = "") -> str:
    for child in el:
        if child.tag.rsplit("}", 1)[-1] == tag:
            return (child.text or "").strip()
    return default


def _children(el: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in el.iter() if c.tag.rsplit("}", 1)[-1] == tag]


def _float(s: str, default: float) -> float:
    try:
        return float(s)
    except ValueError:
        return default


def load_kit(folder: str | Path) -> DrumKit:
    """Parse ``folder/drumkit.xml`` (Hydrogen 0.9.x and 1.x layouts: layers directly in an instrument or in
    instrumentComponent; a bare filename counts as one full-range layer). Raises AssetError if unusable."""
    folder = Path(folder)
    xml = folder / "drumkit.xml"
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as e:
        raise AssetError(f"{xml}: not a readable Hydrogen drumkit.xml ({e}): {DRUMKIT_HINT}") from None
    instruments = []
    for el in _children(root, "instrument"):
        layers = []
        for la in _children(el, "layer"):
            fn = _text(la, "filename")
            if fn and (folder / fn).is_file():
                layers.append(Layer(folder / fn, _float(_text(la, "min"), 0.0), _float(_text(la, "max"), 1.0),
                                    _float(_text(la, "gain"), 1.0)))  # fmt: skip
        fn = _text(el, "filename")
        if not layers and fn and (folder / fn).is_file():
            layers.append(Layer(folder / fn, 0.0, 1.0))
        if layers:
            volume = _float(_text(el, "volume"), 1.0) * _float(_text(el, "gain"), 1.0)
            instruments.append(Instrument(_text(el, "name"), volume, layers))
    kit = DrumKit(_text(root, "name") or folder.name, folder, instruments)
    for piece, patterns in PIECE_PATTERNS.items():
        for pat in patterns:
            hit = next((i for i in instruments if re.search(pat, i.name, re.IGNORECASE)), None)
            if hit is not None:
                kit.pieces[piece] = hit
                break
    return kit


def load_kits(folder: str | Path) -> list[DrumKit]:
    """Every kit under ``folder`` that can play a basic groove (kick, snare, hi-hat), sorted by name."""
    folder = Path(folder)
    kits = [load_kit(x.parent) for x in sorted(folder.glob("*/drumkit.xml"))]
    usable = [k for k in kits if all(p in k.pieces for p in REQUIRED)]
    if not usable:
        raise AssetError(f"{folder}: no drum kit with a kick, a snare and a hi-hat: {DRUMKIT_HINT}")
    return usable
