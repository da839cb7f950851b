"""int8 exports (``bsmamba2.onnx.quantize``, ``bsmamba2 export --int8``): weight MatMuls become int8, the SSD's
activation products stay float, the metadata survives, and the stems stay near the fp32 graph's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from onnx_samples import small_files

from bsmamba2 import cli
from bsmamba2.onnx.quantize import quantize_int8
from bsmamba2.onnx.runtime import OnnxModel


def ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_int8_keeps_metadata_and_stays_near_fp32(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    _, fp32 = small_files(tmp_path_factory)
    q = quantize_int8(fp32, tmp_path / "small.int8.onnx")
    got, fp32_ops = ops(q), ops(fp32)
    assert "MatMulInteger" in got
    # only weight products are quantised: some float MatMuls (C·Bᵀ and the SSD's other products) remain
    assert 0 < got.count("MatMul") < fp32_ops.count("MatMul")
    a, b = OnnxModel(fp32), OnnxModel(q)
    assert b.metadata == a.metadata and b.cfg == a.cfg
    wave = 0.1 * torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(1))
    want, out = a(wave), b(wave)
    assert out.shape == want.shape
    rel = float((out - want).norm() / want.norm())
    assert 0 < rel < 0.1, rel  # int8 differs from fp32, but not by much
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_cli_int8_writes_a_checked_then_quantised_file(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    replay_onnx_trace: Callable[[Path], list[dict[str, object]]],
) -> None:
    """The fp32 graph is checked against torch (the real check, on the small model's weights), then quantised;
    the trace is replayed from the small model's export, which test_metadata_and_signature and the graph tests
    cover."""
    weights, exported = small_files(tmp_path_factory)
    traces = replay_onnx_trace(exported)
    out = tmp_path / "m.onnx"
    with caplog.at_level(logging.INFO, logger="bsmamba2.onnx.exporter"):
        assert cli.main(["export", str(weights), "-o", str(out), "--int8"]) == 0
    assert len(traces) == 1 and "checked against torch" in caplog.text
    assert "MatMulInteger" in ops(out)
    assert OnnxModel(out).cfg.stems == ("vocals", "drums")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no fp32 or temp file left beside it
