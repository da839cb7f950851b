"""Atomic file writes: write to a temp file beside the target, flush it to disk, then rename over it.

Every file the package writes goes through :func:`atomic_write`, so a crash, a full disk or a signal never
leaves a partial file under the final name, and the temp file is removed on any error. ``make_folder``,
``write_failure`` and ``os_failure`` turn the OS errors of writing (a file blocking a folder, a full disk,
no permission) into the one-line ``UserError`` the CLI prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from bsmamba2.errors import UserError


def temp_beside(path: Path) -> Path:
    """Create an empty temp file in ``path``'s folder (so the final rename is atomic) with the permissions a
    new file would get under the process umask (mkstemp alone makes files only the owner can read)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return Path(tmp)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk; silently skipped where the OS refuses (e.g. Windows dirs)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, rename it over ``path``.

    The caller writes the whole file to the yielded path with any library (soundfile, safetensors,
    torch.save, ``Path.write_text``). The final file gets the umask's permissions, whatever the writer did to
    the temp file's mode (safetensors replaces it with a 0600 file). ``durable``: fsync the file before the
    rename and the folder after it (checkpoints). On any exception, KeyboardInterrupt included, the temp
    file is removed and the exception propagates; ``path`` is untouched.
    """
    p = Path(path)
    make_folder(p.parent)
    tmp: Path | None = None
    try:
        with signals_deferred():  # no Ctrl-C between the temp file's creation and the name that cleans it up
            tmp = temp_beside(p)
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        if durable:
            fsync_path(tmp)
        os.replace(tmp, p)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(p.parent)


# the signals whose Python handlers may raise mid-statement (Ctrl-C; SIGTERM / SIGHUP under the CLI)
_DEFERRABLE = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While the block runs on the main thread, a signal whose Python handler would raise there (Ctrl-C's
    KeyboardInterrupt, the CLI's SIGTERM / SIGHUP) is held, and its handler runs as the block ends.

    For the few statements between creating a temp file and handing it to the code that removes it on
    error: a signal raised between the two would leave the file behind. Elsewhere (another thread, where
    handlers cannot be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))

    old: dict[int, Callable[[int, FrameType | None], object]] = {}
    for s in _DEFERRABLE:
        handler = signal.getsignal(s)
        if callable(handler):  # SIG_DFL / SIG_IGN / a C handler: nothing that raises in Python
            signal.signal(s, hold)
            old[s] = handler
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if held:
            signum, frame = held[0]
            old[signum](signum, frame)


def make_folder(folder: Path) -> None:
    """``mkdir -p``, saying which part of the path is a file when one blocks it (mkdir says "File exists")."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file where a folder should be", str(part))
            break
    folder.mkdir(parents=True, exist_ok=True)


def write_failure(target: str | os.PathLike[str], e: OSError) -> UserError:
    """The one-line error for ``e`` met while writing ``target``: what failed, why, and the path the OS
    named when it is not ``target``, its temp file or a file in it (e.g. the file blocking its folder)."""
    reason = e.strerror or str(e).splitlines()[0]
    t, named = Path(target), Path(e.filename) if isinstance(e.filename, str) else None
    inside = named is not None and (named.parent == t.parent or named.is_relative_to(t))
    where = f" ({named})" if named is not None and not inside else ""
    return UserError(f"cannot write {target}: {reason}{where}")


def os_failure(e: OSError) -> UserError:
    """The one-line error for an OSError met anywhere else: the path the OS named, and why."""
    reason = e.strerror or str(e).splitlines()[0]
    return UserError(f"{e.filename}: {reason}" if e.filename else reason)
