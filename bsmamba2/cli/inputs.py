"""What ``bsmamba2 separate`` works on: INPUT files and folders -> jobs (a source file, an output folder).

- A file gives ``OUT/<stem>/``; a folder is searched recursively and keeps its structure under ``OUT``.
  Without ``-o`` each output folder goes in a ``separated/`` folder next to its input.
- A *track folder* (MUSDB18HQ layout: one holding ``mixture.*`` beside its stems) gives one job, its
  mixture, named by the folder: ``OUT/<track>/`` (``separated/<track>/`` beside it without ``-o``). Its
  other files are the mixture's stems, not songs.
- Output folders are never scanned: our ``separated/`` folders, and ``-o`` when it lies inside an input.
- The same file reached twice is one job. Two different files that would write to one folder (``a/x.wav``
  and ``b/x.wav`` given as files, ``song.mp3`` beside ``song.ogg``) are refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bsmamba2 import audio
from bsmamba2.errors import UserError

DEFAULT_OUT = "separated"
MIXTURE = "mixture"  # the mixture's file stem in a MUSDB18HQ track folder


@dataclass(frozen=True)
class Job:
    source: Path
    out_dir: Path


def find_inputs(inputs: Sequence[str], out: Path | None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand INPUT files and folders into jobs; returns (jobs, failures as (input, message)).

    Raises UserError (one line) when two inputs would write to the same output folder.
    """
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            failures.append((item, "no such file or folder"))
        elif p.is_file():
            jobs.append(Job(p, (out if out is not None else p.parent / DEFAULT_OUT) / p.stem))
        else:
            found = scan_folder(p, out)
            if not found:
                failures.append((item, "folder contains no audio files"))
            jobs.extend(found)
    return unique_jobs(jobs), failures


def scan_folder(folder: Path, out: Path | None) -> list[Job]:
    """The jobs of one folder, searched recursively (see the module docstring)."""
    out_resolved = out.resolve() if out is not None else None
    files = []
    for f in sorted(folder.rglob("*")):
        if DEFAULT_OUT in f.relative_to(folder).parts[:-1] or not audio.is_audio_file(f):
            continue  # our own outputs from an earlier run, or not audio
        if out_resolved is not None and out_resolved in f.resolve().parents:
            continue
        files.append(f)
    tracks = {f.parent for f in files if f.stem.lower() == MIXTURE}
    jobs = []
    for f in files:
        if f.parent not in tracks:
            rel = f.relative_to(folder).with_suffix("")
            jobs.append(Job(f, out / rel if out is not None else f.parent / DEFAULT_OUT / f.stem))
        elif f.stem.lower() == MIXTURE:  # a track's other files are its stems
            track = folder.absolute() if f.parent == folder else f.parent  # "." has no name
            name = Path(track.name) if f.parent == folder else f.parent.relative_to(folder)
            jobs.append(Job(f, out / name if out is not None else track.parent / DEFAULT_OUT / track.name))
    return jobs


def unique_jobs(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` without repeats of one source file; UserError if two sources share an output folder."""
    by_source: dict[Path, Job] = {}
    for j in jobs:
        by_source.setdefault(j.source.resolve(), j)
    by_folder: dict[Path, Job] = {}
    for j in by_source.values():
        other = by_folder.setdefault(j.out_dir.resolve(), j)
        if other is not j:
            raise UserError(
                f"{other.source} and {j.source} would both write to {j.out_dir}; "
                "rename one, or separate them in two runs with different -o folders"
            )
    return list(by_source.values())
