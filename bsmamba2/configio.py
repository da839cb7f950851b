"""Frozen config dataclasses from plain mappings (YAML, JSON, ``key=value`` overrides).

One coercer for every config class (``ModelConfig`` and its mixer sections, ``TrainConfig`` and its
sections): keys are checked against the dataclass's fields, values against their annotations, and a nested
dataclass field is read from a nested mapping. A mismatch is a one-line ``ConfigError`` naming the dotted
path (``model.mamba2.d_state``) and what that section accepts.

Nothing here knows a particular config class, so every config module can import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from bsmamba2.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config key or value that does not fit. Also a ValueError, which is what a config's own validation
    raises, so callers that load configs catch both as one."""


def field_names(cls: type) -> list[str]:
    """The fields of dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(cls: type, d: Mapping[str, Any], section: str, *, also: Collection[str] = ()) -> None:
    """ConfigError for the first key of ``d`` that is not a field of ``cls`` (or in ``also``)."""
    known = [*also, *field_names(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        where = f"{section}." if section else ""
        accepts = f"{section or 'the top level'} accepts: {', '.join(known)}"
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' ({accepts})")


def coerce_mapping(cls: type, d: Mapping[str, Any], section: str, *, build: bool = True) -> dict[str, Any]:
    """Check ``d``'s keys against dataclass ``cls`` and coerce its values to the field annotations.

    A dataclass-typed field given as a mapping is coerced the same way, one level down: into an instance
    (``build=True``) or into a dict of only the keys given (``build=False``, for merging onto a preset).
    """
    check_keys(cls, d, section)
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in d.items():
        path = f"{section}.{name}" if section else name
        tp = hints[name]
        if _is_dataclass_type(tp) and isinstance(value, Mapping) and not build:
            out[name] = coerce_mapping(tp, value, path, build=False)
        else:
            out[name] = coerce(value, tp, path)
    return out


def from_mapping(cls: type[T], d: Mapping[str, Any], section: str = "") -> T:
    """An instance of dataclass ``cls`` from ``d`` (fields left out keep their defaults)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section {section!r} must be a mapping, got {d!r}")
    return cls(**coerce_mapping(cls, d, section))


def coerce_fields(obj: Any, section: str) -> None:
    """Coerce a frozen dataclass's fields to their annotated types in place (YAML gives lists, '5e-4', ...).

    Fields holding a dataclass instance (a nested section, already built) are left alone."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        path = f"{section}.{f.name}" if section else f.name
        object.__setattr__(obj, f.name, coerce(value, hints[f.name], path))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert one value against a type annotation; a mismatch is a one-line ``ConfigError``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, path)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_mapping(tp, value, path)
        raise ConfigError(f"{path} must be a mapping, got {value!r}")
    if origin is tuple:
        return _coerce_tuple(value, args, path)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if tp is int:
        return _coerce_int(value, path)
    if tp is float:
        return _coerce_float(value, path)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def plain(value: Any) -> Any:
    """Tuples (and lists) become lists, recursively, as YAML and JSON write them."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


# ---- one annotation kind each ---------------------------------------------------------------------------------
def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce_union(value: Any, args: tuple[Any, ...], path: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, path)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{path} must have {len(args)} items, got {len(value)}")
    return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _coerce_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise ConfigError(f"{path} must be an integer, got {value!r}")


def _coerce_float(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # PyYAML reads "5e-4" (no dot) as a string
        except ValueError:
            pass
    raise ConfigError(f"{path} must be a number, got {value!r}")
