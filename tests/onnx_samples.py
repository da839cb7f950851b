"""A small model and its ONNX export, made once per test session and shared by the tests/test_onnx_*.py files.

Exporting costs seconds even for a tiny graph (torch.export traces and decomposes it), so the small model has
three bands, one dual-path layer and two stems; the export goes through ``bsmamba2 export`` itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bsmamba2 import cli
from bsmamba2.checkpoints import load_model, save_model
from bsmamba2.config import ModelConfig
from bsmamba2.model import build_model
from bsmamba2.model.separator_net import BandSplitSeparator

# 33 bins in 3 bands, SSD chunks of 8 frames (so a few frames already span several chunks)
SMALL_CFG = ModelConfig.tiny(
    n_fft=64, hop_length=16, band_widths=(4, 12, 17), stems=("vocals", "drums"), mamba2={"chunk_size": 8}
)

_made: dict[str, tuple[Path, Path]] = {}


def small_files(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.safetensors, model.onnx) of a seeded random ``SMALL_CFG`` model, exported by the CLI."""
    if "small" not in _made:
        folder = factory.mktemp("onnx_small")
        torch.manual_seed(0)
        weights = save_model(build_model(SMALL_CFG), folder / "small.safetensors")
        out = folder / "small.onnx"
        assert cli.main(["export", str(weights), "-o", str(out)]) == 0
        _made["small"] = (weights, out)
    return _made["small"]


def reference(weights: Path) -> BandSplitSeparator:
    """The torch model of a weights file on the plain-PyTorch reference SSD."""
    return load_model(weights, backend="chunked")
