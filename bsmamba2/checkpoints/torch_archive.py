"""Read ``torch.save`` zip archives without running any pickled code.

We read the zip archive ourselves (Python's ``zipfile``) and unpickle its object with
``unpickler.RestrictedUnpickler`` rather than pass a ``pickle_module`` to ``torch.load``: it keeps working
when ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set (torch then refuses any custom ``pickle_module``), it depends on
no private torch function, and tensor bytes are read only when a tensor is materialised, so the optimizer
moments of a training checkpoint are never loaded. The archive layout (``<name>/data.pkl``,
``<name>/data/<key>``, ``<name>/byteorder``) is the one ``torch.save`` has written since PyTorch 1.6. Files in
the pre-1.6 legacy format are refused with a one-line error.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bsmamba2.checkpoints._text import first_line
from bsmamba2.checkpoints.base import sniff_format
from bsmamba2.checkpoints.lazy_tensor import Storage, materialize
from bsmamba2.checkpoints.unpickler import RestrictedUnpickler
from bsmamba2.errors import CheckpointError


class TorchArchive:
    """An open ``torch.save`` zip archive. ``load()`` unpickles its object with LazyTensors in place of
    tensors; LazyTensor.materialize() works while the archive is open (use ``open_torch_archive``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(
                f"{self.path}: not a readable PyTorch checkpoint ({first_line(e)})"
            ) from None
        names = self._zip.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pickles:
            self._zip.close()
            if any(n.endswith("/constants.pkl") for n in names):
                raise CheckpointError(f"{self.path}: a TorchScript archive, not a checkpoint of weights")
            raise CheckpointError(f"{self.path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
        self._prefix = pickles[0][: -len("data.pkl")]
        # Files without a byteorder record are little-endian (torch.load's default since 2.1).
        order = "little"
        if f"{self._prefix}byteorder" in names:
            order = self._zip.read(f"{self._prefix}byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            self._zip.close()
            raise CheckpointError(f"{self.path}: unknown byte order {order[:20]!r}")
        self._swap = order != sys.byteorder
        self._storages: dict[str, Storage] = {}

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> TorchArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> Any:
        """The pickled object; tensors are LazyTensors, unknown classes are Inert placeholders."""
        try:
            data = self._zip.read(f"{self._prefix}data.pkl")
            return RestrictedUnpickler(io.BytesIO(data), self._storage).load()
        except CheckpointError:
            raise
        except RecursionError:
            raise CheckpointError(f"{self.path}: checkpoint nested too deeply to read") from None
        except Exception as e:  # any malformed pickle: one line, never a traceback
            raise CheckpointError(
                f"{self.path}: unreadable checkpoint ({type(e).__name__}: {first_line(e)})"
            ) from None

    def _storage(self, key: str, dtype: torch.dtype, numel: int) -> Storage:
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = Storage(str(self.path), key, dtype, numel, self.read_storage)
        return st

    def read_storage(self, key: str, nbytes: int, itemsize: int) -> Tensor:
        """The bytes of ``data/<key>`` as a flat uint8 tensor (byte-swapped per element if needed)."""
        name = f"{self._prefix}data/{key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: checkpoint lacks tensor data record {key!r}") from None
        if info.file_size < nbytes:
            raise CheckpointError(f"{self.path}: tensor data record {key!r} is truncated")
        if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses; refuse zip bombs
            raise CheckpointError(
                f"{self.path}: tensor data record {key!r} is compressed, not a torch.save file"
            )
        buf = bytearray(nbytes)
        try:
            with self._zip.open(info) as f:
                got = f.readinto(buf)  # type: ignore[attr-defined]
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(
                f"{self.path}: corrupt tensor data record {key!r} ({first_line(e)})"
            ) from None
        if got != nbytes:
            raise CheckpointError(f"{self.path}: tensor data record {key!r} is truncated")
        if not nbytes:
            return torch.empty(0, dtype=torch.uint8)
        raw = torch.frombuffer(buf, dtype=torch.uint8)
        if self._swap and itemsize > 1:
            raw = raw.view(-1, itemsize).flip(1).reshape(-1)
        return raw


@contextmanager
def open_torch_archive(path: str | os.PathLike[str]) -> Iterator[TorchArchive]:
    """``with open_torch_archive(p) as a: obj = a.load(); t = obj["w"].materialize()``; errors are one line."""
    fmt = sniff_format(path)
    if fmt == "torch-legacy":
        raise CheckpointError(
            f"{path}: legacy PyTorch (< 1.6) serialization is not supported; re-save it with torch.save in a "
            "current PyTorch"
        )
    if fmt != "torch-zip":
        raise CheckpointError(f"{path}: not a PyTorch checkpoint")
    archive = TorchArchive(path)
    try:
        yield archive
    finally:
        archive.close()


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """A safe ``torch.load(path, map_location="cpu")``: tensors are real, unknown objects are Inert."""
    with open_torch_archive(path) as archive:
        return materialize(archive.load())
