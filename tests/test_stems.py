"""Output names and the residual (bsmamba2.stems)."""

from __future__ import annotations

import numpy as np

from bsmamba2.stems import add_residual, output_names, residual_name


def test_names() -> None:
    assert residual_name(("vocals",)) == "instrumental"
    assert residual_name(("drums",)) == "no_drums"
    assert residual_name(("vocals", "drums")) is None
    assert output_names(("vocals",)) == ("vocals", "instrumental")
    assert output_names(("a", "b")) == ("a", "b")


def test_add_residual() -> None:
    mix = np.array([[1.0, 2.0]], np.float32)
    v = np.array([[0.25, 0.5]], np.float32)
    out = add_residual(mix, {"vocals": v}, ("vocals",))
    np.testing.assert_array_equal(out["instrumental"], mix - v)
    kept = np.zeros_like(mix)
    assert add_residual(mix, {"vocals": v, "instrumental": kept}, ("vocals",))["instrumental"] is kept
    assert add_residual(mix, {"a": v, "b": v}, ("a", "b")) == {"a": v, "b": v}
