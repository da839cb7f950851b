"""The output formats a user picks (``--format``, ``--bit-depth``, ``--bitrate``) and their one check.

Plain data and a check, without torch, so that ``bsmamba2 separate --help`` lists the choices without loading
the model stack; ``bsmamba2.api`` re-exports these names.
"""

from __future__ import annotations

from bsmamba2.audio.io import DEFAULT_MP3_BITRATE, MP3_BITRATES
from bsmamba2.errors import UserError

FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = ("16", "24", "float")


def check_format(fmt: str, bit_depth: str, bitrate: int | None = None) -> None:
    """Reject format / bit-depth / bitrate combinations before any work (FLAC stores integers only; a
    bitrate is MP3's alone, and one of the MPEG-1 Layer III set). MP3 ignores the bit depth."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if bit_depth not in BIT_DEPTHS:
        raise UserError(f"unknown bit depth {bit_depth!r} (choose from {', '.join(BIT_DEPTHS)})")
    if fmt == "flac" and bit_depth == "float":
        raise UserError("FLAC stores 16- or 24-bit integers; use --bit-depth 16/24 or --format wav")
    if bitrate is not None and fmt != "mp3":
        raise UserError(f"a bitrate applies to mp3 output only; {fmt} is lossless")
    if bitrate is not None and bitrate not in MP3_BITRATES:
        choices = ", ".join(map(str, MP3_BITRATES))
        raise UserError(
            f"no MP3 bitrate of {bitrate} kbps (choose from {choices}; default {DEFAULT_MP3_BITRATE})"
        )
