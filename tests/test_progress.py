"""The terminal progress bar (bsmamba2.progress.ChunkBar) driven by progress reports."""

from __future__ import annotations

import io

from bsmamba2.progress import ChunkBar


def test_bar_follows_reports_and_closes_at_the_total() -> None:
    bar = ChunkBar(file=io.StringIO())
    bar({"processed": 2, "total": 5})
    assert bar._bar is not None and (bar._bar.n, bar._bar.total) == (2, 5)
    bar({"processed": 4, "total": 6})  # a stream of unknown length: the total may grow
    assert bar._bar is not None and (bar._bar.n, bar._bar.total) == (4, 6)
    bar({"processed": 6, "total": 6})
    assert not bar.open


def test_a_count_going_back_starts_a_new_bar() -> None:
    bar = ChunkBar(file=io.StringIO())
    bar({"processed": 3, "total": 9})
    first = bar._bar
    bar({"processed": 1, "total": 4})  # the previous separation failed midway; a new one began
    assert bar._bar is not None and bar._bar is not first and (bar._bar.n, bar._bar.total) == (1, 4)
    bar.close()
    assert not bar.open
