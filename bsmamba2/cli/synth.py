"""``bsmamba2 synth``: registered here; the command itself is :mod:`bsmamba2.data.synth.cli` (its own
``-q/--quiet``, no progress bar, is the global flag's meaning too)."""

from bsmamba2.data.synth.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
