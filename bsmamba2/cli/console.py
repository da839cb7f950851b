"""Console logging for one command: the level (-v / default / -q), and log lines that never glue onto a bar.

A log line written while a tqdm bar is on screen lands after the bar's text, on the same line. Inside
:func:`console_logging` every console record goes through ``tqdm.write`` instead (tqdm's logging redirect),
which clears the bars, prints the line and redraws them; Python warnings are routed through logging too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

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
