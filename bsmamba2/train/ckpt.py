"""Training checkpoints: atomic step folders, ``last`` / ``best`` pointers, rotation and resume.

One checkpoint is one folder ``RUN_DIR/checkpoints/step_XXXXXX/``::

    model.safetensors   the trained weights + model config (``bsmamba2.checkpoints.load_model`` reads it)
    ema.safetensors     the EMA weights, same format (only when EMA is on)
    state.pt            optimizer, step, data epoch/position, best metric, RNG states: tensors and plain
                        containers only, read back with ``torch.load(weights_only=True)``
    meta.json           step, metrics and which weights were validated (human-readable)

The folder is written under a temporary name and renamed into place, so a run killed at any instant leaves
either the complete folder or none; every file in it is written with ``atomic_write(durable=True)`` and the
folders are flushed to disk, so a power cut after the rename cannot leave it empty either. A write that
fails (a full disk) removes its temp folder and raises a one-line ``UserError``. Resuming from a run
folder takes the newest checkpoint whose files read back (``choose_resume``, skipping damaged ones with a
warning), after ``clean_stale`` has removed what killed runs left. ``last`` and ``best`` are relative
symbolic links to step folders, replaced atomically. Rotation keeps the newest ``keep_last`` step folders
plus the one ``best`` points at.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from bsmamba2.atomic import atomic_write, fsync_path, make_folder, write_failure
from bsmamba2.checkpoints import load_weights, read_safetensors, save_model
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.model.separator_net import BandSplitSeparator

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FORMAT = 1


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete step folders under ``ckpt_root`` as (step, path), oldest first."""
    if not ckpt_root.is_dir():
        return []
    out = []
    for p in ckpt_root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and not p.is_symlink() and (p / "state.pt").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: BandSplitSeparator,
    ema_model: BandSplitSeparator | None,
    state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write ``ckpt_root/step_XXXXXX/`` atomically (temp folder + rename) and point ``last`` at it.

    On any failure (a full disk: a UserError naming the cause and the newest complete checkpoint; an
    interrupt) the temp folder is removed and the existing checkpoints are untouched.
    """
    name = step_dir_name(step)
    tmp = ckpt_root / f".tmp_{name}_{os.getpid()}"
    try:
        make_folder(ckpt_root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_files(tmp, step, model, ema_model, state, meta)
        final = _move_into_place(ckpt_root, tmp, name)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        done = list_checkpoints(ckpt_root)
        kept = f"; the newest complete checkpoint is {done[-1][1].name}" if done else ""
        raise UserError(f"{write_failure(ckpt_root / name, e)}{kept}") from None
    point(ckpt_root, "last", name)
    return final


def _write_files(
    folder: Path,
    step: int,
    model: BandSplitSeparator,
    ema_model: BandSplitSeparator | None,
    state: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """The checkpoint's files in ``folder``, each flushed to disk (see the module docstring)."""
    info = {"step": str(step)}
    save_model(model, folder / "model.safetensors", metadata={**info, "weights": "raw"}, durable=True)
    if ema_model is not None:
        save_model(ema_model, folder / "ema.safetensors", metadata={**info, "weights": "ema"}, durable=True)
    with atomic_write(folder / "state.pt", durable=True) as part:
        torch.save(state, part)
    with atomic_write(folder / "meta.json", durable=True) as part:
        part.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _move_into_place(ckpt_root: Path, tmp: Path, name: str) -> Path:
    """Rename the finished ``tmp`` folder to ``ckpt_root/name`` (replacing a folder of the same step)."""
    final = ckpt_root / name
    if final.exists():  # the same step written again (e.g. a resumed run that stops at once): swap it out
        old = ckpt_root / f".old_{name}_{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)  # atomic on POSIX: the folder appears complete or not at all
    fsync_path(ckpt_root)  # the rename itself reaches the disk
    return final


def point(ckpt_root: Path, link: str, target: str) -> None:
    """Atomically make ``ckpt_root/link`` a relative symlink to ``target`` (a step folder name).

    Not ``atomic_write``: its temp file is a regular file, and fixing that file's mode would follow the link
    onto the step folder. The same steps by hand: a temp link beside the target, a rename, a folder fsync.
    """
    tmp = ckpt_root / f".{link}.tmp{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, ckpt_root / link)
    except OSError as e:  # e.g. Windows without symlink rights: the step folders are still complete
        tmp.unlink(missing_ok=True)
        log.warning("could not link %s -> %s (%s); use %s directly", link, target, e, ckpt_root / target)
        return
    fsync_path(ckpt_root)


