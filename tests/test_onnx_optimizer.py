"""The exporter's optimisation (``bsmamba2.onnx.optimizer``) writes the graph torch.onnx.export(optimize=True)
writes, while the multi-output rewrite rules turn nodes away before their graph-wide search; the nodes the
pattern can start at still reach the library's matcher, and its matchers are put back afterwards."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper
from onnxscript import rewriter
from torch import nn

from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.checkpoints import load_model
from bsmamba2.onnx import optimizer
from bsmamba2.onnx.exporter import _quiet_exporter, example_input, export_onnx, prepare
from bsmamba2.onnx.graph import INPUT, OUTPUT, metadata
from bsmamba2.onnx.optimizer import first_node_first, optimize


def _two_slices() -> ir.Model:
    """y0, y1 = x[:, :4], x[:, 4:] as two Slices of one input (the rule's pattern), then a node of another op."""
    ints = {
        n: helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("b0", 0), ("m", 4), ("e1", 8))
    }
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    nodes = [
        helper.make_node("Slice", ["x", "b0", "m", "axes"], ["y0"]),
        helper.make_node("Slice", ["x", "m", "e1", "axes"], ["y1"]),
        helper.make_node("Add", ["y0", "y1"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_slices",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])],
        initializer=[*ints.values(), axes],
    )
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def test_same_rewrites_as_the_library_on_a_slice_pair() -> None:
    """Only the nodes the pattern cannot start at are turned away; the Slices reach the library's matcher."""
    ours = torch.onnx.ONNXProgram(_two_slices(), None)
    with first_node_first() as wrappers:
        ours.optimize()
    library = torch.onnx.ONNXProgram(_two_slices(), None)
    library.optimize()  # what torch.onnx.export(optimize=True) runs
    assert ir.serde.serialize_model(ours.model) == ir.serde.serialize_model(library.model)
    assert wrappers and sum(w.refused for w in wrappers) > 0  # the Add, at least
    assert sum(w.passed for w in wrappers) >= 2  # both Slices, in every rewrite pass


def test_library_matchers_are_put_back() -> None:
    before = [r._matcher for r in rewriter._DEFAULT_REWRITE_RULES]
    with pytest.raises(RuntimeError), first_node_first() as wrappers:
        assert wrappers and all(
            any(r._matcher is w for r in rewriter._DEFAULT_REWRITE_RULES) for w in wrappers
        )
        raise RuntimeError("an optimiser pass failed")
    assert [r._matcher for r in rewriter._DEFAULT_REWRITE_RULES] == before


class _Halves(nn.Module):
    """A few ops with Slices of one tensor on its last axis (what the multi-output rule looks for)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, t, 8) -> (b, t, 8)
        y = self.proj(x)
        return torch.cat([y[..., :4] * y[..., 4:], y[..., 4:].exp()], dim=-1)


def _export(module: nn.Module, *, optimize: bool) -> torch.onnx.ONNXProgram:
    """``module`` exported as export_onnx calls the exporter: dynamo, batch and length dynamic, names given."""
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    dims = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("frames")}}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            opset_version=18,
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes=dims,
            optimize=optimize,
            verbose=False,
        )
    assert program is not None
    return program


def _proto(program: torch.onnx.ONNXProgram) -> bytes:
    return ir.serde.serialize_model(program.model).SerializeToString()


def test_same_graph_as_torch_onnx_export_optimize() -> None:
    """optimize=False, then :func:`optimize` (the exporter's order: inputs renamed first) gives the graph of
    ``torch.onnx.export(optimize=True)``, byte for byte."""
    torch.manual_seed(0)
    module = _Halves().eval()
    ours = _export(module, optimize=False)
    assert "Slice" in {n.op_type for n in ours.model.graph}
    optimize(ours)
    assert _proto(ours) == _proto(_export(module, optimize=True))


@pytest.mark.fullsize
def test_bundled_model_file_is_the_library_pass_file(tmp_path: Path) -> None:
    """The bundled model's file from export_onnx is byte for byte the file of ``torch.onnx.export(optimize=True)``
    (the graph where the quadratic matcher cost ~100 s). Two full exports: run by hand, ``pytest -m fullsize``."""
    model = load_model(DEFAULT_MODEL, device="cpu", backend="chunked")
    ours = export_onnx(model, tmp_path / "ours.onnx", check=False)
    dims = {INPUT: {0: torch.export.Dim("batch"), 3: torch.export.Dim("frames")}}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            prepare(model),
            (example_input(model),),
            dynamo=True,
            opset_version=18,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=dims,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    program.model.metadata_props.update(metadata(model.cfg))
    program.save(tmp_path / "library.onnx", external_data=False)
    assert ours.read_bytes() == (tmp_path / "library.onnx").read_bytes()


def test_optimize_replaces_the_program_model() -> None:
    program = torch.onnx.ONNXProgram(_two_slices(), None)
    library = torch.onnx.ONNXProgram(_two_slices(), None)
    library.optimize()
    optimize(program)
    assert ir.serde.serialize_model(program.model) == ir.serde.serialize_model(library.model)
    assert _ops(program.model)[-1] == "Add"


def test_another_onnxscript_layout_runs_the_library_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def other_layout() -> None:
        raise AttributeError("'RewriteRule' object has no attribute '_matcher'")

    monkeypatch.setattr(optimizer, "_multi_output_rules", other_layout)
    with first_node_first() as wrappers:
        assert wrappers == []
    program, library = (torch.onnx.ONNXProgram(_two_slices(), None) for _ in range(2))
    optimize(program)
    library.optimize()
    assert ir.serde.serialize_model(program.model) == ir.serde.serialize_model(library.model)
