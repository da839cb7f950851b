"""benchmarks/bench_cli.py's CPU smoke mode (--quick) runs end to end and writes the GPU table's every section
(the numbers of a smoke run mean nothing; only the script is tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_mode_writes_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_cli.py"), "--quick", "--out", str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "cli.json").read_text())
    assert {
        "import torch (s)",
        "bsmamba2 --help (s)",
        "first separate process, 1 s song, compiling now (s)",
    } <= set(res["fixed"])
    rows = {row["name"]: row for row in res["cli"]}
    assert "note" not in rows["defaults"], rows["defaults"]
    assert rows["defaults"]["settings"] == {
        "device": "cpu",
        "batch_size": 4,
        "fused": False,
        "files_in_flight": 1,
    }
    for kind in ("cold", "warm", "folder"):
        stages = rows["defaults"]["stages"][kind]
        assert stages["files"] == (2 if kind == "folder" else 1)
        assert {"load (s)", "decode (s)", "model (s)", "encode (s)", "write (s)", "start-up (s)"} <= set(
            stages
        )
    overlapped = rows["defaults, two files in flight"]
    assert "note" not in overlapped and overlapped["settings"]["files_in_flight"] == 1  # one song: inline
    assert overlapped["stages"]["folder"]["files_in_flight"] == 2
    assert overlapped["stages"]["folder"]["files"] == 2
    assert rows["eager, batch 2"]["settings"]["batch_size"] == 2
    plain = rows["eager, batch 2, no I/O threads"]
    assert "note" not in plain and plain["flags"].startswith("BSMAMBA2_IO_THREADS=0")
    assert plain["stages"]["folder"]["files"] == 2
    models = res["model"]
    assert models and all("note" not in m for m in models), models
    assert all(m["s"] > 0 for m in models)
    md = (tmp_path / "cli.md").read_text()
    assert "| defaults |" in md and "Models alone" in md and res["header"]["device"].startswith("CPU")
