"""Pack a training run into a few small files, and unpack them into a resumable run (scripts/gpu_train.sh).

The device machine returns at most 8 files of 16 MiB (64 MiB in all) and carries at most 64 MiB in, while a
full checkpoint of a 6.8M-parameter model is ~110 MB (fp32 weights + fp32 EMA + two fp32 Adam moments).
So a run travels as:

    NAME.resume.safetensors   raw weights in bf16 + a factored Adam second moment (Adafactor-style row and
                              column means, fp32, a few hundred KB) + metadata: the train state (step, data
                              epoch / position, best score) and the resolved config.yaml
    NAME.ema.safetensors      the EMA weights in bf16: an ordinary model file (``load_model`` reads it); the
                              one to evaluate and ship
    NAME.curves.csv / .json   loss and validation curves parsed from log.txt (inside the logs tarball)

``restore`` rebuilds ``RUN_DIR/checkpoints/step_N/`` from the first two, so ``bsmamba2 train --resume``
continues the run. What is lost on that trip (the trade-off):

- raw weights and EMA are rounded to bf16 once per trip (relative error 2^-9, about one optimizer step);
- Adam's first moment restarts at zero and its second moment is the rank-1 (row x column) approximation of
  the true one (exact for 1-D parameters), with the step count kept, so there is no bias-correction jolt: the
  first updates after a resume are ~10x smaller than usual and recover within ~10-20 steps;
- RNG states are fresh (the data order does not depend on them: an item is a function of (seed, epoch, index)).

    python scripts/runpack.py export RUN_DIR OUT_DIR NAME      # after training, on the device
    python scripts/runpack.py restore CARRY_DIR NAME RUN_DIR   # before training, on a fresh device
    python scripts/runpack.py curves RUN_DIR/log.txt OUT.csv   # log.txt -> CSV (+ .json beside it)
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bsmamba2.checkpoints import load_weights, read_safetensors, save_model  # noqa: E402
from bsmamba2.config import ModelConfig  # noqa: E402
from bsmamba2.model import build_model  # noqa: E402
from bsmamba2.train import ckpt  # noqa: E402
from bsmamba2.train.config import TrainConfig  # noqa: E402

MODEL_PREFIX = "model."
ROW, COL, FULL = "opt_row.", "opt_col.", "opt_full."
STATE_KEYS = ("step", "epoch", "position", "world_size", "batch_size", "bad_streak", "best", "best_step")


# ---- export -----------------------------------------------------------------------------------------------
def factor_second_moment(v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Adafactor's factorisation of a non-negative tensor: row / column means of its 2-D view (1-D: itself)."""
    if v.dim() < 2:
        return {"full": v.float().clone()}
    m = v.float().reshape(v.shape[0], -1)  # (rows, cols)
    return {"row": m.mean(dim=1), "col": m.mean(dim=0)}


