"""``bsmamba2 convert``: registered here; the command itself is in :mod:`bsmamba2.model.convert`."""

from bsmamba2.model.convert import add_arguments, run

__all__ = ["add_arguments", "run"]
