"""``bsmamba2 separate INPUT... [-o OUT]``: separate songs into vocals + instrumental (or all stems).

Inputs are files or folders (searched recursively). Outputs go to ``OUT/<track>/<stem>.<ext>``; without
``-o``, to a ``separated/`` folder next to each input. A failing file is reported in one line and the batch
goes on; the exit code is 1 if any file failed. Under ``torchrun`` each rank takes every WORLD_SIZE-th file
and its own GPU (cuda:LOCAL_RANK); no process group is needed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bsmamba2 import audio
from bsmamba2.api import BIT_DEPTHS, ENGINES, FORMATS, Separator, check_format
from bsmamba2.device import BACKEND_HELP, BACKENDS, DEVICES, PRECISIONS, dist_env
from bsmamba2.errors import UserError
from bsmamba2.progress import ChunkBar

log = logging.getLogger(__name__)

DEFAULT_OUT = "separated"
ENGINE_HELP = (
    "torch, or onnx: an exported .onnx model run by ONNX Runtime (default auto: onnx for a .onnx --model)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)"
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=None,
        help=f"output folder (default: a '{DEFAULT_OUT}/' folder next to each input); tracks go to OUT/<track>/",
    )  # fmt: skip
    parser.add_argument("-m", "--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--segment", type=float, default=8.0, help="chunk length in seconds (default 8)")
    ov = parser.add_mutually_exclusive_group()
    ov.add_argument(
        "--overlap", type=float, default=0.5, help="fraction of a chunk shared with the next (default 0.5)"
    )
    ov.add_argument(
        "--no-overlap", dest="overlap", action="store_const", const=0.0,
        help="plain concatenation of chunks, as in the paper's evaluation",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="chunks per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)} or cuda:N (default auto)")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="autocast precision (default auto)"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument("--engine", default="auto", choices=ENGINES, help=ENGINE_HELP)
    parser.add_argument("--format", default="wav", choices=FORMATS, help="output format (default wav)")
    parser.add_argument(
        "--bit-depth", default="24", choices=BIT_DEPTHS, help="output sample format (default 24)"
    )
    parser.add_argument(
        "--downmix", action="store_true",
        help="mix inputs with more than 2 channels down to stereo (5.1: ITU-R BS.775, LFE dropped); outputs are stereo",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them)"
    )
    parser.add_argument(
        "--stems", nargs="+", default=None, help="write only these outputs, e.g. --stems vocals"
    )


@dataclass
class Job:
    source: Path
    out_dir: Path


def find_inputs(inputs: list[str], out: Path | None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files and folders into jobs; returns (jobs, failures). Output folders are never scanned."""
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    out_resolved = out.resolve() if out is not None else None
    for item in inputs:
        p = Path(item)
        if not p.exists():
            failures.append((item, "no such file or folder"))
            continue
        if p.is_file():
            jobs.append(Job(p, (out if out is not None else p.parent / DEFAULT_OUT) / p.stem))
            continue
        found = 0
        for f in sorted(p.rglob("*")):
            rel = f.relative_to(p)
            if DEFAULT_OUT in rel.parts[:-1] or not audio.is_audio_file(f):
                continue  # our own outputs from an earlier run, or not audio
            if out_resolved is not None and out_resolved in f.resolve().parents:
                continue
            found += 1
            target = out / rel.with_suffix("") if out is not None else f.parent / DEFAULT_OUT / f.stem
            jobs.append(Job(f, target))
        if not found:
            failures.append((item, "folder contains no audio files"))
    # Two inputs must not write into the same folder (e.g. a.wav and a.flac, or the same file twice).
    seen: dict[Path, Path] = {}
    unique: list[Job] = []
    for j in jobs:
        key = j.out_dir.resolve()
        if key in seen:
            failures.append((str(j.source), f"output folder {j.out_dir} is already used by {seen[key]}"))
        else:
            seen[key] = j.source
            unique.append(j)
    return unique, failures


def run(args: argparse.Namespace) -> int:
    check_format(args.format, args.bit_depth)
    if args.segment <= 0:
        raise UserError(f"--segment must be positive, got {args.segment}")
    if not 0.0 <= args.overlap < 1.0:
        raise UserError(f"--overlap must be in [0, 1), got {args.overlap}")
    jobs, failures = find_inputs(args.inputs, args.out)
    env = dist_env()
    jobs = jobs[env.rank :: env.world_size]  # torchrun: file i goes to rank i % world
    if not jobs and failures:
        return _summary(0, 0, failures, env.rank, env.world_size)
    chunk_bar = ChunkBar()  # per-file chunk progress, through the same hook a web front end would use
    sep = Separator.from_pretrained(
        args.model,
        device=args.device,
        precision=args.precision,
        segment=args.segment,
        overlap=args.overlap,
        batch_size=args.batch_size,
        backend=args.backend,
        callback=chunk_bar,
        engine=args.engine,
    )
    names = sep.check_stems(args.stems)
    done = skipped = 0
    bar = tqdm(jobs, unit="file", disable=len(jobs) < 2)
    for job in bar:
        bar.set_postfix_str(job.source.name)
        targets = sep.output_paths(job.out_dir, args.format, names)
        if not args.overwrite and all(p.exists() for p in targets.values()):
            log.info("%s: outputs exist, skipped (--overwrite to redo)", job.source)
            skipped += 1
            continue
        try:
            sep.separate_file(
                job.source,
                job.out_dir,
                format=args.format,
                bit_depth=args.bit_depth,
                downmix=args.downmix,
                overwrite=args.overwrite,
                stems=names,
            )
        except UserError as e:
            failures.append((str(job.source), str(e)))
            continue
        except (RuntimeError, ValueError, OSError, MemoryError) as e:  # keep the batch going, say what broke
            log.debug("traceback for %s", job.source, exc_info=True)
            failures.append(
                (
                    str(job.source),
                    f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                )
            )
            continue
        finally:
            chunk_bar.close()
        done += 1
        log.info("%s -> %s", job.source, job.out_dir)
    return _summary(done, skipped, failures, env.rank, env.world_size)


def _summary(done: int, skipped: int, failures: list[tuple[str, str]], rank: int, world: int) -> int:
    who = f"[rank {rank}/{world}] " if world > 1 else ""
    for src, msg in failures:
        # the message usually starts with the path already (AudioError); don't repeat it
        line = msg if msg.startswith(src) else f"{src}: {msg}"
        print(f"bsmamba2 separate: error: {line}", file=sys.stderr)
    print(f"{who}separated {done}, skipped {skipped}, failed {len(failures)}", file=sys.stderr)
    return 1 if failures else 0
