"""The dataset fact cache (bsmamba2.data.cache): atomic writes with the umask's mode; failures only log."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from bsmamba2.data import cache


def test_json_and_array_round_trip(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    old = os.umask(0o022)
    try:
        cache.save_json(tmp_path / "headers.json", {"a|1|2": [44100, 2]})
        cache.save_array(tmp_path / "act.npy", arr)
    finally:
        os.umask(old)
    assert cache.load_json(tmp_path / "headers.json") == {"a|1|2": [44100, 2]}
    got = cache.load_array(tmp_path / "act.npy")
    assert got is not None and got.dtype == arr.dtype and np.array_equal(got, arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["act.npy", "headers.json"]  # no temp files
    for name in ("act.npy", "headers.json"):  # shared cache: readable by the other users of the dataset
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_unwritable_cache_is_skipped(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache.save_json(blocker / "headers.json", {"a": 1})  # the folder is a file: OSError, logged only
    cache.save_array(blocker / "act.npy", np.zeros(3))
    assert cache.load_json(blocker / "headers.json") == {}
    assert cache.load_array(blocker / "act.npy") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
