"""A terminal progress bar driven by the chunk engine's progress callback (the hook a web page uses too)."""

from __future__ import annotations

from typing import IO, Any

from tqdm import tqdm


class ChunkBar:
    """A ``callback(info)`` for ``Separator`` / ``OverlapAdd`` that draws one tqdm bar per separation.

    The bar opens on the first batch, follows ``info["processed"]`` / ``info["total"]`` and closes when the
    two meet; ``close()`` ends it early (e.g. when a separation fails). A count that goes back means a new
    separation started: the old bar is closed and a new one opened. ``file``: where tqdm draws (stderr).
    """

    def __init__(self, unit: str = "chunk", file: IO[str] | None = None) -> None:
        self.unit = unit
        self.file = file
        self.done = 0  # chunks shown on the open bar
        self._bar: tqdm | None = None

    @property
    def open(self) -> bool:
        return self._bar is not None

    def __call__(self, info: dict[str, Any]) -> None:
        done, total = int(info["processed"]), int(info["total"])
        if self._bar is not None and done < self.done:
            self.close()
        if self._bar is None:
            self._bar = tqdm(total=total, unit=self.unit, leave=False, file=self.file)
        self._bar.total = total
        self._bar.update(done - self.done)
        self.done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.done = 0
