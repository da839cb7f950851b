"""The models a page may pick: the default (``--model``, else the bundled one) and every model file in
``--models DIR``. The page names a model by its catalogue name only, never by a path."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.checkpoints import load_state
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.stems import output_names

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class ModelEntry:
    """One model on offer: its name on the page and its file."""

    name: str
    path: Path


class ModelCatalog:
    """Catalogue names -> model files, and each model's outputs (read from the file once, then cached)."""

    def __init__(self, default: Path | None = None, folder: Path | None = None) -> None:
        first = Path(default) if default is not None else DEFAULT_MODEL
        if not first.is_file():
            raise CheckpointError(
                f"--model {first}: no such model file"
                if default is not None
                else "no bundled model (this build ships without weights); pass --model"
            )
        paths = [first]
        if folder is not None:
            paths += sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
        self.entries: dict[str, ModelEntry] = {}
        seen: set[Path] = set()
        for p in paths:
            if p.resolve() in seen:
                continue
            seen.add(p.resolve())
            name, k = p.name, 2
            while name in self.entries:  # same file name in two folders: keep both, apart
                name, k = f"{p.stem} ({k}){p.suffix}", k + 1
            self.entries[name] = ModelEntry(name, p)
        self.default = next(iter(self.entries))
        self._outputs: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> ModelEntry:
        """The entry called ``name`` (None or "" = the default); UserError for a name not on offer."""
        key = name or self.default
        if key not in self.entries:
            raise UserError(f"unknown model {key!r}")
        return self.entries[key]

    def outputs(self, name: str | None) -> tuple[str, ...]:
        """The output names (stems, plus the residual of a one-stem model) of a catalogue model."""
        entry = self.get(name)
        with self._lock:
            if entry.name not in self._outputs:
                cfg, _ = load_state(entry.path)
                self._outputs[entry.name] = output_names(cfg.stems)
            return self._outputs[entry.name]

    def describe(self) -> list[dict[str, object]]:
        """[{"name", "outputs", "default"}] for the page; a file that does not load is listed with its error."""
        out: list[dict[str, object]] = []
        for name in self.entries:
            try:
                item: dict[str, object] = {"name": name, "outputs": list(self.outputs(name))}
            except UserError as e:
                item = {"name": name, "outputs": [], "error": str(e)}
            out.append({**item, "default": name == self.default})
        return out
