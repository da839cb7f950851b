"""The format registry and the loaders on top of it (bsmamba2.checkpoints.registry, loading, ours): a file
finds its format by content, then by suffix; every refusal is one line."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from official_samples import SMALL, assert_landed, random_state, spec_shapes
from safetensors.torch import save_file

from bsmamba2.checkpoints import (
    convert_checkpoint,
    detect,
    load_model,
    load_state,
    load_weights,
    model_from_state,
    official,
    ours,
    registry,
    save_model,
)
from bsmamba2.checkpoints.base import Format, Loaded
from bsmamba2.checkpoints.ours import read_config
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError
from bsmamba2.model import build_model


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_save_model_is_atomic_with_umask_mode(tmp_path: Path, umask_022: None) -> None:
    """safetensors' save_file leaves a 0600 file; ours gets the umask's mode, and no temp file stays."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(stems=("vocals", "other")))
    path = save_model(model, tmp_path / "sub" / "m.safetensors", metadata={"note": "x"}, dtype=torch.bfloat16)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]
    assert detect(path) is ours.FORMAT
    cfg, state = load_state(path)
    assert cfg == model.cfg
    own = model.state_dict()
    assert sorted(state) == sorted(own)
    for k, v in own.items():
        assert torch.equal(state[k], v.to(torch.bfloat16)), k


def test_content_decides_over_suffix(tiny_model_path: Path, tmp_path: Path) -> None:
    """Our model under a torch-like name still loads as ours; a torch.save archive named .safetensors goes
    to the official loader."""
    renamed = tmp_path / "model.bin"
    shutil.copy(tiny_model_path, renamed)
    assert detect(renamed) is ours.FORMAT
    assert load_model(renamed).cfg == load_model(tiny_model_path).cfg

    raw = random_state(spec_shapes(**SMALL), seed=1)
    misnamed = tmp_path / "msst.safetensors"
    torch.save(raw, misnamed)
    assert detect(misnamed) is official.TORCH_CHECKPOINT
    assert_landed(load_state(misnamed)[1], raw)


def test_read_config_reads_our_header_only(tiny_model_path: Path, tmp_path: Path) -> None:
    """The config of our file without its tensors; None for a plain safetensors file, a bad config and
    anything else (the full load names those problems)."""
    assert read_config(tiny_model_path) == load_state(tiny_model_path)[0]
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad), metadata={"config": '{"no_such_key": 1}'})
    other = tmp_path / "model.onnx"
    other.write_bytes(b"onnx")
    for path in (plain, bad, other, tmp_path / "missing.safetensors"):
        assert read_config(path) is None, path


def test_safetensors_state_dict(tmp_path: Path) -> None:
    raw = random_state(spec_shapes(**SMALL), seed=2)
    path = tmp_path / "msst.safetensors"
    save_file(dict(raw), str(path))
    assert detect(path) is official.SAFETENSORS_STATE_DICT
    assert_landed(load_state(path)[1], raw)
    with pytest.raises(CheckpointError, match="a safetensors state dict has no EMA weights"):
        load_state(path, ema=True)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"hello", "not a model file bsmamba2 can read"),
        ("broken.safetensors", b"hello", "not a readable safetensors file"),
        ("notes.ckpt", b"hello", "not a PyTorch checkpoint"),
        ("missing.safetensors", None, "no such model file"),
    ],
)
def test_unreadable_files_are_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder, not a model file"):
        load_state(tmp_path)


def test_convert_refuses_our_own_files(tiny_model_path: Path) -> None:
    with pytest.raises(CheckpointError, match="already a bsmamba2 model file"):
        convert_checkpoint(tiny_model_path)


