"""Read PyTorch checkpoint files (``torch.save`` zip archives) without running any pickled code.

A pickle is a small program: its GLOBAL opcodes name any importable callable and its REDUCE / NEWOBJ / BUILD
opcodes call it. ``torch.load(weights_only=False)`` therefore runs whatever a checkpoint asks for. Here every
global goes through ``RestrictedUnpickler.find_class``, which hands out only

- plain containers and scalars (dict, list, tuple, set, OrderedDict, int, float, str, bytes, ...),
- torch dtypes, ``torch.Size``, ``torch.device``,
- our own stand-ins for torch's tensor-rebuild functions, which return a ``LazyTensor`` (dtype, shape,
  strides and where the bytes are) instead of running torch's versions;

and turns every other class or function into an inert placeholder class: calling it, building it or setting
its state only records the arguments (see ``Inert``). Nothing is imported. So an OmegaConf ``DictConfig`` in
a Lightning checkpoint's ``hyper_parameters`` comes back as data (``to_plain``) without omegaconf installed,
and a ``__reduce__`` payload (``os.system``, ``builtins.exec``, ...) comes back as a placeholder that never ran.

We read the zip archive ourselves (Python's ``zipfile``) rather than pass a ``pickle_module`` to ``torch.load``:
it keeps working when ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set (torch then refuses any custom
``pickle_module``), it depends on no private torch function, and tensor bytes are read only when a tensor is
materialised, so the optimizer moments of a training checkpoint are never loaded. The archive layout
(``<name>/data.pkl``, ``<name>/data/<key>``, ``<name>/byteorder``) is the one ``torch.save`` has written since
PyTorch 1.6; the pickled tensor calls (``torch._utils._rebuild_tensor_v2`` / ``_v3``, ``_rebuild_parameter``,
``torch._tensor._rebuild_from_type_v2``) are the same from torch 2.4 through 2.13. Files in the pre-1.6
legacy format are refused with a one-line error.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bsmamba2.errors import CheckpointError

__all__ = [
    "Inert",
    "LazyTensor",
    "RestrictedUnpickler",
    "TorchArchive",
    "materialize",
    "open_torch_archive",
    "safe_torch_load",
    "sniff_format",
    "to_plain",
]

# ---- file formats ------------------------------------------------------------------------------------------


def sniff_format(path: str | os.PathLike[str]) -> str:
    """What a file is, from its first bytes: "torch-zip", "safetensors", "torch-legacy" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch-zip"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle protocol opcode: torch.save(..., _use_new_zipfile_serialization=False)
        return "torch-legacy"
    return "unknown"


# ---- inert placeholders ------------------------------------------------------------------------------------


class Inert:
    """Stand-in for an object of a class we do not load. Records what unpickling asked for; runs nothing.

    The class itself is created per global (``Inert.make("omegaconf.dictconfig", "DictConfig")``); ``module``
    and ``name`` say which. An instance keeps the constructor ``args``/``kwargs`` (REDUCE, NEWOBJ), the
    ``state`` given to BUILD, and any ``items`` / ``list_items`` pickle added (SETITEMS, APPENDS).
    """

    module: str = ""
    name: str = ""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.list_items = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # everything was recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    @classmethod
    def qualname(cls) -> str:
        return f"{cls.module}.{cls.name}"

    def __repr__(self) -> str:
        return f"<inert {self.qualname()}>"

    @staticmethod
    def make(module: str, name: str) -> type[Inert]:
        """A new placeholder class standing for the global ``module.name``."""
        return type(f"Inert[{module}.{name}]", (Inert,), {"module": module, "name": name})