def unfactor_second_moment(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """v ≈ outer(row, col) / mean(row): the rank-1 fit with the same row and column means."""
    if "full" in parts:
        return parts["full"].reshape(shape).clone()
    row, col = parts["row"], parts["col"]
    return (torch.outer(row, col) / row.mean().clamp_min(1e-30)).reshape(shape)


def export(run_dir: Path, out_dir: Path, name: str) -> list[Path]:
    """Write NAME.resume.safetensors and NAME.ema.safetensors from the run's newest checkpoint."""
    step_dir = ckpt.resolve_resume(run_dir)
    meta, raw = read_safetensors(step_dir / "model.safetensors")
    state = torch.load(step_dir / "state.pt", map_location="cpu", weights_only=True)
    cfg = ModelConfig.from_json(meta["config"])
    names = [n for n, _ in build_model(cfg).named_parameters()]  # the optimizer's parameter order
    tensors: dict[str, torch.Tensor] = {
        MODEL_PREFIX + k: v.to(torch.bfloat16).contiguous() for k, v in raw.items()
    }
    opt_state = state["optimizer"]["state"]
    for i, pname in enumerate(names):
        s = opt_state.get(i)
        if s is None or "exp_avg_sq" not in s:
            continue
        for part, t in factor_second_moment(s["exp_avg_sq"]).items():
            tensors[{"row": ROW, "col": COL, "full": FULL}[part] + pname] = t.contiguous()
    train_state = {k: state.get(k) for k in STATE_KEYS}
    run_cfg = (run_dir / "config.yaml").read_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = out_dir / f"{name}.resume.safetensors"
    save_file(
        tensors,
        str(resume),
        metadata={"format": "bsmamba2-resume", "config": meta["config"], "train_state": json.dumps(train_state),
                  "train_config": run_cfg},
    )  # fmt: skip
    ema_src = step_dir / "ema.safetensors"
    if not ema_src.is_file():
        ema_src = step_dir / "model.safetensors"
    model = build_model(cfg)
    load_weights(model, read_safetensors(ema_src)[1], source=str(ema_src))
    ema = save_model(
        model,
        out_dir / f"{name}.ema.safetensors",
        metadata={"weights": "ema" if ema_src.name.startswith("ema") else "raw", "step": str(state["step"])},
        dtype=torch.bfloat16,
    )
    return [resume, ema]


# ---- restore ----------------------------------------------------------------------------------------------
def restore(carry: Path, name: str, run_dir: Path) -> Path | None:
    """Rebuild RUN_DIR/checkpoints/step_N from CARRY/NAME.{resume,ema}.safetensors; None if nothing to do
    (no carried files, or the run already has a checkpoint at least as new)."""
    resume = carry / f"{name}.resume.safetensors"
    if not resume.is_file():
        return None
    meta, tensors = read_safetensors(resume)
    if meta.get("format") != "bsmamba2-resume":
        raise SystemExit(f"{resume}: not a runpack resume file")
    ts = json.loads(meta["train_state"])
    step = int(ts["step"])
    existing = ckpt.list_checkpoints(run_dir / "checkpoints")
    if existing and existing[-1][0] >= step:
        print(f"{name}: {run_dir} already has step {existing[-1][0]} >= carried step {step}; kept it")
        return None
    cfg = ModelConfig.from_json(meta["config"])
    tcfg = TrainConfig.from_dict(_yaml(meta["train_config"]))
    device = torch.device("cuda" if torch.cuda.is_available() and tcfg.device != "cpu" else "cpu")
    model = build_model(cfg).to(device)
    raw = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    load_weights(model, raw, source=str(resume))
    ema_model = build_model(cfg).to(device)
    ema_file = carry / f"{name}.ema.safetensors"
    load_weights(
        ema_model, read_safetensors(ema_file)[1] if ema_file.is_file() else raw, source=str(ema_file)
    )
    o = tcfg.optim
    # the same optimizer as train.loop builds, so load_state_dict maps parameters one to one
    opt = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
        fused=device.type == "cuda" or None,
    )  # fmt: skip
    sd = opt.state_dict()
    n_restored = 0
    for i, (pname, p) in enumerate(model.named_parameters()):
        parts = {
            part: tensors[prefix + pname]
            for part, prefix in (("row", ROW), ("col", COL), ("full", FULL))
            if prefix + pname in tensors
        }
        if not parts:
            continue
        n_restored += 1
        # exp_avg = 0 with the step count kept: bias correction ~1, so the first updates are small, not lr-sized
        sd["state"][i] = {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.zeros_like(p, dtype=torch.float32).cpu(),
            "exp_avg_sq": unfactor_second_moment(parts, p.shape),
        }
    state = {
        "format": ckpt.STATE_FORMAT,
        "step": step,
        "epoch": int(ts["epoch"]),
        "position": int(ts["position"]),
        "world_size": int(ts.get("world_size") or 1),
        "batch_size": int(ts.get("batch_size") or tcfg.batch_size),
        "bad_streak": int(ts.get("bad_streak") or 0),
        "best": ts.get("best"),
        "best_step": int(ts["best_step"]) if ts.get("best_step") is not None else -1,
        "optimizer": sd,
        "rng": ckpt.rng_state(),
        "config": tcfg.to_dict(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(meta["train_config"])
    info = {"step": step, "metrics": {}, "validated": "ema.safetensors", "best": state["best"],
            "best_step": state["best_step"], "restored_from": str(resume)}  # fmt: skip
    path = ckpt.save_checkpoint(run_dir / "checkpoints", step, model.cpu(), ema_model.cpu(), state, info)
    print(f"{name}: restored step {step} into {path} ({n_restored} Adam second moments, first moments reset)")
    return path


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    d = yaml.safe_load(text)
    return d if isinstance(d, dict) else {}


# ---- curves -----------------------------------------------------------------------------------------------
TRAIN_RE = re.compile(
    r"step (\d+)\s+loss ([-\d.eE+naif]+) \(time ([-\d.eE+naif]+), stft ([-\d.eE+naif]+)\)\s+grad norm ([-\d.eE+naif]+)"
    r"\s+lr ([-\d.eE+]+)\s+([-\d.eE+]+) steps/s"
)
VALID_RE = re.compile(r"step (\d+)\s+valid uSDR ([-\d.eE+naif]+) dB\s+cSDR ([-\d.eE+naif]+) dB")
CURVE_FIELDS = (
    "step",
    "kind",
    "loss",
    "loss_time",
    "loss_stft",
    "grad_norm",
    "lr",
    "steps_per_s",
    "usdr",
    "csdr",
)


def parse_log(text: str) -> list[dict[str, Any]]:
    """Rows of the training log: kind "train" (loss terms, grad norm, lr, speed) or "valid" (uSDR, cSDR).

    A step logged twice (a resumed run repeats nothing, but a restarted call may) keeps its last value."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for line in text.splitlines():
        if m := TRAIN_RE.search(line):
            step = int(m.group(1))
            vals = [float(x) for x in m.groups()[1:]]
            rows[(step, "train")] = dict(zip(CURVE_FIELDS, [step, "train", *vals], strict=False))
        elif m := VALID_RE.search(line):
            step = int(m.group(1))
            rows[(step, "valid")] = {
                "step": step,
                "kind": "valid",
                "usdr": float(m.group(2)),
                "csdr": float(m.group(3)),
            }
    return [rows[k] for k in sorted(rows)]


def curves(log_path: Path, out_csv: Path) -> list[dict[str, Any]]:
    rows = parse_log(log_path.read_text(errors="replace")) if log_path.is_file() else []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CURVE_FIELDS})
    out_csv.with_suffix(".json").write_text(json.dumps(rows, indent=0))
    return rows


def summary_line(name: str, rows: list[dict[str, Any]]) -> str:
    """One line per run: last step, last train loss, speed, last and best validation uSDR."""
    train = [r for r in rows if r["kind"] == "train"]
    valid = [r for r in rows if r["kind"] == "valid"]
    if not train:
        return f"{name}: no training steps logged"
    t = train[-1]
    s = f"{name}: step {t['step']}  loss {t['loss']:.4f}  {t['steps_per_s']:.2f} steps/s"
    if valid:
        best = max(valid, key=lambda r: r["usdr"])
        s += f"  valid uSDR {valid[-1]['usdr']:.2f} dB (best {best['usdr']:.2f} at step {best['step']})"
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="run folder -> NAME.resume.safetensors + NAME.ema.safetensors")
    e.add_argument("run_dir", type=Path)
    e.add_argument("out_dir", type=Path)
    e.add_argument("name")
    r = sub.add_parser("restore", help="carried files -> RUN_DIR/checkpoints/step_N")
    r.add_argument("carry", type=Path)
    r.add_argument("name")
    r.add_argument("run_dir", type=Path)
    c = sub.add_parser("curves", help="log.txt -> CSV + JSON, and a one-line summary")
    c.add_argument("log", type=Path)
    c.add_argument("out_csv", type=Path)
    c.add_argument("--name", default="run")
    a = p.parse_args(argv)
    if a.cmd == "export":
        for f in export(a.run_dir, a.out_dir, a.name):
            print(f"{f} ({f.stat().st_size / 1e6:.1f} MB)")
    elif a.cmd == "restore":
        restore(a.carry, a.name, a.run_dir)
    else:
        print(summary_line(a.name, curves(a.log, a.out_csv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
