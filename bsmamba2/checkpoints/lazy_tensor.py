"""Tensors of a checkpoint that are described but not read: dtype, shape, strides and where the bytes are.

The restricted unpickler (``unpickler.py``) turns every pickled tensor into a :class:`LazyTensor` over a
:class:`Storage`; the archive reader (``torch_archive.py``) supplies the bytes when one is materialised, so
tensors that are never used (an optimizer's moments) are never read.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bsmamba2.errors import CheckpointError

# (key, nbytes, itemsize) -> the record's bytes as a flat uint8 tensor
ReadBytes = Callable[[str, int, int], Tensor]


class Storage:
    """One storage record of a checkpoint (``data/<key>``); its bytes are read on first use and kept.

    ``source`` names the file in errors; ``read`` fetches the bytes.
    """

    def __init__(self, source: str, key: str, dtype: torch.dtype, numel: int, read: ReadBytes) -> None:
        self.source, self.key, self.dtype, self.numel = source, key, dtype, numel
        self._read = read
        self._bytes: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)

    def as_tensor(self, dtype: torch.dtype) -> Tensor:
        """The whole storage as a flat tensor of ``dtype``."""
        if self._bytes is None:
            self._bytes = self._read(self.key, self.nbytes, itemsize(self.dtype))
        raw = self._bytes
        if dtype == torch.uint8:
            return raw
        if raw.numel() % itemsize(dtype):
            raise CheckpointError(f"{self.source}: storage {self.key} does not hold whole {dtype} values")
        return raw.view(dtype) if raw.numel() else torch.empty(0, dtype=dtype)


class LazyTensor:
    """A tensor of the checkpoint whose bytes have not been read yet: ``dtype``, ``shape`` and where it lives.

    ``materialize()`` reads the bytes (once per storage) and returns a CPU tensor viewing them.
    """

    def __init__(
        self,
        storage: Storage,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: torch.dtype,
    ) -> None:
        self.storage, self.offset, self.dtype = storage, offset, dtype
        self.shape = torch.Size(size)
        self.stride = tuple(stride)

    def numel(self) -> int:
        return self.shape.numel()

    def materialize(self) -> Tensor:
        flat = self.storage.as_tensor(self.dtype)
        try:
            return torch.as_strided(flat, self.shape, self.stride, self.offset)
        except RuntimeError as e:  # sizes / strides that run past the storage
            raise CheckpointError(
                f"{self.storage.source}: tensor of shape {tuple(self.shape)} does not fit its storage "
                f"({str(e).splitlines()[0]})"
            ) from None

    def __repr__(self) -> str:
        return f"LazyTensor({str(self.dtype).removeprefix('torch.')}, {tuple(self.shape)})"


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def materialize(obj: Any) -> Any:
    """Replace every LazyTensor in nested dicts / lists / tuples by a real tensor (other values unchanged)."""
    if isinstance(obj, LazyTensor):
        return obj.materialize()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, materialize(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: materialize(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):  # not torch.Size or other tuple subclasses
        return type(obj)(materialize(v) for v in obj)
    return obj