# ---- tensors -----------------------------------------------------------------------------------------------

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "UntypedStorage": torch.uint8,
}


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: only their element type matters."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class _Storage:
    """One ``data/<key>`` record of the archive; its bytes are read on first use and kept."""

    def __init__(self, archive: TorchArchive, key: str, dtype: torch.dtype, numel: int) -> None:
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._bytes: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)

    def as_tensor(self, dtype: torch.dtype) -> Tensor:
        """The whole storage as a flat tensor of ``dtype``."""
        if self._bytes is None:
            self._bytes = self.archive.read_storage(self.key, self.nbytes, _itemsize(self.dtype))
        raw = self._bytes
        if dtype == torch.uint8:
            return raw
        if raw.numel() % _itemsize(dtype):
            raise CheckpointError(
                f"{self.archive.path}: storage {self.key} does not hold whole {dtype} values"
            )
        return raw.view(dtype) if raw.numel() else torch.empty(0, dtype=dtype)


class LazyTensor:
    """A tensor of the checkpoint whose bytes have not been read yet: ``dtype``, ``shape`` and where it lives.

    ``materialize()`` reads the bytes (once per storage) and returns a CPU tensor viewing them.
    """

    def __init__(
        self,
        storage: _Storage,
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
                f"{self.storage.archive.path}: tensor of shape {tuple(self.shape)} does not fit its storage "
                f"({str(e).splitlines()[0]})"
            ) from None

    def __repr__(self) -> str:
        return f"LazyTensor({str(self.dtype).removeprefix('torch.')}, {tuple(self.shape)})"


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> tuple[_Storage, int, tuple, tuple]:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    ints = (offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise pickle.UnpicklingError("tensor with invalid offset, size or stride")
    return storage, offset, tuple(size), tuple(stride)


def _check_metadata(metadata: Any) -> None:
    # torch records conj / neg bits here; real-valued weights never carry them.
    if metadata and any(bool(v) for v in dict(metadata).values()):
        raise pickle.UnpicklingError(f"unsupported tensor metadata {metadata!r}")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> LazyTensor:
    s, o, sz, st = _tensor_args(storage, offset, size, stride)
    return LazyTensor(s, o, sz, st, s.dtype)


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> LazyTensor:
    _check_metadata(metadata)
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> LazyTensor:
    # torch >= 2.3 writes this for dtypes that have no typed storage (uint16, float8, ...): untyped bytes + dtype.
    _check_metadata(metadata)
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError("tensor with an invalid dtype")
    s, o, sz, st = _tensor_args(storage, offset, size, stride)
    return LazyTensor(s, o, sz, st, dtype)


def _rebuild_parameter(
    data: Any, requires_grad: Any = True, backward_hooks: Any = None, state: Any = None
) -> Any:
    # An nn.Parameter is just its data here; so is _rebuild_parameter_with_state (state: Python attributes).
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # A tensor (subclass) with Python attributes: rebuild the plain tensor, drop the type and the attributes.
    # ``func`` is whatever find_class returned for it: one of ours, or an inert placeholder.
    if not callable(func) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("malformed tensor-subclass record")
    return func(*args)


def _codecs_encode(text: Any, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles (torch.save's default) spell a bytes object as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode("latin-1")


def _plain_dict(*_args: Any) -> dict[Any, Any]:
    # collections.defaultdict(factory): a plain dict (the factory would be called later on a missing key).
    return {}


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects): instantiate our placeholder, never ``base.__new__``.
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    return Inert.make("copyreg", "_reconstructor")(cls, base, state)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        ("builtins", t.__name__): t
        for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str)
    },
    # Not bytes / bytearray: bytes(10**12) is a 12-byte memory bomb. Protocol 2 spells bytes via _codecs.
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _plain_dict,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}


