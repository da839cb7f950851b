"""The exported graph reproduces the torch model (fp32, several frame counts and batch sizes), carries its
metadata, and the exporter's guards (Triton switch, self-check, opset, missing packages) work."""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx_samples import SMALL_CFG, reference, small_files

from bsmamba2.config import ModelConfig
from bsmamba2.errors import UserError
from bsmamba2.model import build_model
from bsmamba2.model.mixers.mamba2 import Mamba2
from bsmamba2.model.mixers.ssd_export import BACKEND
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.onnx.exporter import ExportError, check_export, example_input, export_onnx, prepare
from bsmamba2.onnx.graph import FORMAT, FORMAT_VERSION
from bsmamba2.onnx.runtime import OnnxModel


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[BandSplitSeparator, OnnxModel]:
    weights, exported = small_files(tmp_path_factory)
    return reference(weights), OnnxModel(exported)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def spec_of(model: BandSplitSeparator, X: torch.Tensor) -> torch.Tensor:
    """The torch model's own spectrogram path, as real/imag parts: (b, c, f, t) -> (b, s, c, f, t, 2)."""
    with torch.no_grad():
        return torch.view_as_real(model.forward_spec(X))


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 21, 40, 57])  # chunk 8: below, at, off and on its multiples
@pytest.mark.parametrize("batch", [1, 3])
def test_graph_matches_torch(small: tuple[BandSplitSeparator, OnnxModel], frames: int, batch: int) -> None:
    model, engine = small
    gen = torch.Generator().manual_seed(frames * 10 + batch)
    X = torch.randn(batch, 2, SMALL_CFG.n_bins, frames, dtype=torch.complex64, generator=gen)
    got = engine.run_spec(torch.view_as_real(X))
    assert got.shape == (batch, 2, 2, SMALL_CFG.n_bins, frames, 2)
    assert rel_err(got, spec_of(model, X)) <= 1e-4


@pytest.mark.parametrize("samples", [10, 33, 1000, 4321])  # 10: shorter than the STFT needs (padded)
def test_waveform_engine_matches_torch(small: tuple[BandSplitSeparator, OnnxModel], samples: int) -> None:
    model, engine = small
    wave = torch.randn(2, 2, samples, generator=torch.Generator().manual_seed(samples))
    with torch.no_grad():
        want = model(wave)
    got = engine(wave)
    assert got.shape == want.shape == (2, 2, 2, samples)
    assert rel_err(got, want) <= 1e-4


def test_metadata_and_signature(tmp_path_factory: pytest.TempPathFactory) -> None:
    _, exported = small_files(tmp_path_factory)
    proto = onnx.load(str(exported))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["format"] == FORMAT and int(meta["format_version"]) == FORMAT_VERSION
    assert ModelConfig.from_json(meta["config"]) == SMALL_CFG
    assert json.loads(meta["stems"]) == ["vocals", "drums"]
    assert int(meta["sample_rate"]) == 44100 and int(meta["audio_channels"]) == 2
    stft = json.loads(meta["stft"])
    assert (stft["n_fft"], stft["hop_length"], stft["window"], stft["center"]) == (64, 16, "hann", True)
    assert meta["source"] == "small.safetensors"
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims][1:3] == [2, 33]
    assert dims[0].dim_param and dims[3].dim_param  # batch and frames are symbolic


def test_prepare_switches_triton_on_a_copy(caplog: pytest.LogCaptureFixture) -> None:
    model = build_model(SMALL_CFG, backend="triton")
    with caplog.at_level(logging.INFO, logger="bsmamba2.onnx.exporter"):
        core = prepare(model)
    assert "Triton kernels cannot be exported" in caplog.text
    assert core.model.backend == BACKEND
    assert all(
        m.scan is core.model.layers[0][0].forward_blocks[0].mixer.scan
        for m in core.modules()
        if isinstance(m, Mamba2)
    )
    assert model.backend == "triton"  # the caller's model is untouched


def test_self_check_catches_a_graph_that_differs(
    small: tuple[BandSplitSeparator, OnnxModel],
) -> None:
    model, engine = small
    assert check_export(engine.path, prepare(model)) <= 1e-4
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.final_norm.gamma.mul_(1.5)
    with pytest.raises(ExportError, match="differs from torch"):
        check_export(engine.path, prepare(other))


def test_example_input_is_off_the_chunk_grid() -> None:
    x = example_input(build_model(SMALL_CFG))
    assert x.shape[3] > 2 * SMALL_CFG.mamba2.chunk_size and x.shape[3] % SMALL_CFG.mamba2.chunk_size


def test_refuses_old_opset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="opset"):
        export_onnx(build_model(SMALL_CFG), tmp_path / "m.onnx", opset=17)
    assert not (tmp_path / "m.onnx").exists()


def test_missing_exporter_packages_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"pip install 'bsmamba2\[onnx\]'"):
        export_onnx(build_model(SMALL_CFG), tmp_path / "m.onnx")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frames", "batch"), [(5, 1), (67, 2)]
)  # within one chunk of 64; past it, off the grid
def test_paper_layout_exports_and_runs(
    paper_layout_export: tuple[Path, Path], frames: int, batch: int
) -> None:
    """The authors' layout (62 bands, STFT 2048/441, stereo folding, the official module structure) exports and
    runs in ONNX Runtime like torch. Scaled down (conftest.PAPER_LAYOUT_SMALL: the paper preset with dim 16 and
    two layers, so every op type of the full model and the traced layer loop) to keep ``make test`` short; the
    full-size model is ``test_paper_config_exports_and_runs_full_size`` (``pytest -m fullsize``)."""
    weights, exported = paper_layout_export
    model, engine = reference(weights), OnnxModel(exported)
    cfg, paper = model.cfg, ModelConfig.paper()
    assert cfg.depth >= 2 and len(cfg.band_widths) == 62 and (cfg.n_fft, cfg.hop_length) == (2048, 441)
    sizes = {
        "dim": paper.dim,
        "depth": paper.depth,
        "mamba2": paper.mamba2,
        "mask_mlp_mult": paper.mask_mlp_mult,
    }
    assert cfg.replace(**sizes) == paper  # only the sizes differ from the authors' model
    assert engine.cfg == cfg
    gen = torch.Generator().manual_seed(frames)
    X = torch.randn(batch, 2, cfg.n_bins, frames, dtype=torch.complex64, generator=gen)
    assert rel_err(engine.run_spec(torch.view_as_real(X)), spec_of(model, X)) <= 1e-4


@pytest.mark.fullsize
def test_paper_config_exports_and_runs_full_size(tmp_path: Path) -> None:
    """The authors' configuration at full size (48M parameters, random weights) exports and runs in ONNX Runtime.

    Minutes of export (the cost follows the op count, not the FLOPs), so not part of ``make test``: run it by
    hand with ``pytest -m fullsize tests/test_onnx_export.py``. ``make test`` runs the same layout scaled down
    (test_paper_layout_exports_and_runs)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.paper(), backend="chunked").eval()
    path = export_onnx(model, tmp_path / "paper.onnx", check=False)  # checked below, on 5 frames
    X = torch.randn(
        1, 2, model.cfg.n_bins, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)
    )
    assert rel_err(OnnxModel(path).run_spec(torch.view_as_real(X)), spec_of(model, X)) <= 1e-4
