"""The training loop end to end on a tiny model and a tiny corpus: resume, NaN skipping, time budget, CLI, DDP."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp
from faults import enospc, one_line_error, tiny_tmpfs

from bsmamba2 import cli
from bsmamba2.checkpoints import load_model
from bsmamba2.errors import UserError
from bsmamba2.train import ckpt, step
from bsmamba2.train.config import TrainConfig, load_config
from bsmamba2.train.loop import train
from bsmamba2.train.loss import LossTerms

ROOT = Path(__file__).resolve().parents[1]
SR = 44100

# Small enough for seconds per run on 2 CPU cores: 0.1 s clips, batch 1 x 2 micro-batches, no validation.
FAST = [
    "device=cpu",
    "batch_size=1",
    "grad_accum=2",
    "data.segment_seconds=0.1",
    "data.items_per_epoch=6",
    "data.num_workers=0",
    "valid.every=0",
    "log_every=1",
    "progress=false",
    "optim.ema_decay=0.9",
]


def write_corpus(root: Path, n_train: int = 3, n_valid: int = 1, seconds: float = 1.5) -> Path:
    """MUSDB18HQ layout without mixture files: gated tones for vocals, a low tone for bass, noise for the rest."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    for subset, count in (("train", n_train), ("valid", n_valid)):
        for k in range(count):
            track = root / subset / f"song{k}"
            track.mkdir(parents=True)
            gate = (np.sin(2 * np.pi * 2 * t + k) > 0).astype(np.float32)
            stems = {
                "vocals": 0.3 * np.sin(2 * np.pi * (220 + 40 * k) * t) * gate,
                "drums": 0.2 * rng.standard_normal(n) * (np.mod(t, 0.25) < 0.03),
                "bass": 0.3 * np.sin(2 * np.pi * 55 * t),
                "other": 0.05 * rng.standard_normal(n),
            }
            for name, x in stems.items():
                sf.write(
                    track / f"{name}.wav",
                    np.stack([x, 0.8 * x], axis=1).astype(np.float32),
                    SR,
                    subtype="FLOAT",
                )
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train + 1 valid tracks of 1.5 s."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _cfg(corpus: Path, run_dir: Path, *overrides: str, name: str = "tiny.yaml") -> TrainConfig:
    return load_config(
        ROOT / "configs" / name, [f"data.root={corpus}", f"run_dir={run_dir}", *FAST, *overrides]
    )


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, **tol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k, **tol)  # type: ignore[arg-type]


