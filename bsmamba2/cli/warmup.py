"""The CUDA warm-up of ``bsmamba2 separate``: a process's first-call costs paid on a thread beside the load.

A fresh process's first forward pass on an H200 took 1.35 s for 0.48 s of network time (issue 12): the
context, cuBLAS's handle and kernels, cuFFT's library and plans, every Triton kernel loaded from the disk
cache, pinned host memory and the caching allocator's growth. None of that depends on the input, so
:class:`WarmUp` pays it on a daemon thread while the calling thread searches the inputs, imports the model
stack and loads the checkpoint (the driver itself was started beside ``import torch``:
:mod:`~bsmamba2.cli.cuda_prestart`), in phases:

1. ``context``: the CUDA context (torch's lazy initialisation takes a lock, so a first CUDA call on
   another thread meanwhile waits for this one instead of starting a second);
2. ``cublas``: a matmul in float32 and a biased linear in the autocast dtype (cuBLAS / cuBLASLt handles:
   torch returns a thread's handles to a shared pool when the thread ends, so the caller reuses them);
3. ``forward``: one forward of a stand-in model (the file's config, read from its header; weights zeroed,
   never the caller's model) through the chunk engine on a batch of silent chunks at the real batch shape,
   its output copied to pinned host memory as ``separate_file`` does: cuFFT plans (cached per shape), the
   Triton kernels and the allocator's blocks are then the ones the first file uses. Without a config to
   read (a foreign checkpoint), with ``--fused`` (torch.compile on two threads at once is not safe) or at
   level ``libs``, an STFT / iSTFT pair at the chunk shape stands in for it (``cufft``: cuFFT only), on a
   thread of its own beside ``cublas``;
4. ``pinned`` (on CUDA, also on a thread of its own): pinned host blocks the size of a batch of chunks and
   of an output piece, allocated and freed, so that the first file's copies find them in torch's cache
   (``BSMAMBA2_PINNED_BLOCKS``: how many of each, 0 none);
5. ``triton`` (on CUDA with the Triton kernels, without the stand-in forward, on a thread of its own): Triton's
   once-per-process start (its driver utilities, its compiler's ``ptxas`` version).

Its result is discarded, the global RNGs are not drawn from, and any error is only logged (at debug): the
caller's own first CUDA call meets it again and reports it. The caller waits (:meth:`WarmUp.wait`) before
its first forward, so the two never run the model at once and the GPU peak is not raised.
``BSMAMBA2_CUDA_WARM_UP``: ``0`` none, ``libs`` phases 1-2 and the STFT, ``1`` all; unset: :data:`DEFAULT_LEVEL`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bsmamba2 import spectral
from bsmamba2.apply import OverlapAdd, chunk_stride
from bsmamba2.cli.cuda_prestart import WARM_UP_ENV
from bsmamba2.config import ModelConfig
from bsmamba2.device import resolve_precision
from bsmamba2.model.mixers.ssd import resolve_backend
from bsmamba2.pipeline import HostCopy

log = logging.getLogger(__name__)

DEVICE_TYPES: tuple[str, ...] = ("cuda",)  # the devices with first-call costs worth a thread
# The level without BSMAMBA2_CUDA_WARM_UP. On an H200 (2026-12-02, benchmarks/bench_cli.py, session 10) the
# stand-in forward ("full") made one warm 4-minute song slower, 3.53 s against 3.15 s with "libs": it shares the
# GIL with the model load, and the first forward then waits ~0.5 s for it. So "libs".
DEFAULT_LEVEL = "libs"
_POLL_S = 0.1  # wait() joins in slices this long, so that signals reach the calling thread
# Pinned host blocks of each size (a batch of chunks, an output piece) left in torch's cache by the warm-up:
# a fresh process allocated 4 batches' and several pieces' blocks for one 4-minute song (H200 profile,
# session 10); at the defaults each is one 32 MiB size class, so 8 blocks hold 256 MiB of page-locked memory.
PINNED_BLOCKS = 4
PINNED_ENV = "BSMAMBA2_PINNED_BLOCKS"  # a number; 0: none


def warm_up_level() -> str:
    """``"off"``, ``"libs"`` or ``"full"``, from ``BSMAMBA2_CUDA_WARM_UP`` ("0", "libs", "1"; unset or
    anything else: :data:`DEFAULT_LEVEL`)."""
    given = os.environ.get(WARM_UP_ENV, "").strip().lower()
    return {"0": "off", "libs": "libs", "1": "full"}.get(given, DEFAULT_LEVEL)


@dataclass(frozen=True)
class WarmUpPlan:
    """What the first file will run: the device, the user's ``--precision``, the model file whose header
    gives the stand-in's config (None: no stand-in), the SSD backend, the chunk length in seconds, the
    overlap and the batch size; ``forward``: whether to run the stand-in at all."""

    device: torch.device
    precision: str = "auto"
    model: Path | None = None
    backend: str = "auto"
    segment: float = 8.0
    overlap: float = 0.25
    batch_size: int = 8
    forward: bool = True


class WarmUp:
    """The warm-up thread (started by :func:`start_warm_up`). ``seconds``: each finished phase's wall time;
    ``error``: the first failure, in one line (the thread stopped there)."""

    def __init__(self, plan: WarmUpPlan) -> None:
        self.plan = plan
        self.seconds: dict[str, float] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name="bsmamba2-cuda-warm-up", daemon=True)
        self.thread.start()

    def wait(self) -> float:
        """Block until the thread has finished; returns the seconds waited."""
        t = time.perf_counter()
        while self.thread.is_alive():
            self.thread.join(_POLL_S)
        return time.perf_counter() - t

    def _phase(self, name: str, fn: Callable[[], object]) -> None:
        t = time.perf_counter()
        fn()
        self.seconds[name] = time.perf_counter() - t

    def _work(self) -> None:
        plan, dev = self.plan, self.plan.device
        side: list[threading.Thread] = []
        try:
            self._phase("context", lambda: _context(dev))
            dtype = resolve_precision(dev, plan.precision)
            cfg = _read_config(plan.model) if plan.model is not None else None
            forward = cfg is not None and plan.forward
            # Independent libraries, each in C with the GIL released: cuFFT and the pinned blocks start on
            # threads of their own beside cuBLAS (on an H200 the three took 0.2 + 0.1-0.2 + ? s in a row).
            if not forward:
                side.append(self._beside("cufft", lambda: _cufft(plan, cfg)))
            if dev.type == "cuda" and pinned_blocks() > 0:
                side.append(self._beside("pinned", lambda: _pinned(plan, cfg)))
            if dev.type == "cuda" and not forward and _uses_triton(plan):
                side.append(self._beside("triton", _triton))
            self._phase("cublas", lambda: _cublas(dev, dtype))
            if forward:
                self._phase("forward", lambda: _forward(plan, cfg, dtype))  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - the caller's own first CUDA call reports it
            self._fail(e)
        for t in side:
            t.join()
        log.debug("CUDA warm-up phases (s): %s", {k: round(v, 4) for k, v in self.seconds.items()})

    def _beside(self, name: str, fn: Callable[[], object]) -> threading.Thread:
        """Run phase ``name`` on a daemon thread of its own (the device made current there first)."""

        def run() -> None:
            try:
                _context(self.plan.device)
                self._phase(name, fn)
            except Exception as e:  # noqa: BLE001 - as in _work
                self._fail(e)

        t = threading.Thread(target=run, name=f"bsmamba2-cuda-warm-up-{name}", daemon=True)
        t.start()
        return t

    def _fail(self, e: Exception) -> None:
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        with self._lock:
            if self.error is None:  # the first failure is the one reported
                self.error = line
        log.debug("CUDA warm-up on %s failed: %s", self.plan.device, line, exc_info=True)


def start_warm_up(plan: WarmUpPlan) -> WarmUp | None:
    """Start the warm-up for ``plan`` on its thread; None, and nothing started, off :data:`DEVICE_TYPES` or
    with ``BSMAMBA2_CUDA_WARM_UP=0``. At level ``libs`` the stand-in forward is left out."""
    level = warm_up_level()
    if plan.device.type not in DEVICE_TYPES or level == "off":
        return None
    if level == "libs" and plan.forward:
        plan = dataclasses.replace(plan, forward=False)
    return WarmUp(plan)


# ---- the phases ----------------------------------------------------------------------------------------------


def _context(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.init()
        if device.index is not None:  # this thread's current device: the phases below allocate there
            torch.cuda.set_device(
                device
            )  # (a bare "cuda" is already the current device; set_device rejects it)


def _cublas(device: torch.device, dtype: torch.dtype | None) -> None:
    """A float32 matmul, then a biased linear under the autocast the model runs in (cuBLASLt's path)."""
    a = torch.ones(64, 64, device=device)
    a @ a  # noqa: B018 - only loads the library
    if dtype is not None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            torch.nn.functional.linear(a, a, a[0])


def _read_config(path: Path) -> ModelConfig | None:
    # The model stack (checkpoints, model) is imported here, not at the top, for the same reason as in
    # Separator.from_pretrained: on this thread it loads after the context exists, beside the calling thread's
    # own import of it (the import lock makes the two share one import, not run two).
    from bsmamba2.checkpoints.ours import read_config

    return read_config(path)


def _chunk_shape(plan: WarmUpPlan, sample_rate: int, channels: int) -> tuple[int, int, int]:
    """(batch, channels, segment samples) of one full batch, as ``Separator`` cuts it."""
    return plan.batch_size, channels, max(1, round(plan.segment * sample_rate))


def _cufft(plan: WarmUpPlan, cfg: ModelConfig | None) -> None:
    """An STFT and iSTFT of silent chunks at the real batch shape (the default model's without a config)."""
    c = cfg or ModelConfig()
    b, ch, n = _chunk_shape(plan, c.sample_rate, c.audio_channels)
    x = torch.zeros(b, ch, n, device=plan.device)
    spec = spectral.stft(x, c.n_fft, c.hop_length)
    spectral.istft(spec, c.n_fft, c.hop_length, length=n)


def pinned_blocks() -> int:
    """How many pinned host blocks of each size the warm-up leaves in torch's cache (:func:`_pinned`):
    ``BSMAMBA2_PINNED_BLOCKS``, else :data:`PINNED_BLOCKS`."""
    given = os.environ.get(PINNED_ENV, "").strip()
    return int(given) if given.isdigit() else PINNED_BLOCKS


def _pinned(plan: WarmUpPlan, cfg: ModelConfig | None) -> None:
    """Allocate, then free, pinned host blocks the size of one batch of chunks and of one output piece.

    ``separate_file`` pins each batch before its copy to the GPU, and each output piece for its copy back
    (``HostCopy``). In a fresh process each of those was a new page-locked allocation: ~340 ms of one 4-minute
    song's model stage on an H200 (a sampled profile, session 10). Freed here, the blocks stay in torch's
    caching host allocator, which hands them out again for requests of the same size class (a power of two)."""
    c = cfg or ModelConfig()
    b, ch, n = _chunk_shape(plan, c.sample_rate, c.audio_channels)
    piece = len(c.stems) * ch * chunk_stride(n, plan.overlap) * b  # samples of one batch's finished output
    sizes = {b * ch * n * 4, piece * 4}  # float32 bytes
    blocks = [
        torch.empty(size, dtype=torch.uint8, pin_memory=True)
        for size in sizes
        for _ in range(pinned_blocks())
    ]
    del blocks  # back to the cache, free for the first file's batches and pieces


def _uses_triton(plan: WarmUpPlan) -> bool:
    try:
        return resolve_backend(plan.backend, plan.device) == "triton"
    except Exception:  # noqa: BLE001 - an unknown backend: the caller's load reports it
        return False


def _triton() -> None:
    """What Triton does once per process at its first kernel launch, none of it tied to a kernel: its CUDA
    driver utilities (``ldconfig -p`` and ``file`` in child processes, a cached C module loaded) and its
    compiler's hash (``ptxas --version`` in a child process), each cached for the process. On an H200 the
    first Triton kernel of a fresh ``separate`` ran the four children on the model's thread (session 10's
    profile)."""
    from triton.compiler.compiler import make_backend
    from triton.runtime.driver import driver

    make_backend(driver.active.get_current_target()).hash()


def _stand_in(plan: WarmUpPlan, cfg: ModelConfig) -> torch.nn.Module:
    """A model of ``cfg`` with zeroed weights, wholly on ``plan.device``, in eval mode."""
    from bsmamba2.checkpoints.loading import SkipRandomInit  # the model stack: see _read_config
    from bsmamba2.model import BandSplitSeparator

    dev = plan.device
    with SkipRandomInit():  # thread-local: the stand-in's weights are left as allocated, then zeroed
        model = BandSplitSeparator(cfg, backend=resolve_backend(plan.backend, dev), device=dev)
    # what the constructor leaves to a checkpoint's load (loading.model_from_state) is on the host
    model.to(dev)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def _forward(plan: WarmUpPlan, cfg: ModelConfig, dtype: torch.dtype | None) -> None:
    """One batch of silent chunks through a stand-in for the file's model, as ``separate_file`` runs it."""
    dev = plan.device
    model = _stand_in(plan, cfg)
    b, ch, n = _chunk_shape(plan, cfg.sample_rate, cfg.audio_channels)
    engine = OverlapAdd(model, segment=n, overlap=plan.overlap, batch_size=b, dtype=dtype)
    if dev.type == "cuda":
        engine.keep_on_device()
    x = torch.zeros(ch, n + engine.stride * (b - 1))  # exactly one full batch, on the host as a file's
    y = engine.push(x)
    if y is not None and dev.type == "cuda":
        HostCopy(y).wait()
    elif dev.type == "cuda":
        torch.cuda.synchronize(dev)
    # returning frees the stand-in: its blocks go back to the allocator's pool, for the first file to reuse
