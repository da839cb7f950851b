"""Facts about the host that caches are keyed by or kept in, torch-free so that any layer can import them: the
user cache folder and the CPU's model name."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder of bsmamba2: $XDG_CACHE_HOME/bsmamba2 (default ~/.cache/bsmamba2)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bsmamba2"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
