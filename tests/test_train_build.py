"""Training set-up: the torchrun layout, the training device and precision, the data a run reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba2.device import PRECISIONS, TRAIN_PRECISIONS, DistEnv, dist_env, join_process_group
from bsmamba2.errors import UserError
from bsmamba2.train import build
from bsmamba2.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_dist_env_reads_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist_env() == DistEnv(0, 1, 0, launched=False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = dist_env()
    assert env == DistEnv(3, 4, 1, launched=True) and not env.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="invalid torchrun layout"):
        dist_env()


def test_training_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build.train_device("auto", DistEnv()) == torch.device("cpu")
    assert build.train_device("cpu", DistEnv(1, 2, 1, launched=True)) == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        build.train_device("cuda:1", DistEnv())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build.train_device("cuda:1", DistEnv()) == torch.device("cuda:1")
    assert build.train_device("auto", DistEnv(1, 2, 1, launched=True)) == torch.device("cuda:1")  # LOCAL_RANK


def test_join_process_group_is_a_no_op_without_torchrun() -> None:
    join_process_group(DistEnv(), torch.device("cpu"))
    assert not torch.distributed.is_initialized()


def test_training_precision_comes_from_the_one_table() -> None:
    assert set(TRAIN_PRECISIONS) <= set(PRECISIONS)
    bf16 = load_config(None, ["precision=bf16"])
    assert build.train_precision(bf16, torch.device("cuda")) == torch.bfloat16
    assert build.train_precision(load_config(None, ["precision=fp32"]), torch.device("cuda")) is None
    assert build.train_precision(bf16, torch.device("cpu")) is None  # CPU training runs fp32


def test_too_few_items_for_the_batch(tmp_path: Path) -> None:
    for k in range(2):
        track = tmp_path / "train" / f"t{k}"
        track.mkdir(parents=True)
        for s in ("vocals", "drums", "bass", "other"):
            sf.write(track / f"{s}.wav", np.zeros((4410, 2), np.float32), 44100, subtype="FLOAT")
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [f"data.root={tmp_path}", "data.items_per_epoch=3", "batch_size=2", "data.activity_threshold=null"],
    )
    assert len(build.training_data(cfg, DistEnv())[1]) == 3
    with pytest.raises(UserError, match="too small for batch_size=2 on 2 process"):
        build.training_data(cfg, DistEnv(0, 2, 0))


def test_init_from_copies_weights_and_checks_the_architecture(tmp_path: Path) -> None:
    from bsmamba2.checkpoints import save_model
    from bsmamba2.model import build_model

    base = ["device=cpu", "data.root=unused", f"run_dir={tmp_path / 'run'}"]
    cfg = load_config(CONFIGS / "tiny.yaml", base)
    torch.manual_seed(5)
    source = build_model(cfg.model)
    path = save_model(source, tmp_path / "init.safetensors")
    warm = build.make_model(cfg.replace(init_from=str(path)), torch.device("cpu"))
    fresh = build.make_model(cfg, torch.device("cpu"))
    for (k, a), b in zip(source.state_dict().items(), warm.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(
        not torch.equal(a, c) for a, c in zip(source.state_dict().values(), fresh.state_dict().values())
    )
    other = load_config(CONFIGS / "tiny.yaml", [*base, "model.dim=24"])
    with pytest.raises(UserError, match="differs"):
        build.make_model(other.replace(init_from=str(path)), torch.device("cpu"))


def test_kernel_blocks_are_a_cuda_choice(tmp_path: Path) -> None:
    """``fused: kernels`` builds mixer_triton's blocks on CUDA only: elsewhere a one-line error, and a bad value
    of ``fused`` is refused when the config is read."""
    base = ["device=cpu", "data.root=unused", f"run_dir={tmp_path / 'run'}"]
    cfg = load_config(CONFIGS / "tiny.yaml", [*base, "fused=kernels"])
    with pytest.raises(UserError, match="fused=kernels needs a CUDA device"):
        build.make_model(cfg, torch.device("cpu"))
    with pytest.raises(UserError, match="fused must be"):
        load_config(CONFIGS / "tiny.yaml", [*base, "fused=fast"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("recompute", [False, True])
def test_gpu_kernel_blocks_in_training(tmp_path: Path, recompute: bool) -> None:
    """On CUDA, ``fused: kernels`` gives every bidirectional block as a KernelMamba2Block, keeping the input
    alone (recompute inside the block) when ``recompute`` is on, and the dual path's checkpointing off."""
    from bsmamba2.model.mixers import mamba2
    from bsmamba2.model.mixers.mixer_triton import KernelMamba2Block

    base = ["device=cuda", "data.root=unused", f"run_dir={tmp_path / 'run'}", "fused=kernels"]
    cfg = load_config(CONFIGS / "tiny.yaml", [*base, f"recompute={str(recompute).lower()}"])
    model = build.make_model(cfg, torch.device("cuda"))
    blocks = [m for m in model.modules() if isinstance(m, KernelMamba2Block)]
    assert len(blocks) == 2 * cfg.model.depth
    assert {b.save for b in blocks} == {"input" if recompute else "all"}
    assert not model.recompute and mamba2.KERNEL_BLOCKS is None
