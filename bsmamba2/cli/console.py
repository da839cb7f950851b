"""Console set-up for one command: the log level (-v / default / -q), log lines that never glue onto a bar,
and termination signals that clean up like Ctrl-C.

A log line written while a tqdm bar is on screen lands after the bar's text, on the same line. Inside
:func:`console_logging` every console record goes through ``tqdm.write`` instead (tqdm's logging redirect),
which clears the bars, prints the line and redraws them; Python warnings are routed through logging too.

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, and every writer removes its temp file on it. SIGTERM
(``timeout``, ``docker stop``, systemd) and SIGHUP (a closed terminal) would kill the process on the spot
and leave those files behind; inside :func:`signals_interrupt` they raise :class:`Terminated`, a
KeyboardInterrupt, so the same clean-up runs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from tqdm.contrib.logging import logging_redirect_tqdm

FORMAT = "%(levelname)s %(name)s: %(message)s"


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


@contextlib.contextmanager
def console_logging(level: int) -> Iterator[None]:
    """Show records of ``level`` and above on stderr while the block runs, through tqdm; restore after.

    A console handler the host program already installed is reused (only the level is set), so a caller
    of ``main()`` that configured logging does not get every line twice.
    """
    root = logging.getLogger()
    old_level = root.level
    own: logging.Handler | None = None
    if not any(_is_console(h) for h in root.handlers):
        own = logging.StreamHandler(sys.stderr)
        own.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(own)
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logging.captureWarnings(False)
        if own is not None:
            root.removeHandler(own)
        root.setLevel(old_level)


def os_error_line(e: OSError) -> str:
    """One line for an OS error that reached the top of a command: the file and the system's reason
    ("/out/x.wav: No space left on device"), never a traceback."""
    why = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {why}" if names else why


# SIGHUP does not exist on Windows
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread was, so that clean-up code written for Ctrl-C runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "killed by signal N"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread; restore after.

    Outside the main thread (a host program calling ``main()`` from a worker) signals cannot be caught, and
    the handlers are left as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_terminated) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
