"""Where the samples engine finds its sources, and the one-line errors that name the package to install.

An assets folder (the carry folder that ``scripts/build_corpus_v2.py`` writes) holds::

    <assets>/FluidR3Mono_GM.sf3           a General MIDI SoundFont (sf2 or sf3)
    <assets>/drumkits/<kit>/drumkit.xml   Hydrogen drum kits with their samples
    <assets>/vocals/index.json            the sung-phrase bank (+ <session>/<item>.ogg)

Without an assets folder, the SoundFont and the drum kits are looked up where Debian installs them (the vocal
bank has no such place: the samples engine needs an assets folder in practice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bsmamba2.errors import UserError

# The FluidR3 General MIDI family only: other SoundFonts are kept for independent evaluation.
DEBIAN_SOUNDFONTS = (
    Path("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3"),
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
)
DEBIAN_DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")
SOUNDFONT_HINT = "apt-get install fluidr3mono-gm-soundfont (or fluid-soundfont-gm)"
DRUMKIT_HINT = "apt-get install hydrogen-drumkits"
BANK_HINT = "build one with scripts/build_corpus_v2.py (needs pip install 'bsmamba2[synth]' and apt-get install espeak-ng)"
TSF_HINT = "pip install --no-deps tinysoundfont"


class AssetError(UserError):
    """A missing or unusable source for the samples engine (SoundFont, drum kit, vocal bank, package)."""


@dataclass(frozen=True)
class Assets:
    """Paths of the three sources of the samples engine."""

    soundfont: Path
    drumkits: Path
    vocals: Path

    @classmethod
    def locate(cls, folder: str | Path | None) -> Assets:
        """Resolve the sources in ``folder`` (or Debian's install paths for the SoundFont and drum kits when
        ``folder`` is None). Raises AssetError naming what to install when one is missing."""
        root = Path(folder).expanduser() if folder is not None else None
        if root is not None and not root.is_dir():
            raise AssetError(f"{root}: assets folder not found (write it with scripts/build_corpus_v2.py)")
        if root is not None:  # an assets folder is used alone, so that a corpus depends on it only
            fonts = sorted([*root.glob("*.sf3"), *root.glob("*.sf2")])
        else:
            fonts = [p for p in DEBIAN_SOUNDFONTS if p.is_file()]
        where = root or DEBIAN_SOUNDFONTS[0].parent
        if not fonts:
            raise AssetError(f"no General MIDI SoundFont found in {where}: {SOUNDFONT_HINT}")
        kits = root / "drumkits" if root is not None else DEBIAN_DRUMKITS
        if not any(kits.glob("*/drumkit.xml")):
            raise AssetError(f"no Hydrogen drum kit found in {kits}: {DRUMKIT_HINT}")
        vocals = root / "vocals" if root is not None else Path("vocals")
        if not (vocals / "index.json").is_file():
            raise AssetError(f"no vocal bank at {vocals / 'index.json'}: {BANK_HINT}")
        return cls(fonts[0], kits, vocals)
