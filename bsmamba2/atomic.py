"""Atomic file writes: write to a temp file beside the target, then rename over it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """Create an empty temp file in ``path``'s folder (so the final rename is atomic) with the permissions a
    new file would get under the process umask (mkstemp alone makes files only the owner can read)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    return Path(tmp)
