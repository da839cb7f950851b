"""Inert placeholders for the classes and functions a checkpoint names, and their reading as plain data.

The restricted unpickler hands out an :class:`Inert` subclass for every global it does not know: calling it,
building it or setting its state only records the arguments. :func:`to_plain` then reads such objects (an
OmegaConf ``DictConfig`` in a Lightning checkpoint's ``hyper_parameters``, say) as dicts, lists and values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bsmamba2.checkpoints.lazy_tensor import LazyTensor


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
        return _plain_inert(obj, inner)
    return repr(obj)


def _plain_inert(obj: Inert, inner: tuple[int, ...]) -> Any:
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


def _plain_key(key: Any) -> Any:
    return key if key is None or isinstance(key, (bool, int, float, str)) else str(_plain(key, ()))
