"""configio: one coercer from plain mappings to frozen dataclasses, nested sections included."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bsmamba2.configio import (
    ConfigError,
    check_keys,
    coerce,
    coerce_fields,
    coerce_mapping,
    from_mapping,
    plain,
)
from bsmamba2.errors import UserError


@dataclass(frozen=True)
class Inner:
    n: int = 1
    rate: float = 0.5


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.0, 1.0)
    limit: float | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        coerce_fields(self, "outer")


def test_values_are_coerced_to_their_annotations() -> None:
    assert coerce("5e-4", float, "a") == 5e-4  # PyYAML reads 5e-4 without a dot as a string
    assert coerce(3.0, int, "a") == 3 and isinstance(coerce(3.0, int, "a"), int)
    assert coerce([1, "2"], tuple[int, ...], "a") == (1, 2)
    assert coerce(None, float | None, "a") is None and coerce("1", float | None, "a") == 1.0
    assert coerce(7, str, "a") == "7"
    for value, tp, message in [
        (True, int, "a must be an integer"),
        (2.5, int, "a must be an integer"),
        ("yes", bool, "a must be true or false"),
        ([1], tuple[float, float], "a must have 2 items"),
        ("x", tuple[int, ...], "a must be a list"),
        ("x", float | None, "a must be a number"),
        ([], dict[str, int], "a must be a mapping"),
    ]:
        with pytest.raises(ConfigError, match=message):
            coerce(value, tp, "a")


def test_nested_sections() -> None:
    out = from_mapping(Outer, {"sizes": [3], "inner": {"n": "4"}}, "outer")
    assert out == Outer(sizes=(3,), inner=Inner(n=4))
    assert from_mapping(Outer, {"inner": Inner(n=2)}).inner == Inner(n=2)  # built sections pass through
    partial = coerce_mapping(Outer, {"flag": True, "inner": {"rate": "1"}}, "outer", build=False)
    assert partial == {"flag": True, "inner": {"rate": 1.0}}  # only the keys given, for merging onto a base
    with pytest.raises(
        ConfigError, match="unknown config key 'outer.inner.m' \\(outer.inner accepts: n, rate\\)"
    ):
        from_mapping(Outer, {"inner": {"m": 1}}, "outer")
    with pytest.raises(ConfigError, match="outer.inner must be a mapping, got 3"):
        from_mapping(Outer, {"inner": 3}, "outer")
    with pytest.raises(ConfigError, match="outer.inner.n must be an integer"):
        from_mapping(Outer, {"inner": {"n": "four"}}, "outer")


def test_post_init_coercion_and_keys() -> None:
    assert Outer(limit="2", pair=[1, 2]) == Outer(limit=2.0, pair=(1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="outer.flag must be true or false"):
        Outer(flag="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown config key 'nme' \\(the top level accepts: name, sizes"):
        check_keys(Outer, {"nme": 1}, "")
    check_keys(Outer, {"preset": 1}, "", also=("preset",))


def test_errors_are_user_errors_and_value_errors() -> None:
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_plain() -> None:
    assert plain({"a": (1, (2, 3)), "b": [4]}) == {"a": [1, [2, 3]], "b": [4]}
