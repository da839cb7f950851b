"""The carry folder for a machine without apt: the mono SoundFont, a re-encoded subset of the drum kits, and
the vocal bank (built by :mod:`.bankbuild`), in the layout :class:`~.assets.Assets` reads."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from bsmamba2 import audio
from bsmamba2.atomic import atomic_write
from bsmamba2.data.synth.samples.assets import DEBIAN_DRUMKITS, DEBIAN_SOUNDFONTS, SOUNDFONT_HINT, AssetError
from bsmamba2.data.synth.samples.drumkit import DrumKit, load_kits

LONG_PIECES = {"crash": 2.0, "ride": 1.6, "open_hat": 1.2}  # seconds kept; other pieces keep 0.9 s
SHORT = 0.9
SR = 44100


def copy_soundfont(out: Path) -> Path:
    """Copy the mono FluidR3 sf3 (23 MB) into ``out``."""
    src = DEBIAN_SOUNDFONTS[0]
    if not src.is_file():
        raise AssetError(f"{src} not found: {SOUNDFONT_HINT}")
    dst = out / src.name
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)
    return dst


def _trim(x: np.ndarray, seconds: float) -> np.ndarray:
    """Cut at ``seconds`` or where the tail falls 60 dB under the peak; 20 ms fade out."""
    x = x[: int(seconds * SR)]
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 1e-3)
    x = x[: int(loud[-1]) + 1] if loud.size else x[:1]
    m = min(len(x) // 2, int(0.02 * SR))
    y = x.copy()
    if m > 0:
        y[-m:] *= np.linspace(1, 0, m, dtype=np.float32)
    return y


def export_kit(kit: DrumKit, out: Path, layers: int = 4) -> int:
    """Write the pieces of ``kit`` the grooves play (at most ``layers`` velocity layers each), trimmed, mono,
    as OGG Vorbis, with a drumkit.xml; returns the bytes written."""
    folder = out / kit.name.replace("/", "_")
    root = ET.Element("drumkit_info")
    ET.SubElement(root, "name").text = kit.name
    lst = ET.SubElement(root, "instrumentList")
    size = 0
    done: set[int] = set()
    for piece, inst in kit.pieces.items():
        if id(inst) in done:
            continue
        done.add(id(inst))
        el = ET.SubElement(lst, "instrument")
        ET.SubElement(el, "name").text = inst.name
        ET.SubElement(el, "volume").text = f"{inst.volume:.4f}"
        picks = sorted(
            {int(round(i)) for i in np.linspace(0, len(inst.layers) - 1, min(layers, len(inst.layers)))}
        )
        for j in picks:
            la = inst.layers[j]
            x = _trim(kit.sample(la, SR) / np.float32(la.gain), LONG_PIECES.get(piece, SHORT))
            name = f"{len(done):02d}_{j}.ogg"
            audio.write(folder / name, x[None], SR, subtype="VORBIS")
            size += (folder / name).stat().st_size
            lay = ET.SubElement(el, "layer")
            for tag, val in (
                ("filename", name),
                ("min", f"{la.lo:.4f}"),
                ("max", f"{la.hi:.4f}"),
                ("gain", f"{la.gain:.4f}"),
            ):
                ET.SubElement(lay, tag).text = val
        if len(picks) < len(inst.layers):  # spread the kept layers over the whole velocity range
            kept = el.findall("layer")
            for k, lay in enumerate(kept):
                lay.find("min").text = f"{k / len(kept):.4f}"  # type: ignore[union-attr]
                lay.find("max").text = f"{(k + 1) / len(kept):.4f}"  # type: ignore[union-attr]
    with atomic_write(folder / "drumkit.xml") as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return size


def export_drumkits(out: Path, source: Path = DEBIAN_DRUMKITS, layers: int = 4) -> int:
    """Every usable kit of ``source`` into ``out/drumkits``; returns the bytes written."""
    return sum(export_kit(k, out / "drumkits", layers) for k in load_kits(source))
