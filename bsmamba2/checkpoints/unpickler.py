"""A restricted unpickler for PyTorch checkpoints: no pickled code ever runs.

A pickle is a small program: its GLOBAL opcodes name any importable callable and its REDUCE / NEWOBJ / BUILD
opcodes call it. ``torch.load(weights_only=False)`` therefore runs whatever a checkpoint asks for. Here every
global goes through ``RestrictedUnpickler.find_class``, which hands out only

- plain containers and scalars (dict, list, tuple, set, OrderedDict, int, float, str, bytes, ...),
- torch dtypes, ``torch.Size``, ``torch.device``,
- our own stand-ins for torch's tensor-rebuild functions, which return a ``LazyTensor`` (dtype, shape,
  strides and where the bytes are) instead of running torch's versions;

and turns every other class or function into an inert placeholder class: calling it, building it or setting
its state only records the arguments (``inert.Inert``). Nothing is imported. So an OmegaConf ``DictConfig`` in
a Lightning checkpoint's ``hyper_parameters`` comes back as data (``inert.to_plain``) without omegaconf
installed, and a ``__reduce__`` payload (``os.system``, ``builtins.exec``, ...) comes back as a placeholder
that never ran. The pickled tensor calls (``torch._utils._rebuild_tensor_v2`` / ``_v3``,
``_rebuild_parameter``, ``torch._tensor._rebuild_from_type_v2``) are the same from torch 2.4 through 2.13.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import pickle
import types
from collections.abc import Callable
from typing import Any

import torch

from bsmamba2.checkpoints.inert import Inert
from bsmamba2.checkpoints.lazy_tensor import LazyTensor, Storage

# ---- storages and tensors ----------------------------------------------------------------------------------

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


def _tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> tuple[Storage, int, tuple, tuple]:
    if not isinstance(storage, Storage):
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


# ---- other globals a checkpoint may name -------------------------------------------------------------------


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


# ---- the unpickler -----------------------------------------------------------------------------------------


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
