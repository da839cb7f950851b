"""What made a track's outputs, and whether they can be kept: one sidecar JSON per track folder.

``bsmamba2 separate`` and ``Separator.separate_file`` write ``OUT/<track>/<stem>.<ext>`` and, beside them,
``OUT/<track>/bsmamba2.json``: for every output file, the recipe that made it (the input's path, size and
modification time; the model's digest; the settings that change the samples). A later run keeps an existing
output only when its recorded recipe equals the new one; otherwise it is made again, and the log says why
("input changed", "model changed", "settings changed", "no record"). Device, backend and batch size are not
part of the recipe: they change rounding only.

The recipe is a plain mapping so that the sidecar stays readable and stable across versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bsmamba2 import __version__
from bsmamba2.atomic import atomic_write
from bsmamba2.errors import UserError

SIDECAR = "bsmamba2.json"
PARTS = ("input", "model", "settings")  # the recipe's parts, in the order reasons name them


@dataclass(frozen=True)
class Recipe:
    """What an output is made from: ``input`` (path, size, mtime_ns), ``model`` (a digest) and ``settings``."""

    input: Mapping[str, Any]
    model: str
    settings: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"input": dict(self.input), "model": self.model, "settings": dict(self.settings)}

    def changes(self, recorded: Mapping[str, Any]) -> list[str]:
        """The parts of this recipe that differ from a recorded one (``to_json`` form); [] when equal."""
        mine = json.loads(json.dumps(self.to_json()))  # tuples -> lists, as they come back from the file
        return [part for part in PARTS if recorded.get(part) != mine[part]]


@dataclass(frozen=True)
class Plan:
    """One track's outputs: every requested ``targets`` path, the ``todo`` subset to (re)make and why."""

    source: Path
    folder: Path
    recipe: Recipe
    targets: dict[str, Path]
    todo: dict[str, Path]
    reasons: dict[str, str] = field(default_factory=dict)  # output name -> why it is made again

    @property
    def up_to_date(self) -> bool:
        return not self.todo


def input_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The input's resolved path, size in bytes and modification time (ns): a changed file differs here."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file's bytes (a model file: its identity wherever it was copied to)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def module_digest(model: nn.Module) -> str:
    """``sha256:<hex>`` of a model's config and every parameter and buffer (name, dtype, shape, bytes).

    The tensors of a device go to the host in one copy (one sync), not one each."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    to_json = getattr(cfg, "to_json", None)
    h.update((to_json() if callable(to_json) else repr(cfg)).encode())
    state = model.state_dict()
    for (name, t), data in zip(state.items(), _host_bytes(list(state.values())), strict=True):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(data)
    return f"sha256:{h.hexdigest()}"


def _host_bytes(tensors: list[torch.Tensor]) -> list[memoryview]:
    """Each tensor's bytes (C order) on the host; those of each non-CPU device fetched in one transfer."""
    flat = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors]  # (bytes,) each
    out: list[memoryview | None] = [None] * len(flat)
    for device in {f.device for f in flat}:
        idx = [i for i, f in enumerate(flat) if f.device == device]
        host = torch.cat([flat[i] for i in idx]).cpu() if device.type != "cpu" else None
        off = 0
        for i in idx:
            n = flat[i].numel()
            part = flat[i] if host is None else host[off : off + n]
            out[i] = part.numpy().data
            off += n
    return [m for m in out if m is not None]


def read_records(folder: Path) -> dict[str, Any]:
    """{output file name: recorded recipe} from ``folder``'s sidecar; {} when absent or unreadable."""
    try:
        data = json.loads((folder / SIDECAR).read_text())
    except (OSError, ValueError):
        return {}
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return outputs if isinstance(outputs, dict) else {}


def plan(
    source: Path, folder: Path, recipe: Recipe, targets: Mapping[str, Path], *, overwrite: bool = False
) -> Plan:
    """Decide which of ``targets`` ({output: path}) to make: all with ``overwrite``, else the missing ones
    and those whose recorded recipe differs. A target that exists as a folder is a UserError."""
    records = read_records(folder)
    todo: dict[str, Path] = {}
    reasons: dict[str, str] = {}
    for name, path in targets.items():
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a file; remove or rename it")
        if overwrite:
            reason = "--overwrite" if path.exists() else ""
        elif not path.exists():
            reason = ""  # a new output: nothing to explain
        elif not isinstance(records.get(path.name), dict):
            reason = "no record of how it was made"
        else:
            changed = recipe.changes(records[path.name])
            if not changed:
                continue
            reason = " and ".join(changed) + " changed"
        todo[name] = path
        if reason:
            reasons[name] = reason
    return Plan(source, folder, recipe, dict(targets), todo, reasons)


def record(plan: Plan, written: Mapping[str, Path]) -> Path:
    """Add the ``written`` outputs' recipe to the folder's sidecar (other entries kept); returns its path."""
    records = read_records(plan.folder)
    for path in written.values():
        records[Path(path).name] = plan.recipe.to_json()
    sidecar = plan.folder / SIDECAR
    try:
        with atomic_write(sidecar) as tmp:
            tmp.write_text(json.dumps({"bsmamba2": __version__, "outputs": records}, indent=1) + "\n")
    except OSError as e:
        raise UserError(f"{sidecar}: cannot write ({e.strerror or e})") from None
    return sidecar
