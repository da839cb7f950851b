"""A small on-disk cache for facts derived from dataset files (headers, activity tables).

Entries are keyed by the file's path, size and modification time, so an edited file is rescanned. The cache
lives in ``<root>/.bsmamba2_cache`` when the dataset folder is writable, else in
``~/.cache/bsmamba2/<hash of root>``; if neither can be written the cache silently stays in memory only
(a read-only dataset must still train). Writes go through ``atomic_write`` (temp file + rename), so several
DDP ranks or DataLoader workers filling the same cache at once never leave a torn file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from bsmamba2.atomic import atomic_write

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".bsmamba2_cache"


def file_key(path: Path) -> str:
    """A string that changes whenever the file is replaced or edited: ``path|size|mtime_ns``."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_dir(root: Path) -> Path | None:
    """The writable cache folder for dataset ``root``, or None when nothing on disk can be written."""
    if os.environ.get("BSMAMBA2_NO_CACHE"):
        return None
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    for d in (root / CACHE_DIRNAME, Path.home() / ".cache" / "bsmamba2" / digest):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return None


def _write(path: Path, write_fn: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically with ``write_fn(binary file)``; on failure only log (the cache is optional)."""
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            write_fn(f)
    except OSError as e:  # a full disk must not stop training: the cache is only an optimisation
        log.debug("cache not written (%s): %s", path, e)


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON cache file; a missing or corrupt one reads as empty."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_json(path: Path, data: dict[str, Any]) -> None:
    _write(path, lambda f: f.write(json.dumps(data).encode()))


def load_array(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def save_array(path: Path, arr: np.ndarray) -> None:
    _write(path, lambda f: np.save(f, arr, allow_pickle=False))


def key_digest(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:24]
