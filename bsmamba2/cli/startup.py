"""A ``bsmamba2`` process's start and end, made shorter (issue 12).

Two fixed costs of every command process did not depend on the work at all:

- **The garbage collector during start-up.** Importing torch and building a model allocate hundreds of
  thousands of objects and none of them is garbage, yet each allocation burst triggers a collection that walks
  them: ``import torch`` took ~13 % less time with the collector paused (1.72 against 1.98 s, median of five,
  2-core VM). :func:`pause_gc` pauses it at process start (:func:`bsmamba2.cli.entry` only, never inside a
  caller's process); :func:`resume_gc` moves everything alive by then into the permanent generation
  (``gc.freeze``: later collections skip it) and resumes. ``main`` resumes it before a command runs, unless the
  command module sets ``LATE_GC = True`` and resumes it itself once its own start-up is done
  (``bsmamba2 separate``: after the model load).
- **The interpreter's teardown.** After ``bsmamba2 separate`` of a 5 s file returned, the process took another
  0.63-0.71 s to end (module teardown, atexit handlers, thread joins), against 0.05-0.07 s with ``os._exit``.
  A command module that sets ``FAST_EXIT = True`` has every result on disk when it returns (outputs are
  renamed into place before ``run`` returns, and files in flight are joined); :func:`finish` then flushes the
  standard streams and the logging handlers and ends the process at once.

``BSMAMBA2_FAST_START=0`` turns both off (benchmarks compare the two in one run).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from types import ModuleType

ENV = "BSMAMBA2_FAST_START"
_state = {"paused": False}


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


def pause_gc() -> None:
    """Pause the cyclic garbage collector for the start-up (only if it is running and not switched off)."""
    if enabled() and gc.isenabled():
        gc.disable()
        _state["paused"] = True


def resume_gc() -> None:
    """Undo :func:`pause_gc` (nothing if it did not pause): freeze what start-up left alive, then resume."""
    if _state["paused"]:
        _state["paused"] = False
        gc.freeze()
        gc.enable()


def gc_paused() -> bool:
    return bool(_state["paused"])


def fast_exit(module: ModuleType | None) -> bool:
    """Whether :func:`finish` may skip the interpreter's teardown after ``module``'s command."""
    return enabled() and bool(getattr(module, "FAST_EXIT", False))


def finish(code: int, fast: bool) -> None:
    """End the process with ``code``: at once (``os._exit``, streams and log handlers flushed first) when
    ``fast``, else through the normal ``sys.exit``."""
    if not fast:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it anyway
            pass
    logging.shutdown()
    os._exit(code)
