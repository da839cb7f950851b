"""The chunk engine (bsmamba2.apply): exactness with an identity model, the paper's plain concatenation,
batching, block streaming, progress reports and failure modes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import ScaleModel
from torch import nn

from bsmamba2 import apply
from bsmamba2.apply import OverlapAdd, apply_model, chunk_stride, chunk_window, num_chunks
from bsmamba2.errors import UserError


@pytest.fixture(autouse=True)
def whole_batches_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests count the chunks of every batch through the model's calls: one call per batch."""
    monkeypatch.setattr(apply, "CPU_CHUNKS_PER_CALL", 1 << 20)


def test_cpu_batches_go_through_the_model_a_few_chunks_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply, "CPU_CHUNKS_PER_CALL", 2)
    model, x = ScaleModel((0.5,)), torch.randn(2, 1000)
    y = apply_model(model, x, segment=100, overlap=0.0, batch_size=5)
    assert [c[0] for c in model.calls] == [2, 2, 1] * 2  # 10 chunks: two batches of 5, each in 3 calls
    torch.testing.assert_close(y[0], 0.5 * x)


class ChunkMeanModel(nn.Module):
    """Output depends on the whole chunk (x - its mean): exposes any chunking / padding difference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=-1, keepdim=True))[:, None]


def test_identity_is_exact_for_random_layouts(identity_model: ScaleModel) -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 2500))
        seg = int(rng.integers(1, 400))
        overlap = 0.0 if trial % 3 == 0 else float(rng.uniform(0, 0.95))
        transition = "linear" if trial % 2 else "none"
        x = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32))
        y = apply_model(
            identity_model,
            x,
            segment=seg,
            overlap=overlap,
            batch_size=int(rng.integers(1, 5)),
            transition=transition,
        )
        assert y.shape == (1, 2, n)
        torch.testing.assert_close(y[0], x, rtol=0, atol=2e-6, msg=f"n={n} seg={seg} overlap={overlap}")


def test_shorter_than_one_chunk_is_zero_padded(identity_model: ScaleModel) -> None:
    x = torch.randn(2, 37)
    y = apply_model(identity_model, x, segment=100, overlap=0.5)
    assert identity_model.calls == [(1, 2, 100)]
    torch.testing.assert_close(y[0], x, rtol=0, atol=1e-6)


def test_no_overlap_is_the_papers_plain_concatenation() -> None:
    torch.manual_seed(0)
    n, seg = 1000, 300
    x = torch.randn(2, n)
    y = apply_model(ChunkMeanModel(), x, segment=seg, overlap=0.0, batch_size=3)
    # OFFICIAL_SPEC §7: zero-pad to a multiple of the chunk, run chunks independently, concatenate, trim.
    padded = torch.nn.functional.pad(x, (0, seg - n % seg))
    chunks = padded.unfold(-1, seg, seg)  # (C, K, seg)
    ref = (chunks - chunks.mean(-1, keepdim=True)).reshape(2, -1)[:, :n]
    torch.testing.assert_close(y[0], ref)


def test_chunks_are_batched() -> None:
    model = ScaleModel((1.0, 2.0))
    x = torch.randn(2, 1000)
    y = apply_model(model, x, segment=100, overlap=0.5, batch_size=4)
    assert num_chunks(1000, 100, chunk_stride(100, 0.5)) == 19
    assert [c[0] for c in model.calls] == [4, 4, 4, 4, 3]
    torch.testing.assert_close(y[1], 2 * x)


def test_linear_windows_cross_fade_to_a_constant() -> None:
    seg, stride = 100, 50
    w = chunk_window(seg, stride, "linear")
    assert (w > 0).all() and w.max() <= 1
    total = torch.zeros(400)
    for s in range(0, 300, stride):
        total[s : s + seg] += w
    interior = total[seg:300]
    torch.testing.assert_close(interior, torch.full_like(interior, interior[0].item()))


def test_streaming_matches_in_memory() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 3000)).astype(np.float32))
    for overlap in (0.0, 0.25, 0.5):
        ref = apply_model(ChunkMeanModel(), x, segment=256, overlap=overlap, batch_size=2)
        engine = OverlapAdd(ChunkMeanModel(), segment=256, overlap=overlap, batch_size=2)
        pieces, i = [], 0
        while i < x.shape[-1]:
            k = int(rng.integers(1, 700))
            pieces.append(engine.push(x[:, i : i + k]))
            i += k
        pieces.append(engine.finish())
        out = torch.cat([p for p in pieces if p is not None], dim=-1)
        assert torch.equal(out, ref)


def test_kept_on_device_gives_the_same_output_and_checks_nan_at_the_end() -> None:
    """keep_on_device() (separate_file on CUDA) changes where the sums live and when finiteness is checked,
    not the result; a NaN output still fails the signal, in finish() instead of the batch's push()."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.standard_normal((2, 3000)).astype(np.float32))
    ref = apply_model(ChunkMeanModel(), x, segment=256, overlap=0.25, batch_size=2)
    engine = OverlapAdd(ChunkMeanModel(), segment=256, overlap=0.25, batch_size=2).keep_on_device()
    pieces = [engine.push(x[:, :1234]), engine.push(x[:, 1234:]), engine.finish()]
    assert torch.equal(torch.cat([p for p in pieces if p is not None], dim=-1), ref)

    class NanLater(ChunkMeanModel):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            y = super().forward(x)
            return y * float("nan") if self.calls == 2 else y

    engine = OverlapAdd(NanLater(), segment=256, overlap=0.25, batch_size=2).keep_on_device()
    engine.push(x)  # the NaN batch runs here, unchecked
    with pytest.raises(UserError, match="NaN"):
        engine.finish()
    started = OverlapAdd(ChunkMeanModel(), segment=256, batch_size=1)
    started.push(x)
    with pytest.raises(RuntimeError, match="before|after the first batch"):
        started.keep_on_device()