def rotate(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step folders, never the one ``best`` points at."""
    best = ckpt_root / "best"
    protected = best.resolve() if best.is_symlink() else None
    ckpts = list_checkpoints(ckpt_root)
    for _, p in ckpts[: max(0, len(ckpts) - keep_last)]:
        if protected is None or p.resolve() != protected:
            shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".tmp_step_*"):  # leftovers of runs killed mid-write
        if not p.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def resolve_resume(path: str | Path) -> Path:
    """The checkpoint folder ``--resume path`` names, or its newest complete one (unchecked: see
    :func:`choose_resume`): a step folder (or a file in one), ``best``, ``last``, a ``checkpoints`` folder
    or a run folder."""
    return resume_candidates(path)[0][0]


def resume_candidates(path: str | Path) -> tuple[list[Path], bool]:
    """(the step folders ``--resume path`` may continue from, newest first; whether it named one folder).

    A step folder, a file in one, or ``best``: that folder alone. ``last``, a ``checkpoints`` folder or a
    run folder: every complete step folder, so that a damaged newest one can be skipped.
    """
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise UserError(f"--resume {path}: no such checkpoint or run folder")
    if p.name == "last" and p.is_symlink():
        p = p.parent
    elif (p / "state.pt").is_file() or STEP_DIR.match(p.name):
        return [p], True
    for root in (p / "checkpoints", p):
        ckpts = list_checkpoints(root)
        if ckpts:
            return [folder for _, folder in reversed(ckpts)], False
    raise UserError(f"--resume {path}: no complete checkpoint (a step_XXXXXX folder with state.pt) found")


def choose_resume(path: str | Path, announce: bool = True) -> Path:
    """The folder to resume from: the named one, or the newest complete checkpoint whose files all read
    back, with a warning for each newer one skipped (``announce``: the main process says it)."""
    folders, named = resume_candidates(path)
    skipped = []
    for folder in folders:
        why = damage(folder)
        if why is None:
            return folder
        if named:
            raise CheckpointError(f"{folder}: cannot resume from it: {why}")
        if announce:
            log.warning("skipping checkpoint %s: %s; trying the one before", folder.name, why)
        skipped.append(f"{folder.name}: {why}")
    raise UserError(f"--resume {path}: no loadable checkpoint ({'; '.join(skipped)})")


def damage(folder: Path) -> str | None:
    """Why the checkpoint ``folder`` cannot be resumed from (a file missing, truncated or not what it
    should be), or None. Reads ``state.pt`` and ``meta.json`` whole, the safetensors headers (a truncated
    safetensors file fails there)."""
    names = ["state.pt", "meta.json", "model.safetensors"]
    if (folder / "ema.safetensors").exists():
        names.append("ema.safetensors")
    for name in names:
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        try:
            _check_file(f)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, SafetensorError) as e:
            return f"{name} is unreadable ({(str(e).splitlines() or [type(e).__name__])[0][:120]})"
    return None


def _check_file(f: Path) -> None:
    if f.suffix == ".pt":
        state = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a bsmamba2 training state")
    elif f.suffix == ".json":
        if "step" not in json.loads(f.read_text()):
            raise ValueError("no step recorded")
    else:
        with safe_open(str(f), framework="pt", device="cpu") as st:
            st.metadata()


def clean_stale(ckpt_root: Path) -> None:
    """Tidy ``ckpt_root`` before a run writes into it: put back a step folder whose replacement was cut
    short (``.old_step_*`` holding the only complete copy); remove half-written temp folders and links and
    step folders without ``state.pt``; drop ``last`` / ``best`` links to folders that are gone (``last``
    then points at the newest complete checkpoint)."""
    if not ckpt_root.is_dir():
        return
    for p in sorted(ckpt_root.glob(".old_step_*")):
        final = ckpt_root / p.name[len(".old_") :].rsplit("_", 1)[0]
        if (p / "state.pt").is_file() and not (final / "state.pt").is_file() and STEP_DIR.match(final.name):
            if final.exists():
                shutil.rmtree(final)
            p.rename(final)
            log.warning("restored %s from %s (its replacement was interrupted)", final.name, p.name)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in sorted(ckpt_root.iterdir()):
        if p.name.startswith(".tmp_step_") and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed %s, a checkpoint left half-written", p.name)
        elif STEP_DIR.match(p.name) and p.is_dir() and not p.is_symlink() and not (p / "state.pt").is_file():
            shutil.rmtree(p, ignore_errors=True)
            log.warning("removed %s: an incomplete checkpoint (no state.pt)", p.name)
        elif p.is_symlink() and p.name.startswith(".") and ".tmp" in p.name:
            p.unlink()
    done = list_checkpoints(ckpt_root)
    for link in ("last", "best"):
        p = ckpt_root / link
        if p.is_symlink() and not (p / "state.pt").is_file():
            p.unlink()
            if link == "last" and done:
                point(ckpt_root, "last", done[-1][1].name)


def run_dir_of(ckpt_dir: Path) -> Path:
    """RUN_DIR of ``RUN_DIR/checkpoints/step_XXXXXX`` (symlinks resolved)."""
    return ckpt_dir.resolve().parent.parent


def load_checkpoint(
    ckpt_dir: Path, model: BandSplitSeparator, ema_model: BandSplitSeparator | None
) -> dict[str, Any]:
    """Load weights (and EMA weights) into the given models; return the training state of ``state.pt``.

    Without ``ema.safetensors`` (a run trained with EMA off) the EMA restarts from the loaded weights.
    """
    meta, weights = read_safetensors(ckpt_dir / "model.safetensors")
    if "config" in meta:
        saved = ModelConfig.from_json(meta["config"])
        if saved != model.cfg:
            diff = [k for k, v in saved.to_dict().items() if model.cfg.to_dict().get(k) != v]
            raise CheckpointError(
                f"{ckpt_dir}: trained with a different model config (differs in: {', '.join(diff)})"
            )
    load_weights(model, weights, source=str(ckpt_dir / "model.safetensors"))
    if ema_model is not None:
        ema_path = ckpt_dir / "ema.safetensors"
        source = ema_path if ema_path.is_file() else ckpt_dir / "model.safetensors"
        load_weights(ema_model, read_safetensors(source)[1], source=str(source))
    try:
        state = torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir / 'state.pt'}: unreadable training state ({e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{ckpt_dir / 'state.pt'}: not a bsmamba2 training state")
    return state


# ---- RNG states as tensors / plain containers (loadable with weights_only=True) -------------------------
def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
