"""Device and precision choice, and the torchrun process layout (inference and training share both).

``auto`` picks CUDA, then Apple MPS, then CPU. Precision ``auto`` means bf16 autocast on CUDA GPUs with bf16,
fp32 on CPUs without native bf16 (emulated bf16 is slower than fp32 and only loses accuracy), and on CPUs with
AMX or AVX512-BF16 whichever of the two ran the model faster: which one wins depends on the CPU and the model
(2026-12-01: the bundled model ran slower in bf16 than in fp32 on a 2-core Xeon with AMX, faster on a 2-core
AMD EPYC with AVX512-BF16), so it is measured once per CPU, model and thread count and cached
(``measured_cpu_precision``). The official code used fp16 autocast on CUDA
(OFFICIAL_SPEC §7); ``fp16`` is available to reproduce it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from bsmamba2.atomic import atomic_write
from bsmamba2.errors import UserError
from bsmamba2.hostinfo import cache_dir, cpu_name
from bsmamba2.model.mixers import ssd

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
# Mamba2 scan backends a user picks, and their --help line: defined by the backend registry
BACKENDS = ssd.USER_BACKENDS
BACKEND_HELP = ssd.BACKEND_HELP
# The one precision table: name -> autocast dtype (None = plain fp32). Inference also takes "auto".
_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *_DTYPES)
# Training takes bf16 or fp32 only: fp16 autocast would need loss scaling (a GradScaler), which the loop
# does not do, and "auto" could pick fp16 on an older GPU.
TRAIN_PRECISIONS = ("bf16", "fp32")
_logged: set[str] = set()
# Bumped when the CPU inference path changes what fp32 and bf16 cost (session 6: oneDNN's products, bf16
# glue), so that a precision cached by older code is measured again.
CPU_PATH_VERSION = 2


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` launch (1 process, rank 0 without one).

    ``launched``: torchrun set RANK and WORLD_SIZE, so training joins a process group (even of one).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (no process group is needed to shard files)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE / RANK / LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"invalid torchrun layout: RANK={rank} WORLD_SIZE={world}")
    return DistEnv(rank, world, local, launched="RANK" in os.environ and "WORLD_SIZE" in os.environ)


def join_process_group(env: DistEnv, device: torch.device) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); nothing without torchrun."""
    if not env.launched:
        return
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)


def leave_process_group(env: DistEnv) -> None:
    """Leave the process group :func:`join_process_group` joined (if any)."""
    if env.launched and dist.is_initialized():
        dist.destroy_process_group()


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda (cuda:LOCAL_RANK under torchrun), else mps, else cpu. Explicit names are checked."""
    if isinstance(name, torch.device):
        return name
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UserError(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but no CUDA GPU is available")
        if name == "cuda":
            name = f"cuda:{dist_env().local_rank % max(1, torch.cuda.device_count())}"
    if base == "mps" and not _mps_available():
        raise UserError("--device mps requested but Apple MPS is not available")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True if the CPU computes bf16 natively: AMX-BF16 or AVX512-BF16 (Linux /proc/cpuinfo flags, or a
    torch CPU capability naming them). Without them torch emulates bf16, slower than fp32."""
    cap = ""
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # older torch builds lack the query
        pass
    if "AMX" in cap or "BF16" in cap:
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def resolve_precision(
    device: torch.device, precision: str = "auto", model: nn.Module | None = None
) -> torch.dtype | None:
    """Autocast dtype for ``device`` (None = plain fp32). 'auto': bf16 on CUDA with bf16 support (else fp16,
    as the official code); on CPUs with native bf16 the faster of fp32 and bf16 for ``model``
    (``measured_cpu_precision``), bf16 when no model is given; fp32 otherwise (MPS included)."""
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise UserError("fp16 autocast is not supported on CPU; use bf16 or fp32")
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16 if model is None else measured_cpu_precision(model)
    return None


def _precision_key(model: nn.Module) -> str:
    """What the fp32/bf16 race depends on: the CPU, torch, the thread count and the model (config, backend)."""
    cfg: Any = getattr(model, "cfg", None)
    arch = cfg.to_dict() if hasattr(cfg, "to_dict") else type(model).__name__
    what = [cpu_name(), torch.__version__, torch.get_num_threads(), arch, getattr(model, "backend", "")]
    what.append(CPU_PATH_VERSION)
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def time_precisions(model: nn.Module, seconds: float = 1.0, reps: int = 1) -> dict[str, float]:
    """Seconds of ``model`` (a waveform model with a ``cfg``: (b, c, n) -> (b, s, c, n)) on ``seconds`` of
    noise in fp32 and in bf16 autocast, best of ``reps`` each, the two interleaved so that a load change hits
    both. Each timed pass follows a short pass in its own precision: the CPU path keeps its converted and
    packed weights for one precision at a time (``model.onednn.prepared_weights``), so the switch is not timed."""
    cfg: Any = model.cfg
    p = next(model.parameters())
    n = max(cfg.n_fft, round(seconds * cfg.sample_rate))
    wave = 0.1 * torch.randn(1, cfg.audio_channels, n, generator=torch.Generator().manual_seed(0))
    wave = wave.to(p.device)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for _ in range(reps):
            for name in best:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                    model(wave[..., : max(cfg.n_fft, n // 4)])  # warm-up
                    t = time.perf_counter()
                    model(wave)
                    best[name] = min(best[name], time.perf_counter() - t)
    return best


def measured_cpu_precision(model: nn.Module, cache: Path | None = None) -> torch.dtype | None:
    """bf16 or fp32 (None), whichever ran ``model`` faster here: timed once on a second of noise
    (``time_precisions``: about 2.5 s of audio through the model, once) and remembered in ``cache`` (default
    ``cache_dir()/cpu_precision.json``) per CPU, torch version, thread count and model config."""
    path = cache if cache is not None else cache_dir() / "cpu_precision.json"
    key = _precision_key(model)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        times = time_precisions(model)
        known[key] = min(times, key=lambda name: times[name])
        log_once(f"CPU precision measured: fp32 {times['fp32']:.2f} s, bf16 {times['bf16']:.2f} s")
        try:
            with atomic_write(path) as tmp:
                tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        except OSError as e:  # a read-only home: measure again next time
            log.debug("cannot cache the CPU precision in %s: %s", path, e)
    return torch.bfloat16 if known[key] == "bf16" else None


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """E.g. 'cuda:0 (NVIDIA H100), bf16 autocast'."""
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    prec = (
        "fp32"
        if dtype is None
        else f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"
    )
    return f"{where}, {prec}"


def log_once(message: str) -> None:
    """Log a DEBUG line once per process (device / precision choice: for developers, shown with -v)."""
    if message not in _logged:
        _logged.add(message)
        log.debug(message)


def tune_cpu_allocator() -> bool:
    """Keep large freed blocks in the process instead of returning them to the OS (glibc only).

    PyTorch's CPU allocator gets every tensor of more than a few MB from glibc, which serves those with
    mmap/munmap by default: each forward pass then page-faults its whole working set back in, and the kernel
    time can exceed the arithmetic (benchmarks/bench_cpu.py, 2026-11-22, 2-core CI VM: 16 s of audio
    through the bundled model took 49.8 s with glibc's defaults and 19.6 s with these settings). Raising the mmap and trim thresholds lets
    freed blocks be reused. The CLI calls this once at start; library users can set the equivalent
    environment variables MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 instead.
    Returns True if the settings were applied.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        # the process's own symbols, libc's among them: ctypes.util.find_library("c") would run
        # `ldconfig -p` in a child process on every start (~20 ms of each CLI run on an H200 host)
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))
