"""Run a test file's body under Triton's CPU interpreter, in a subprocess: ``TRITON_INTERPRET`` must be set
before triton defines the kernels, so it cannot be switched on inside the pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_interpreted(script: str, flag: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python script flag`` with TRITON_INTERPRET=1 and the repository first on PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, script, flag], env=env, capture_output=True, text=True, timeout=timeout
    )
