"""The ONNX Runtime engine behind ``Separator``: same outputs as the torch engine, and one-line errors for files
it cannot run (corrupt, foreign, newer, mismatched) and for a missing onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_samples import reference, small_files

from bsmamba2.api import Separator
from bsmamba2.apply import model_device
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.onnx import runtime
from bsmamba2.onnx.runtime import OnnxModel


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return small_files(tmp_path_factory)


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def identity_model(path: Path, meta: dict[str, str] | None = None) -> Path:
    """A valid ONNX file that is not a bsmamba2 export: y = x."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    helper.set_model_props(proto, meta or {})
    onnx.save(proto, str(path))
    return path


def with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.update(changes)
    del proto.metadata_props[:]
    helper.set_model_props(proto, meta)
    onnx.save(proto, str(dst))
    return dst


# ---- through Separator ---------------------------------------------------------------------------------


def test_onnx_path_picks_the_onnx_engine_and_matches_torch(files: tuple[Path, Path]) -> None:
    weights, exported = files
    mix = np.random.default_rng(0).standard_normal((2, 20000)).astype(np.float32) * 0.3
    kw = dict(device="cpu", segment=0.1, overlap=0.5, batch_size=3)
    onnx_sep = Separator.from_pretrained(exported, **kw)  # engine "auto": .onnx -> onnx
    torch_sep = Separator.from_pretrained(weights, precision="fp32", backend="torch", **kw)
    assert isinstance(onnx_sep.model, OnnxModel) and onnx_sep.dtype is None
    assert onnx_sep.stems == torch_sep.stems == ("vocals", "drums")
    got, want = onnx_sep.separate(mix, 44100), torch_sep.separate(mix, 44100)
    for name in want:
        scale = want[name].abs().max()
        assert float((got[name] - want[name]).abs().max() / scale) <= 1e-4


def test_engine_choices_and_their_errors(files: tuple[Path, Path]) -> None:
    weights, exported = files
    assert isinstance(Separator.from_pretrained(exported, device="cpu", engine="onnx").model, OnnxModel)
    with pytest.raises(UserError, match="unknown engine"):
        Separator.from_pretrained(exported, engine="tensorrt")
    with pytest.raises(UserError, match="bsmamba2 export"):
        Separator.from_pretrained(None, device="cpu", engine="onnx")
    with pytest.raises(UserError, match="precision bf16"):
        Separator.from_pretrained(exported, device="cpu", precision="bf16")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        Separator.from_pretrained(weights, device="cpu", engine="onnx")  # a safetensors file


def test_module_interface(files: tuple[Path, Path]) -> None:
    weights, exported = files
    engine = OnnxModel(exported)
    assert engine.cfg == reference(weights).cfg and engine.stems == ("vocals", "drums")
    assert model_device(engine.to("cpu")) == torch.device("cpu")
    assert engine.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="expected a waveform"):
        engine(torch.zeros(1, 1, 100))


# ---- files it cannot run ----------------------------------------------------------------------------


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError) as e:
        OnnxModel(bad)
    assert "not a readable ONNX model" in one_line(e)


def test_truncated_export(files: tuple[Path, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(files[1].read_bytes()[:20000])
    with pytest.raises(CheckpointError) as e:
        OnnxModel(cut)
    assert str(cut) in one_line(e)


def test_foreign_onnx(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        OnnxModel(identity_model(tmp_path / "other.onnx"))
    assert "not a bsmamba2 export" in one_line(e)


def test_foreign_graph_with_our_metadata(files: tuple[Path, Path], tmp_path: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(files[1])).metadata_props}
    with pytest.raises(CheckpointError) as e:
        OnnxModel(identity_model(tmp_path / "fake.onnx", meta))
    assert "inputs/outputs" in one_line(e)


def test_newer_format_version(files: tuple[Path, Path], tmp_path: Path) -> None:
    newer = with_metadata(files[1], tmp_path / "newer.onnx", format_version="99")
    with pytest.raises(CheckpointError) as e:
        OnnxModel(newer)
    assert "newer" in one_line(e)


def test_damaged_config(files: tuple[Path, Path], tmp_path: Path) -> None:
    damaged = with_metadata(files[1], tmp_path / "damaged.onnx", config='{"dim": -1}')
    with pytest.raises(CheckpointError) as e:
        OnnxModel(damaged)
    assert "damaged bsmamba2 export metadata" in one_line(e)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model file"):
        OnnxModel(tmp_path / "nothing.onnx")
    with pytest.raises(CheckpointError, match="is a folder"):
        OnnxModel(tmp_path)


def test_missing_onnxruntime_names_the_extra(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "ort", None)
    with pytest.raises(UserError) as e:
        Separator.from_pretrained(files[1], device="cpu")
    assert "pip install 'bsmamba2[onnx]'" in one_line(e)


def test_sessions_free_tensors_after_their_last_use(files: tuple[Path, Path]) -> None:
    """Buffer reuse across same-shaped tensors holds a whole layer's buffers (2.7x the peak RSS of the paper
    config, BENCHMARKS.md): the engine's sessions run without it."""
    _, onnx_file = files
    assert OnnxModel(onnx_file).session.get_session_options().enable_mem_reuse is False