def test_a_registered_format_is_used(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a format = a Format in FORMATS: detect and load_model use it with no other change."""
    cfg, state = load_state(tiny_model_path)
    seen: list[tuple[Path, bool]] = []

    def load(path: Path, *, ema: bool, stems: object) -> Loaded:
        seen.append((path, ema))
        return Loaded(cfg, state, kind="test format")

    fmt = Format(
        name="test", suffixes=(".test",), recognise=lambda p, magic: p.read_bytes() == b"TEST", load=load
    )
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, fmt))
    path = tmp_path / "model.anything"
    path.write_bytes(b"TEST")
    model = load_model(path, ema=True)
    assert seen == [(path, True)]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_load_weights_names_what_does_not_fit(tiny_model_path: Path) -> None:
    cfg, state = load_state(tiny_model_path)
    model = build_model(cfg)
    key = next(iter(state))
    with pytest.raises(
        CheckpointError, match=rf"src: weights do not fit the model: missing 1 keys \({key}\)"
    ):
        load_weights(model, {k: v for k, v in state.items() if k != key}, source="src")


def test_load_model_fused_and_eval(tiny_model_path: Path) -> None:
    model = load_model(tiny_model_path, fused=True)
    mixers = [m for m in model.modules() if hasattr(m, "fused")]
    assert mixers and all(m.fused for m in mixers)
    assert not model.training
    assert not any(m.fused for m in load_model(tiny_model_path).modules() if hasattr(m, "fused"))


def test_load_model_runs_no_random_init_and_matches_build_then_copy(tiny_model_path: Path) -> None:
    """``load_model`` skips the random init and takes the file's tensors: the global RNG is untouched (no
    init ran), and the model computes what a built-then-filled one does."""
    torch.manual_seed(5)
    model = load_model(tiny_model_path, backend="torch")
    after_load = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_load, torch.rand(3))
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    cfg, state = load_state(tiny_model_path)
    ref = build_model(cfg, backend="torch")
    load_weights(ref, state)
    x = 0.1 * torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), ref.eval()(x))


def test_model_from_state_gives_every_weight_its_own_storage(tiny_model_path: Path) -> None:
    """Views into a larger storage and keys sharing one tensor are copied: no tied weights, no checkpoint
    kept alive through a view; a bf16 state becomes float32."""
    cfg, state = load_state(tiny_model_path)
    keys = [k for k, v in state.items() if v.is_floating_point() and v.numel() > 1]
    big = torch.randn(10_000)
    state[keys[0]] = big[: state[keys[0]].numel()].view(state[keys[0]].shape)  # a view into `big`
    shared = torch.randn(state[keys[1]].shape)
    state[keys[1]] = shared
    same = [k for k in keys[2:] if state[k].shape == shared.shape]
    if same:
        state[same[0]] = shared
    state[keys[-1]] = state[keys[-1]].to(torch.bfloat16)
    model = model_from_state(cfg, state, backend="torch")
    own = dict(model.named_parameters())
    assert own[keys[0]].untyped_storage().nbytes() == own[keys[0]].nbytes
    assert own[keys[0]].untyped_storage().data_ptr() != big.untyped_storage().data_ptr()
    ptrs = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert own[keys[-1]].dtype == torch.float32
    with pytest.raises(CheckpointError, match="weights do not fit"):
        model_from_state(cfg, {k: v for k, v in state.items() if k != keys[0]}, source="src")


def _mixed_state(tiny_model_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The tiny model's state with a bf16 tensor, a non-contiguous one and a view into a larger storage,
    beside the model's own state (what the load fills)."""
    from bsmamba2.checkpoints.loading import SkipRandomInit
    from bsmamba2.model import BandSplitSeparator

    cfg, state = load_state(tiny_model_path)
    keys = [k for k, v in state.items() if v.is_floating_point() and v.dim() == 2]
    state[keys[0]] = state[keys[0]].to(torch.bfloat16)
    state[keys[1]] = state[keys[1]].t().contiguous().t()  # same values, transposed strides
    big = torch.randn(state[keys[2]].numel() + 7)
    state[keys[2]] = big[7:].view(state[keys[2]].shape)
    with SkipRandomInit():
        own = BandSplitSeparator(cfg, backend="torch").state_dict()
    return state, own


def test_packed_transfer_matches_tensor_by_tensor(tiny_model_path: Path) -> None:
    """The one-copy-per-dtype path (taken for host tensors bound for an accelerator) gives the same tensors
    as the tensor-by-tensor one: values, dtypes and shapes, each with a storage of its own."""
    from bsmamba2.checkpoints.loading import _owned, _owned_batched

    state, own = _mixed_state(tiny_model_path)
    ref = _owned(state, own, torch.device("cpu"))
    got = _owned_batched(state, own, torch.device("cpu"))
    assert list(got) == list(ref) == list(own)
    for k, t in got.items():
        assert t.dtype == own[k].dtype and t.shape == own[k].shape and t.is_contiguous(), k
        assert torch.equal(t, ref[k]), k
        assert t.untyped_storage().nbytes() == t.nbytes, k
    ptrs = [t.untyped_storage().data_ptr() for t in got.values() if t.numel()]
    assert len(set(ptrs)) == len(ptrs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_loads_to_a_gpu_in_packed_copies(tiny_model_path: Path) -> None:
    """On a GPU, ``model_from_state`` takes the packed path: the same weights as loading on the host, then
    moving the model."""
    cfg, state = load_state(tiny_model_path)
    host = model_from_state(cfg, dict(state), backend="torch")
    gpu = model_from_state(cfg, dict(state), device="cuda", backend="torch")
    for (k, a), (k2, b) in zip(host.state_dict().items(), gpu.state_dict().items(), strict=True):
        assert k == k2 and b.device.type == "cuda" and torch.equal(a, b.cpu()), k
    ptrs = [p.untyped_storage().data_ptr() for p in gpu.parameters()]
    assert len(set(ptrs)) == len(ptrs)