def test_bad_model_output_is_reported() -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Nan(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, None] * float("nan")

    with pytest.raises(ValueError, match=r"\(B, S, C, L\)"):
        apply_model(Wrong(), torch.randn(2, 50), segment=20)
    with pytest.raises(UserError, match="NaN"):
        apply_model(Nan(), torch.randn(2, 50), segment=20)
    with pytest.raises(ValueError, match="overlap"):
        apply_model(Wrong(), torch.randn(2, 50), segment=20, overlap=1.0)


@pytest.mark.parametrize(
    ("n", "seg", "overlap", "batch"), [(1000, 100, 0.5, 4), (37, 100, 0.5, 2), (999, 64, 0.0, 3)]
)
def test_progress_counts_reach_the_total(n: int, seg: int, overlap: float, batch: int) -> None:
    infos: list[dict[str, Any]] = []
    model = ScaleModel((1.0,))
    apply_model(
        model, torch.randn(2, n), segment=seg, overlap=overlap, batch_size=batch, callback=infos.append
    )
    expected = num_chunks(n, seg, chunk_stride(seg, overlap))
    assert len(infos) == len(model.calls)  # one report per batch
    assert [i["processed"] for i in infos] == list(np.cumsum([c[0] for c in model.calls]))
    assert all(i["total"] == expected and i["length"] == n for i in infos)
    positions = [i["position"] for i in infos]
    assert positions == sorted(positions) and positions[-1] == n
    assert infos[-1]["processed"] == expected


def test_progress_of_a_stream_of_unknown_length() -> None:
    infos: list[dict[str, Any]] = []
    engine = OverlapAdd(ScaleModel((1.0,)), segment=100, overlap=0.5, batch_size=2, callback=infos.append)
    x = torch.randn(2, 1234)
    for i in range(0, 1234, 300):
        engine.push(x[:, i : i + 300])
    engine.finish()
    done = [i["processed"] for i in infos]
    assert done == sorted(done) and all(i["processed"] <= i["total"] for i in infos)
    assert infos[-1]["processed"] == infos[-1]["total"] == num_chunks(1234, 100, 50)
    assert infos[-1]["length"] == infos[-1]["position"] == 1234


def test_fixed_shape_models_get_full_batches_and_the_same_output() -> None:
    """A model compiled for fixed shapes (``fused``) sees every batch padded to batch_size with silent chunks;
    the padding never reaches the output."""

    mix = torch.randn(2, 1000)
    plain = ScaleModel((0.5,))
    fixed = ScaleModel((0.5,))
    fixed.fused = True  # type: ignore[attr-defined]
    outs = [apply_model(m, mix, segment=128, overlap=0.25, batch_size=3) for m in (plain, fixed)]
    assert {c[0] for c in fixed.calls} == {3} and min(c[0] for c in plain.calls) < 3
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