def test_resume_continues_exactly(corpus: Path, tmp_path: Path) -> None:
    # 4 steps x 2 micro-batches = 8 clips cross the 6-item epoch, so the resumed run must also restore the
    # data epoch and position, besides weights, EMA and AdamW moments.
    torch.manual_seed(123)
    straight = train(_cfg(corpus, tmp_path / "a", "max_steps=4"))
    torch.manual_seed(456)  # the global RNG must not matter: the run seeds itself
    first = train(_cfg(corpus, tmp_path / "b", "max_steps=2"))
    assert first.last_checkpoint is not None and first.last_checkpoint.name == "step_000002"
    resumed = train(_cfg(corpus, tmp_path / "b", "max_steps=4"), resume=tmp_path / "b")
    assert resumed.step == straight.step == 4
    _assert_same_weights(resumed.model, straight.model, rtol=0, atol=0)
    assert resumed.ema_model is not None and straight.ema_model is not None
    _assert_same_weights(resumed.ema_model, straight.ema_model, rtol=0, atol=0)
    # ... and the weights did move (a run that trained nothing would pass the comparisons above)
    assert first.ema_model is not None
    for a, b in ((first.model, straight.model), (first.ema_model, straight.ema_model)):
        assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    state = torch.load(tmp_path / "b" / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["epoch"] == 1 and state["position"] == 2


def test_nan_losses_skip_steps_then_stop(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = step.separation_loss
    calls = {"n": 0}

    def flaky(est: torch.Tensor, target: torch.Tensor, *args: Any) -> LossTerms:
        terms = real(est, target, *args)
        calls["n"] += 1
        if calls["n"] in (1, 2):  # both micro-batches of step 0
            nan = terms.total * float("nan")
            return LossTerms(nan, terms.time, terms.stft)
        return terms

    monkeypatch.setattr(step, "separation_loss", flaky)
    with caplog.at_level(logging.WARNING, logger="bsmamba2"):
        result = train(_cfg(corpus, tmp_path / "run", "max_steps=3"))
    assert "step 0: non-finite loss" in caplog.text
    state = torch.load(tmp_path / "run" / "checkpoints" / "last" / "state.pt", weights_only=True)
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert result.step == 3 and adam_steps == {2}  # 3 steps, the first skipped
    assert all(torch.isfinite(p).all() for p in result.model.parameters())

    def always_nan(est: torch.Tensor, target: torch.Tensor, *args: Any) -> LossTerms:
        terms = real(est, target, *args)
        return LossTerms(terms.total * float("nan"), terms.time, terms.stft)

    monkeypatch.setattr(step, "separation_loss", always_nan)
    with pytest.raises(UserError, match="2 consecutive non-finite losses"):
        train(_cfg(corpus, tmp_path / "run2", "max_steps=5", "max_bad_steps=2"))


def test_time_budget_stops_after_saving(corpus: Path, tmp_path: Path) -> None:
    result = train(_cfg(corpus, tmp_path / "run", "max_steps=100", "max_minutes=1e-6"))
    assert result.step == 1
    last = tmp_path / "run" / "checkpoints" / "last"
    assert last.resolve().name == "step_000001" and (last / "state.pt").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp*"))
    with pytest.raises(UserError, match="already holds checkpoints"):  # a fresh run must not mix into it
        train(_cfg(corpus, tmp_path / "run", "max_steps=2"))


def test_cli_end_to_end(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [
        "train",
        str(ROOT / "configs" / "tiny.yaml"),
        f"data.root={corpus}",
        f"run_dir={run}",
        *FAST,
        "max_steps=3",
        "valid.every=3",
        "valid.segment_seconds=0.5",
        "ckpt_every=2",
        "keep_last=1",
    ]
    assert cli.main(argv) == 0
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step_000003"]  # step 2 rotated out
    model = load_model(ckpts / "best" / "ema.safetensors")
    assert model.cfg.stems == ("vocals",)
    assert model(torch.zeros(1, 2, 4410)).shape == (1, 1, 2, 4410)
    load_model(ckpts / "last" / "model.safetensors")
    meta = json.loads((ckpts / "best" / "meta.json").read_text())
    assert meta["step"] == 3 and {"usdr", "csdr", "usdr/vocals", "csdr/vocals"} <= set(meta["metrics"])
    assert meta["validated"] == "ema.safetensors" and np.isfinite(meta["metrics"]["usdr"])
    assert load_config(run / "config.yaml") == load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"data.root={corpus}",
            f"run_dir={run}",
            *FAST,
            "max_steps=3",
            "valid.every=3",
            "valid.segment_seconds=0.5",
            "ckpt_every=2",
            "keep_last=1",
        ],
    )
    assert "valid uSDR" in (run / "log.txt").read_text()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # resume from the run folder alone (its config.yaml), extending the step budget
    assert cli.main(["train", "--resume", str(run), "max_steps=4", "valid.every=0"]) == 0
    assert (ckpts / "last").resolve().name == "step_000004"


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", str(ROOT / "configs" / "tiny.yaml"), "optim.lrr=1"]) == 1
    assert (
        cli.main(["train", str(ROOT / "configs" / "tiny.yaml"), f"run_dir={tmp_path}"]) == 1
    )  # no data.root
    assert cli.main(["train", "--resume", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("bsmamba2 train: error:") for line in err)


def test_roformer_trains(corpus: Path, tmp_path: Path) -> None:
    result = train(_cfg(corpus, tmp_path / "run", "max_steps=1", name="tiny_roformer.yaml"))
    assert result.model.cfg.mixer == "roformer" and result.step == 1


# ---- DDP: 2 gloo processes on CPU ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict[str, Any], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    result = train(TrainConfig.from_dict(cfg_dict))
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_match_one_process_with_twice_the_batch(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(corpus, tmp_path / "ddp", "max_steps=2", "optim.ema_decay=0")
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # DDP keeps the replicas identical
    # DistributedSampler gives rank r the indices r, r+2, ...; one process with batch 2 sees the same pairs,
    # and DDP's gradient average equals the batch mean: the same training up to rounding.
    single = train(_cfg(corpus, tmp_path / "single", "max_steps=2", "optim.ema_decay=0", "batch_size=2"))
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-4, atol=1e-5, msg=k)


# ---- I/O faults: a one-line error, exit 1, nothing partial ------------------------------------------------


def _train_argv(corpus: Path, run: Path, *extra: str) -> list[str]:
    tiny = str(ROOT / "configs" / "tiny.yaml")
    return ["train", tiny, f"data.root={corpus}", f"run_dir={run}", *FAST, *extra]


def test_unwritable_run_dir(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the run folder should be")  # refused even to root, unlike chmod
    assert cli.main(_train_argv(corpus, blocker / "run", "max_steps=1")) == 1
    assert "file.txt" in one_line_error(capsys.readouterr().err, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_full_disk_at_a_checkpoint_keeps_the_last_complete_one(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the disk fills up while the second checkpoint's state.pt is written, half-way through the file
    real, calls = torch.save, []

    def fill_up(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(f)
        if len(calls) == 2:
            Path(f).write_bytes(b"\0" * 100)
            raise enospc(f)
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", fill_up)
    run = tmp_path / "run"
    assert cli.main(_train_argv(corpus, run, "max_steps=3", "ckpt_every=1")) == 1
    line = one_line_error(capsys.readouterr().err, "train")
    assert "step_000002" in line and "No space left on device" in line and "step_000001" in line
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "step_000001"]  # no .tmp_step_* folder
    assert (ckpts / "last").resolve().name == "step_000001"
    monkeypatch.setattr(ckpt.torch, "save", real)
    assert cli.main(["train", "--resume", str(run), "max_steps=2"]) == 0  # space again: it continues


def test_full_disk_for_real(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_tmpfs(tmp_path / "disk", size="64k") as disk:  # room for config.yaml and logs, not weights
        assert cli.main(_train_argv(corpus, disk / "run", "max_steps=1")) == 1
        line = one_line_error(capsys.readouterr().err, "train")
        assert "No space left on device" in line
        assert sorted(p.name for p in (disk / "run" / "checkpoints").iterdir()) == []


def test_resume_falls_back_past_a_truncated_newest_checkpoint(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli.main(_train_argv(corpus, run, "max_steps=2", "ckpt_every=1")) == 0
    ckpts = run / "checkpoints"
    state = ckpts / "step_000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # a power cut before the data reached the disk
    (ckpts / ".tmp_step_000003_99999").mkdir()  # and the leftovers of a killed run
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "max_steps=3"]) == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint step_000002: state.pt is unreadable" in err and "Traceback" not in err
    assert "resumed from" in err and "step_000001 at step 1" in err
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "step_000002", "step_000003"]
    assert torch.load(ckpts / "last" / "state.pt", weights_only=True)["step"] == 3


def test_other_os_errors_in_training_are_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bsmamba2.train import logs

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise enospc(tmp_path / "run" / "tb" / "events")

    monkeypatch.setattr(logs.TrainLog, "step", no_room)  # e.g. TensorBoard's event file on a full disk
    assert cli.main(_train_argv(corpus, tmp_path / "run", "max_steps=1")) == 1
    assert "No space left on device" in one_line_error(capsys.readouterr().err, "train")
