"""One-line summaries for checkpoint error messages."""

from __future__ import annotations

from collections.abc import Sequence


def head(items: Sequence[str], n: int = 3) -> str:
    """The first ``n`` names, comma-separated, with ", ..." when there are more."""
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
