"""Triton's installation hash, remembered across processes.

Triton keys its on-disk kernel cache with ``triton.runtime.cache.triton_key()``: a SHA-256 over its own
Python sources and its ~500 MB ``libtriton.so``, computed on the first kernel lookup of every process. On the
H200 host that costs 0.35 s of each ``bsmamba2 separate`` (a cProfile of one song: 413 one-MiB
``hashlib.update`` calls; BENCHMARKS.md, issue 12), though the installation has not changed.

:func:`install` replaces that function by one that returns the value Triton computed earlier, stored in the
user cache folder (``$XDG_CACHE_HOME/bsmamba2/triton_key.json``, ``bsmamba2.hostinfo.cache_dir``) under a
stamp of every file the hash reads: Triton's version and each file's path, size and modification time. Any
change to those files (an upgrade, a rebuild) changes the stamp, and Triton's own function runs again. Triton
itself swaps the function the same way for its compile workers. ``BSMAMBA2_TRITON_KEY_CACHE=0`` leaves
Triton alone.
"""

from __future__ import annotations

import json
import logging
import os
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bsmamba2.atomic import atomic_write
from bsmamba2.hostinfo import cache_dir

log = logging.getLogger(__name__)
ENV = "BSMAMBA2_TRITON_KEY_CACHE"


def _cache_file() -> Path:
    return cache_dir() / "triton_key.json"


def _stamp(root: Path, version: str) -> list[Any]:
    """Triton's version and (path, size, mtime_ns) of every file its hash reads (and a few more: all of
    compiler/, backends/, language/ and _C/libtriton.*)."""
    ext = (sysconfig.get_config_var("EXT_SUFFIX") or ".so").split(".")[-1]
    files = [root / "runtime" / "cache.py", root / "_C" / f"libtriton.{ext}"]
    for sub in ("compiler", "backends", "language"):
        files += sorted(p for p in (root / sub).rglob("*.py"))
    stamp: list[Any] = [version]
    for f in files:
        st = f.stat()
        stamp.append([str(f), st.st_size, st.st_mtime_ns])
    return stamp


def install() -> bool:
    """Make ``triton.runtime.cache.triton_key`` return the stored value when the stamp matches (computing and
    storing it otherwise). Returns whether the cached function is in place; never raises."""
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        import triton
        import triton.runtime.cache as tc

        original: Callable[[], str] = tc.triton_key
        if getattr(original, "_bsmamba2_cached", False):
            return True
        stamp = _stamp(Path(triton.__file__).parent, str(triton.__version__))
    except (ImportError, AttributeError, OSError) as e:  # another Triton layout: leave it as it is
        log.debug("triton_key cache not installed: %s", e)
        return False
    path = _cache_file()
    value: str | None = None
    try:
        stored = json.loads(path.read_text())
        if stored.get("stamp") == stamp and isinstance(stored.get("key"), str):
            value = stored["key"]
    except (OSError, ValueError, AttributeError):
        pass
    if value is None:
        value = original()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as tmp:
                tmp.write_text(json.dumps({"stamp": stamp, "key": value}))
        except Exception as e:  # a read-only home: the hash is simply computed again next time
            log.debug("triton_key not stored: %s", e)
    key = value

    def cached() -> str:
        return key

    cached._bsmamba2_cached = True  # type: ignore[attr-defined]
    tc.triton_key = cached
    return True