# torch.float32 & co. Looked up in the module's own dict: getattr(torch, name) could import lazy submodules.
_TORCH_DTYPES: dict[str, torch.dtype] = {k: v for k, v in vars(torch).items() if isinstance(v, torch.dtype)}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that calls nothing it does not know (module docstring). ``storage_loader(key, dtype,
    numel)`` answers the persistent ids ("storage", type, key, location, numel) of a torch archive."""

    def __init__(
        self, file: io.BufferedIOBase, storage_loader: Callable[[str, torch.dtype, int], Any]
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._storage_loader = storage_loader
        self._placeholders: dict[tuple[str, str], type[Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles use Python 2 names (__builtin__.set, copy_reg._reconstructor); map them first,
        # as pickle's own find_class does. The mapping only renames.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _SAFE_GLOBALS:
            value = _SAFE_GLOBALS[key]
            # Our functions go out as fresh partials: a BUILD opcode may setattr on whatever it gets (e.g.
            # __defaults__), and that must not change the shared function. The types here are immutable.
            return functools.partial(value) if isinstance(value, types.FunctionType) else value
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if key not in self._placeholders:
            self._placeholders[key] = Inert.make(str(module), str(name))
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise pickle.UnpicklingError("unsupported persistent id")
        typename, storage_type, key, _location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii")
        if typename != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unsupported persistent id")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("malformed storage record")
        return self._storage_loader(key, storage_type.dtype, numel)


# ---- the archive -------------------------------------------------------------------------------------------


class TorchArchive:
    """An open ``torch.save`` zip archive. ``load()`` unpickles its object with LazyTensors in place of
    tensors; LazyTensor.materialize() works while the archive is open (use ``open_torch_archive``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(
                f"{self.path}: not a readable PyTorch checkpoint ({_first_line(e)})"
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
        self._storages: dict[str, _Storage] = {}

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
                f"{self.path}: unreadable checkpoint ({type(e).__name__}: {_first_line(e)})"
            ) from None

    def _storage(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = _Storage(self, key, dtype, numel)
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
                f"{self.path}: corrupt tensor data record {key!r} ({_first_line(e)})"
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


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """A safe ``torch.load(path, map_location="cpu")``: tensors are real, unknown objects are Inert."""
    with open_torch_archive(path) as archive:
        return materialize(archive.load())


# ---- inert data --------------------------------------------------------------------------------------------


def to_plain(obj: Any) -> Any:
    """Turn an unpickled value into plain data: dict / list / str / numbers / bool / None / bytes.

    OmegaConf containers and nodes (state with ``_content`` / ``_val``) become the dicts, lists and values
    they hold; other placeholders become ``{"__class__": "module.name", "args": ..., "state": ...}``; placeholder
    classes become their dotted name; tensors become a short description string; cycles become "<cycle>".
    """
    return _plain(obj, ())


def _plain(obj: Any, stack: tuple[int, ...]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, (LazyTensor, Tensor)):
        return f"<tensor {str(obj.dtype).removeprefix('torch.')} {tuple(obj.shape)}>"
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, type) and issubclass(obj, Inert):
        return obj.qualname()
    if id(obj) in stack:
        return "<cycle>"
    if len(stack) > 64:
        return "<nested too deeply>"
    inner = (*stack, id(obj))
    if isinstance(obj, dict):
        return {_plain_key(k): _plain(v, inner) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, inner) for v in obj]
    if isinstance(obj, Inert):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] if isinstance(state[0], dict) else {}), **state[1]}  # (__dict__, slots)
        if isinstance(state, dict) and "_content" in state:  # omegaconf DictConfig / ListConfig
            return _plain(state["_content"], inner)
        if isinstance(state, dict) and "_val" in state:  # omegaconf value node
            return _plain(state["_val"], inner)
        if obj.items and not obj.args and state is None:
            return {_plain_key(k): _plain(v, inner) for k, v in obj.items.items()}
        if obj.list_items and not obj.args and state is None:
            return [_plain(v, inner) for v in obj.list_items]
        out: dict[str, Any] = {"__class__": type(obj).qualname()}
        if obj.args:
            out["args"] = [_plain(a, inner) for a in obj.args]
        if obj.kwargs:
            out["kwargs"] = {str(k): _plain(v, inner) for k, v in obj.kwargs.items()}
        if state is not None:
            out["state"] = _plain(state, inner)
        return out
    return repr(obj)


def _plain_key(key: Any) -> Any:
    return key if key is None or isinstance(key, (bool, int, float, str)) else str(_plain(key, ()))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
