"""Fused SSD scan for Mamba2 in Triton (forward and backward): the "triton" backend of ``ssd.py``'s registry.

Same function and signature as ``ssd.ssd_chunked`` (see ``ssd.py`` for shapes): the recurrence
    S_t = exp(dt_t·A)·S_{t-1} + dt_t · x_t ⊗ B_t,   y_t = S_t · C_t + D·x_t
computed by two kernel families, chosen by length:

* **single chunk** (l <= 64, BSMamba2's band path: l = 62). One program per (sequence, group) loads B and C once,
  forms CB = C·Bᵀ once, and loops over the heads of the group: y_h = (CB ∘ L_h)·(dt_h·x_h) + D_h·x_h, where
  L_h[i, j] = exp(cum_i − cum_j) (i >= j) is the head's decay matrix. No state exists at all. In the backward
  pass the per-head matrices G_h = (dY_h·(dt_h·X_h)ᵀ) ∘ L_h are summed over heads in registers, so dB = Gᵀ·C and
  dC = G·B cost one matrix product each per sequence instead of one per head, with no atomics.
* **chunked** (any l, the time path: l = 801). One program per (sequence, head) walks the sequence in chunks
  of 64 (``CHUNK_T``) with the (p × n) float32 state in registers. Per chunk: the intra-chunk quadratic form
  above, plus the entering state's contribution exp(cum_i)·(C_i·Sᵀ), then
  S ← exp(cum_end)·S + (dt·X·exp(cum_end − cum))ᵀ·B.
  The backward re-runs the state sweep (storing each chunk's entering state in a scratch buffer that lives only
  during the backward call: no state is kept between forward and backward) and the state-gradient sweep dS.
  By default (``SPLIT_BACKWARD``) the sweeps are one kernel and every chunk's gradients another, one program
  per (sequence, chunk, head) (``ssd_triton_split``); otherwise one program per (sequence, head) walks the
  chunks in reverse carrying dS. Heads share B and C (ngroups = 1), so dB and dC
  are accumulated across the heads' programs with float32 atomics.

Gradients of the log-decays a_t = dt_t·A use the exact identity
    ∂L/∂a_k = Σ_{s < k <= t} w(t, s),    w(t, s) = dy_t · (C_t·B_s) · exp(cum_t − cum_s) · dt_s·x_s,
the sum of all (output t, input s) interactions that pass through step k. Within a chunk it is an exclusive
cumulative sum of w over s, summed over t >= k; across chunks it splits into three terms made of quantities the
kernel already has (the entering state S0, the carried dS). Nothing is obtained by subtracting large sums, so
the result keeps the precision of its inputs. ddt = A·da + Σ_p x·d(dt·x), dA = Σ da·dt.

Notes:
* ``chunk_size`` is accepted for interface compatibility and ignored: the kernels' chunk (``CHUNK_T``) is a
  tiling choice and the function computed does not depend on it.
* Matrix products use the input dtype (bf16/fp16 → tensor cores with fp32 accumulation). For float32 inputs they
  follow ``torch.get_float32_matmul_precision()``: "highest" (the default) → exact fp32 ("ieee"), else tf32.
* Under ``TRITON_INTERPRET=1`` the kernels run on the CPU (numpy) for tests; the interpreter's bfloat16 matrix
  product is broken (Triton 3.9), so there bf16 operands are multiplied in float32.
* ``initial_state`` and ``return_final_state`` are supported (and differentiable) through the chunked kernel.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from bsmamba2.model.mixers import triton_key
from bsmamba2.model.mixers.conv_triton import conv_silu
from bsmamba2.model.mixers.norm_triton import gated_rms_norm, rms_norm
from bsmamba2.model.mixers.ssd_triton_split import (
    _bwd_chunk_kernel,
    _mem_rows,
    _sweeps_kernel,
)
from bsmamba2.model.mixers.ssd_types import check_shapes

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if not _INTERPRET:  # the interpreter compiles nothing
    triton_key.install()  # Triton's 0.35 s hash of its installation: once per installation, not per process
CHUNK = 64  # the longest sequence the single-chunk kernels take

# Launch configurations (num_warps, num_stages, maxnreg; 0 = the compiler's choice) per kernel.
# A user process never times candidates: it launches the configuration shipped for its GPU architecture
# (``ARCH_CONFIGS``, keyed by CUDA compute capability; ``CONFIGS[name][0]`` elsewhere). ``CONFIGS`` are the
# candidates Triton's autotuner times when asked to (BSMAMBA2_SSD_AUTOTUNE=1, benchmarks). Only 8-warp programs
# are candidates by default: on an H100 with Triton 3.6 a 4-warp variant of the single-chunk forward kernel
# (head dim 32) hit an illegal memory access, which matches Triton's open Hopper wgmma issues for several-dot
# kernels at 4 warps (triton-lang/triton#10486, #11366); every 8-warp variant ran correctly there.
# ``EXTRA_CONFIGS`` are further candidates that benchmarks try only after a triage run has shown them to be
# safe on the machine at hand.
# Environment: BSMAMBA2_SSD_CONFIGS='{"kernel": [[num_warps, num_stages, maxnreg], ...], ...}' replaces a
# kernel's candidates (the first is launched, or all are timed with BSMAMBA2_SSD_AUTOTUNE=1) and
# BSMAMBA2_SSD_CHUNKS='{"kernel": 32}' the chunk lengths. Benchmarks pin one with ``force_config``.
CONFIGS: dict[str, list[tuple[int, int, int]]] = {
    "fwd_single": [(8, 1, 0), (8, 2, 0)],
    "bwd_single": [(8, 1, 0)],
    "fwd_chunked": [(8, 1, 0), (8, 2, 0)],
    "bwd_chunked": [(8, 1, 0)],
    "sweeps": [(8, 1, 0)],
    "bwd_chunk": [(8, 1, 0)],
}
EXTRA_CONFIGS: dict[str, list[tuple[int, int, int]]] = {
    "fwd_single": [(4, 1, 0)],
    "bwd_single": [(4, 1, 0), (16, 1, 0)],
    "fwd_chunked": [(4, 1, 0)],
    "bwd_chunked": [(4, 1, 0), (8, 1, 128)],
    "sweeps": [(4, 1, 0)],
    "bwd_chunk": [(4, 1, 0), (16, 1, 0)],
}
# Chunk length of the chunked kernels (forward and backward chunk independently: the backward re-runs the
# state sweep with its own chunks). 64, 32 or 16; the function computed does not depend on it.
# The split backward's sweeps store one state per chunk of ``bwd_chunk``'s length.
CHUNK_T: dict[str, int] = {"fwd_chunked": 64, "bwd_chunked": 32, "bwd_chunk": 64}
# What ships per architecture: the fastest variant among the triaged-safe candidates (the 8-warp single-stage
# programs passed every triage). Hopper (sm_90: H100 and H200, Triton 3.6, paper shapes):
# * backward of the time path, both directions (2×310×801, H200, 2026-12-01): the split backward took 18.5 ms
#   at chunk 64 and 23.6 ms at chunk 32, the per-sequence one 22.3 ms. ptxas's spills predicted chunk 32 for
#   the split kernel (292 B against 1.6 KB per thread); the GPU measured chunk 64 faster.
# * the per-sequence backward (the opt-out, BSMAMBA2_SSD_SPLIT_BWD=0) keeps chunk 32: 11.5 ms
#   fwd + bwd against 22 ms at chunk 64 on one direction (5× fewer spills).
ArchConfig = dict[str, tuple[tuple[int, int, int], int | None]]  # kernel -> (launch configuration, chunk)
ARCH_CONFIGS: dict[tuple[int, int], ArchConfig] = {
    (9, 0): {
        "fwd_single": ((8, 1, 0), None),
        "bwd_single": ((8, 1, 0), None),
        "fwd_chunked": ((8, 1, 0), 64),
        "bwd_chunked": ((8, 1, 0), 32),
        "sweeps": ((8, 1, 0), None),  # runs at bwd_chunk's chunk
        "bwd_chunk": ((8, 1, 0), 64),
    },
}
# The chunked backward as two kernels (``ssd_triton_split``: state and state-gradient sweeps, then every chunk
# in parallel; initial and final states included) instead of one program per (sequence, head) walking its
# chunks (``_bwd_chunked_kernel``; BSMAMBA2_SSD_SPLIT_BWD=0 turns it back on). Timed on an H200 (2026-12-01,
# see ARCH_CONFIGS): 18.5 ms against 22.3, and 666 against 695 ms for the paper's training step. The chunked
# forward stays one program per (sequence, head) (``_fwd_chunked_kernel``): a split form of it (a state sweep,
# then a per-chunk kernel) took 6.5 ms against 5.2 and was deleted.
SPLIT_BACKWARD = os.environ.get("BSMAMBA2_SSD_SPLIT_BWD", "1") == "1"
_env_configs: set[str] = set()  # kernels whose candidates (and first choice) the environment replaced
_env_chunks: set[str] = set()


def _configs_from_env() -> None:
    """Apply BSMAMBA2_SSD_CONFIGS and BSMAMBA2_SSD_CHUNKS (JSON objects keyed by kernel name)."""
    raw = os.environ.get("BSMAMBA2_SSD_CONFIGS")
    if raw:
        try:
            for name, cfgs in json.loads(raw).items():
                if name not in CONFIGS:
                    raise KeyError(name)
                CONFIGS[name] = [(int(w), int(st), int(r)) for w, st, r in cfgs]
                _env_configs.add(name)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"BSMAMBA2_SSD_CONFIGS is not valid ({e!r}): {raw!r}") from None
    raw = os.environ.get("BSMAMBA2_SSD_CHUNKS")
    if raw:
        try:
            for name, chunk in json.loads(raw).items():
                if name not in CHUNK_T or int(chunk) not in (16, 32, 64):
                    raise KeyError(name)
                CHUNK_T[name] = int(chunk)
                _env_chunks.add(name)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"BSMAMBA2_SSD_CHUNKS is not valid ({e!r}): {raw!r}") from None


_configs_from_env()
_TUNE_KEYS = {
    "fwd_single": ["HPG", "P", "N", "T"],
    "bwd_single": ["HPG", "P", "N", "T"],
    "fwd_chunked": ["HPG", "P", "N", "T"],
    "bwd_chunked": ["HPG", "P", "N", "T"],
    "sweeps": ["HPG", "P", "N", "T"],
    "bwd_chunk": ["HPG", "P", "N", "T"],
}
_RESET = {
    "bwd_chunked": ["dB_ptr", "dC_ptr"],
    "bwd_chunk": ["dB_ptr", "dC_ptr"],
}  # atomically accumulated: zeroed before each timed trial
_forced: dict[str, tuple[int, int, int]] = {}
_forced_chunk: dict[str, int] = {}
_tuned: dict[str, Any] = {}


def force_config(
    name: str, num_warps: int | None, num_stages: int = 1, maxnreg: int = 0, chunk: int | None = None
) -> None:
    """Pin kernel ``name``'s launch configuration (``num_warps=None`` returns it to autotuning) and, for the
    chunked kernels, optionally its chunk length."""
    if name not in CONFIGS:
        raise KeyError(f"unknown kernel {name!r}; one of {sorted(CONFIGS)}")
    if num_warps is None:
        _forced.pop(name, None)
        _forced_chunk.pop(name, None)
        return
    _forced[name] = (num_warps, num_stages, maxnreg)
    if chunk is not None:
        if name not in CHUNK_T or chunk not in (16, 32, 64):
            raise ValueError(f"chunk {chunk} not available for {name}")
        _forced_chunk[name] = chunk


def shipped_config(name: str, device: torch.device) -> tuple[tuple[int, int, int], int | None]:
    """Kernel ``name``'s launch configuration and chunk on ``device`` when nothing is forced: the
    environment's first candidate / chunk where set, else ``ARCH_CONFIGS`` for the device's architecture, else
    the first candidate and ``CHUNK_T``."""
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)
    cfg, chunk = ARCH_CONFIGS.get(cap, {}).get(name, (CONFIGS[name][0], CHUNK_T.get(name)))
    if name in _env_configs:
        cfg = CONFIGS[name][0]
    if name in _env_chunks:
        chunk = CHUNK_T[name]
    return cfg, chunk


def _chunk(name: str, device: torch.device) -> int:
    if name in _forced_chunk:
        return _forced_chunk[name]
    chunk = shipped_config(name, device)[1]
    return chunk if chunk is not None else CHUNK_T[name]


def _options(cfg: tuple[int, int, int]) -> dict[str, int]:
    w, st, r = cfg
    return {"num_warps": w, "num_stages": st, **({"maxnreg": r} if r else {})}


def _launch(
    name: str, kernel: Any, grid: tuple[int, ...], device: torch.device, *args: Any, **meta: Any
) -> None:
    """Launch with the forced configuration, else the shipped one; Triton's autotuner times ``CONFIGS[name]``
    only with BSMAMBA2_SSD_AUTOTUNE=1 (a benchmark's choice, never a user process's)."""
    if _INTERPRET:
        kernel[grid](*args, **meta)
        return
    if not CONFIGS[name]:
        raise RuntimeError(f"no launch configuration left for SSD kernel {name!r} (see BSMAMBA2_SSD_CONFIGS)")
    cfg = _forced.get(name)
    if cfg is None and os.environ.get("BSMAMBA2_SSD_AUTOTUNE", "0") == "1" and len(CONFIGS[name]) > 1:
        if name not in _tuned:
            configs = [triton.Config({}, **_options(c)) for c in CONFIGS[name]]  # type: ignore[arg-type]
            _tuned[name] = triton.autotune(configs, key=_TUNE_KEYS[name], reset_to_zero=_RESET.get(name))(
                kernel
            )
        _tuned[name][grid](*args, **meta)
        return
    if cfg is None:
        cfg = shipped_config(name, device)[0]
    kernel[grid](*args, **meta, **_options(cfg))


# ---- direction: ``_mem_rows`` (from ssd_triton_split) maps logical steps to memory rows, so a sequence is scanned
# from its last step back by reversed indexing (no flipped copies).


# ---- single chunk (l <= 64): one program per (sequence, group), heads in a loop -------------------------------
@triton.jit
def _fwd_single_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr,
    L, NSEQ, HPG, G, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sy_b, sy_l, sy_h, sy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    bi = (pid // G).to(tl.int64)
    gi = pid % G
    di = (bi // NSEQ).to(tl.int32)  # 0: scanned forward; 1: from the last step back (see _mem_rows)
    t = tl.arange(0, T)
    mt = _mem_rows(t, di, L, REV)  # the memory row of each logical step
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    tm = t < L
    xm = tm[:, None] & (pp < P)[None, :]
    bm = tm[:, None] & (nn < N)[None, :]
    Bm = tl.load(B_ptr + bi * sb_b + gi * sb_g + mt[:, None] * sb_l + nn[None, :] * sb_n, mask=bm, other=0.0)
    Cm = tl.load(C_ptr + bi * sc_b + gi * sc_g + mt[:, None] * sc_l + nn[None, :] * sc_n, mask=bm, other=0.0)
    CB = tl.dot(
        Cm.to(DOT), tl.trans(Bm.to(DOT)), input_precision=PREC
    )  # (T, T): C_i·B_j, shared by the heads
    causal = t[:, None] >= t[None, :]
    for hh in range(0, HPG):
        hi = gi * HPG + hh
        A = tl.load(A_ptr + di * (G * HPG) + hi).to(tl.float32)
        x = tl.load(
            x_ptr + bi * sx_b + hi * sx_h + mt[:, None] * sx_l + pp[None, :] * sx_p, mask=xm, other=0.0
        )
        x = x.to(tl.float32)  # (T, BP)
        dt = tl.load(dt_ptr + bi * sdt_b + hi * sdt_h + mt * sdt_l, mask=tm, other=0.0).to(tl.float32)  # (T,)
        cum = tl.cumsum(dt * A, axis=0)  # (T,) log-decay from the start to step i (inclusive)
        Lm = tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))  # (T, T) decay j -> i
        xdt = x * dt[:, None]
        y = tl.dot((CB * Lm).to(DOT), xdt.to(DOT), input_precision=PREC)  # (T, BP)
        if HAS_D:
            y += tl.load(D_ptr + di * (G * HPG) + hi).to(tl.float32) * x
        tl.store(
            y_ptr + bi * sy_b + hi * sy_h + mt[:, None] * sy_l + pp[None, :] * sy_p,
            y.to(y_ptr.dtype.element_ty),
            mask=xm,
        )


@triton.jit
def _bwd_single_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr,
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr,
    L, NSEQ, H, HPG, G, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    """dx, ddt (layouts of x, dt, contiguous); dB, dC (layout of B, contiguous); dA, dD partials (b, h) fp32."""
    pid = tl.program_id(0)
    bi = (pid // G).to(tl.int64)
    gi = pid % G
    di = (bi // NSEQ).to(tl.int32)  # 0: scanned forward; 1: from the last step back (see _mem_rows)
    t = tl.arange(0, T)
    mt = _mem_rows(t, di, L, REV)  # the memory row of each logical step
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    tm = t < L
    xm = tm[:, None] & (pp < P)[None, :]
    bm = tm[:, None] & (nn < N)[None, :]
    Bm = tl.load(B_ptr + bi * sb_b + gi * sb_g + mt[:, None] * sb_l + nn[None, :] * sb_n, mask=bm, other=0.0)
    Cm = tl.load(C_ptr + bi * sc_b + gi * sc_g + mt[:, None] * sc_l + nn[None, :] * sc_n, mask=bm, other=0.0)
    Bm = Bm.to(DOT)
    Cm = Cm.to(DOT)
    CB = tl.dot(Cm, tl.trans(Bm), input_precision=PREC)  # (T, T)
    causal = t[:, None] >= t[None, :]
    Gacc = tl.zeros((T, T), dtype=tl.float32)  # Σ_h (dY_h·X_hᵀ) ∘ L_h: the gradient w.r.t. CB
    for hh in range(0, HPG):
        hi = gi * HPG + hh
        A = tl.load(A_ptr + di * H + hi).to(tl.float32)
        xo = mt[:, None] * sx_l + pp[None, :] * sx_p
        x = tl.load(x_ptr + bi * sx_b + hi * sx_h + xo, mask=xm, other=0.0).to(tl.float32)
        dy = tl.load(
            dy_ptr + bi * sdy_b + hi * sdy_h + mt[:, None] * sdy_l + pp[None, :] * sdy_p, mask=xm, other=0.0
        ).to(tl.float32)
        dt = tl.load(dt_ptr + bi * sdt_b + hi * sdt_h + mt * sdt_l, mask=tm, other=0.0).to(tl.float32)
        cum = tl.cumsum(dt * A, axis=0)
        Lm = tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))
        xdt = x * dt[:, None]
        dy_d = dy.to(DOT)
        ML = tl.dot(dy_d, tl.trans(xdt.to(DOT)), input_precision=PREC) * Lm  # (dy_i·xdt_j)·L_ij
        Gacc += ML
        W = ML * CB  # w(i, j) of the decay-gradient identity
        E = tl.cumsum(W, axis=1) - W  # E[i, k] = Σ_{j<k} w(i, j)
        da = tl.sum(tl.where(causal, E, 0.0), axis=0)  # da_k = Σ_{i>=k} Σ_{j<k} w(i, j)
        dxdt = tl.dot(tl.trans((CB * Lm).to(DOT)), dy_d, input_precision=PREC)  # (T, BP)
        ddt = tl.sum(dxdt * x, axis=1) + A * da
        dx = dxdt * dt[:, None]
        dD_h = tl.sum(tl.sum(dy * x, axis=1), axis=0)
        if HAS_D:
            dx += tl.load(D_ptr + di * H + hi).to(tl.float32) * dy
        # dx and ddt are written contiguous (b, l, h, p) / (b, l, h)
        tl.store(
            dx_ptr + (bi * L * (G * HPG) + hi) * P + mt[:, None] * (G * HPG * P) + pp[None, :],
            dx.to(dx_ptr.dtype.element_ty),
            mask=xm,
        )
        tl.store(ddt_ptr + bi * L * H + hi + mt * H, ddt.to(ddt_ptr.dtype.element_ty), mask=tm)
        tl.store(dA_ptr + bi * H + hi, tl.sum(da * dt, axis=0))
        tl.store(dD_ptr + bi * H + hi, dD_h)
    Gd = Gacc.to(DOT)
    dB = tl.dot(tl.trans(Gd), Cm, input_precision=PREC)  # (T, BN)
    dC = tl.dot(Gd, Bm, input_precision=PREC)
    bo = (bi * L * G + gi) * N + mt[:, None] * (G * N) + nn[None, :]
    tl.store(dB_ptr + bo, dB.to(dB_ptr.dtype.element_ty), mask=bm)
    tl.store(dC_ptr + bo, dC.to(dC_ptr.dtype.element_ty), mask=bm)


# ---- chunked (any l): one program per (sequence, head), chunks in a loop ---------------------------------------
@triton.jit
def _fwd_chunked_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr, init_ptr, final_ptr,
    L, NSEQ, H, HPG, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sy_b, sy_l, sy_h, sy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    hi = pid % H
    gi = hi // HPG
    di = (bi // NSEQ).to(tl.int32)  # 0: scanned forward; 1: from the last step back (see _mem_rows)
    t = tl.arange(0, T)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pm = pp < P
    nm = nn < N
    causal = t[:, None] >= t[None, :]
    A = tl.load(A_ptr + di * H + hi).to(tl.float32)
    Dh = 0.0
    if HAS_D:
        Dh = tl.load(D_ptr + di * H + hi).to(tl.float32)
    x_base = x_ptr + bi * sx_b + hi * sx_h
    y_base = y_ptr + bi * sy_b + hi * sy_h
    dt_base = dt_ptr + bi * sdt_b + hi * sdt_h
    b_base = B_ptr + bi * sb_b + gi * sb_g
    c_base = C_ptr + bi * sc_b + gi * sc_g
    so = pp[:, None] * N + nn[None, :]  # offsets of a contiguous (p, n) state
    sm = pm[:, None] & nm[None, :]
    if HAS_INIT:
        S = tl.load(init_ptr + pid.to(tl.int64) * P * N + so, mask=sm, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    for c0 in range(0, L, T):
        rows = c0 + t
        tm = rows < L
        mr = _mem_rows(rows, di, L, REV)
        xm = tm[:, None] & pm[None, :]
        bm = tm[:, None] & nm[None, :]
        x = tl.load(x_base + mr[:, None] * sx_l + pp[None, :] * sx_p, mask=xm, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + mr * sdt_l, mask=tm, other=0.0).to(tl.float32)
        Bm = tl.load(b_base + mr[:, None] * sb_l + nn[None, :] * sb_n, mask=bm, other=0.0).to(DOT)
        Cm = tl.load(c_base + mr[:, None] * sc_l + nn[None, :] * sc_n, mask=bm, other=0.0).to(DOT)
        a = dt * A
        cum = tl.cumsum(a, axis=0)  # (T,) chunk-local log-decay up to step i; padded steps add 0
        cl = tl.sum(a, axis=0)  # log-decay across the whole chunk
        CB = tl.dot(Cm, tl.trans(Bm), input_precision=PREC)  # (T, T)
        Lm = tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))
        xdt = x * dt[:, None]  # (T, BP)
        # entering state's part, then the intra-chunk part accumulated onto it: (C·e_in)·Sᵀ + (CB∘L)·xdt
        y = tl.dot(
            (Cm.to(tl.float32) * tl.exp(cum)[:, None]).to(DOT), tl.trans(S.to(DOT)), input_precision=PREC
        )
        y = tl.dot((CB * Lm).to(DOT), xdt.to(DOT), y, input_precision=PREC)
        y += Dh * x
        tl.store(y_base + mr[:, None] * sy_l + pp[None, :] * sy_p, y.to(y_ptr.dtype.element_ty), mask=xm)
        xw = (xdt * tl.exp(cl - cum)[:, None]).to(DOT)  # inputs decayed to the chunk's end
        S = tl.dot(tl.trans(xw), Bm, S * tl.exp(cl), input_precision=PREC)  # (BP, BN)
    if STORE_FINAL:
        tl.store(final_ptr + pid.to(tl.int64) * P * N + so, S, mask=sm)


@triton.jit
def _bwd_chunked_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, init_ptr, dfinal_ptr, scratch_ptr,
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dinit_ptr,
    L, NSEQ, H, HPG, G, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sb_b, sb_l, sb_g, sb_n,
    sc_b, sc_l, sc_g, sc_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DFINAL: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr,
):  # fmt: skip
    """dx (b,l,h,p), ddt (b,l,h) contiguous; dB, dC (b,l,g,n) fp32 zero-filled (atomics); dA, dD (b·h) fp32."""
    pid = tl.program_id(0)
    pid64 = pid.to(tl.int64)
    bi = (pid // H).to(tl.int64)
    hi = pid % H
    gi = hi // HPG
    di = (bi // NSEQ).to(tl.int32)  # 0: scanned forward; 1: from the last step back (see _mem_rows)
    t = tl.arange(0, T)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pm = pp < P
    nm = nn < N
    causal = t[:, None] >= t[None, :]
    A = tl.load(A_ptr + di * H + hi).to(tl.float32)
    Dh = 0.0
    if HAS_D:
        Dh = tl.load(D_ptr + di * H + hi).to(tl.float32)
    x_base = x_ptr + bi * sx_b + hi * sx_h
    dy_base = dy_ptr + bi * sdy_b + hi * sdy_h
    dt_base = dt_ptr + bi * sdt_b + hi * sdt_h
    b_base = B_ptr + bi * sb_b + gi * sb_g
    c_base = C_ptr + bi * sc_b + gi * sc_g
    so = pp[:, None] * BN + nn[None, :]  # offsets in a (BP, BN) scratch tile
    sm = pm[:, None] & nm[None, :]
    nchunks = tl.cdiv(L, T)
    scratch = scratch_ptr + pid64 * nchunks * BP * BN

    # Phase 1: re-run the state sweep; store the state entering each chunk (in the matmul dtype).
    if HAS_INIT:
        S = tl.load(init_ptr + pid64 * P * N + pp[:, None] * N + nn[None, :], mask=sm, other=0.0)
        S = S.to(tl.float32)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    tl.store(scratch + so, S.to(DOT))
    for ci in range(0, nchunks - 1):
        rows = ci * T + t
        tm = rows < L
        mr = _mem_rows(rows, di, L, REV)
        x = tl.load(
            x_base + mr[:, None] * sx_l + pp[None, :] * sx_p, mask=tm[:, None] & pm[None, :], other=0.0
        )
        dt = tl.load(dt_base + mr * sdt_l, mask=tm, other=0.0).to(tl.float32)
        Bm = tl.load(
            b_base + mr[:, None] * sb_l + nn[None, :] * sb_n, mask=tm[:, None] & nm[None, :], other=0.0
        )
        a = dt * A
        cum = tl.cumsum(a, axis=0)
        cl = tl.sum(a, axis=0)
        xw = (x.to(tl.float32) * (dt * tl.exp(cl - cum))[:, None]).to(DOT)
        S = tl.dot(tl.trans(xw), Bm.to(DOT), S * tl.exp(cl), input_precision=PREC)
        tl.store(scratch + (ci + 1) * BP * BN + so, S.to(DOT))
    tl.debug_barrier()  # phase 2 reads what other threads of this program wrote

    # Phase 2: chunks in reverse, carrying dS = ∂L/∂(state after the chunk).
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + pid64 * P * N + pp[:, None] * N + nn[None, :], mask=sm, other=0.0)
        dS = dS.to(tl.float32)
    else:
        dS = tl.zeros((BP, BN), dtype=tl.float32)
    dA_acc = 0.0
    dD_acc = 0.0
    for k in range(0, nchunks):
        ci = nchunks - 1 - k
        rows = ci * T + t
        tm = rows < L
        mr = _mem_rows(rows, di, L, REV)
        xm = tm[:, None] & pm[None, :]
        bm = tm[:, None] & nm[None, :]
        x = tl.load(x_base + mr[:, None] * sx_l + pp[None, :] * sx_p, mask=xm, other=0.0).to(tl.float32)
        dy = tl.load(dy_base + mr[:, None] * sdy_l + pp[None, :] * sdy_p, mask=xm, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + mr * sdt_l, mask=tm, other=0.0).to(tl.float32)
        Bm = tl.load(b_base + mr[:, None] * sb_l + nn[None, :] * sb_n, mask=bm, other=0.0).to(DOT)
        Cm = tl.load(c_base + mr[:, None] * sc_l + nn[None, :] * sc_n, mask=bm, other=0.0).to(DOT)
        S0 = tl.load(scratch + ci * BP * BN + so)  # (BP, BN) state entering this chunk, DOT dtype
        a = dt * A
        cum = tl.cumsum(a, axis=0)
        cl = tl.sum(a, axis=0)
        e_in = tl.exp(cum)  # (T,) decay from the chunk's entry to step i
        e_out = tl.exp(cl - cum)  # (T,) decay from step i to the chunk's end
        xdt = x * dt[:, None]  # (T, BP)
        xdt_d = xdt.to(DOT)
        dy_d = dy.to(DOT)
        dS_d = dS.to(DOT)
        # intra-chunk interactions
        Lm = tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))  # (T, T)
        CB = tl.dot(Cm, tl.trans(Bm), input_precision=PREC)  # (T, T)
        ML = tl.dot(dy_d, tl.trans(xdt_d), input_precision=PREC) * Lm  # (dy_i·xdt_j)·L_ij = ∂L/∂CB_ij
        W = ML * CB  # w(i, j)
        CBL = (CB * Lm).to(DOT)
        E = tl.cumsum(W, axis=1) - W  # E[i, k] = Σ_{j<k} w(i, j)
        da = tl.sum(tl.where(causal, E, 0.0), axis=0)  # Σ_{i>=k, j<k} w(i, j)
        ML_d = ML.to(DOT)
        # dC: the entering state's part (also gives its share of da), then the intra part on top
        dCo = tl.dot(dy_d, S0, input_precision=PREC) * e_in[:, None]  # (T, BN)
        q = tl.sum(Cm.to(tl.float32) * dCo, axis=1)  # (T,) dy_i · (entering state's part of y_i)
        da += tl.sum(q, axis=0) - tl.cumsum(q, axis=0) + q  # Σ_{i>=k} q_i
        da += tl.exp(cl) * tl.sum(tl.sum(dS * S0.to(tl.float32), axis=1), axis=0)  # earlier → later chunks
        dC = tl.dot(ML_d, Bm, dCo, input_precision=PREC)
        bo = (bi * L * G + gi) * N + mr[:, None] * (G * N) + nn[None, :]
        tl.atomic_add(dC_ptr + bo, dC, mask=bm, sem="relaxed")
        # dB: through the state at the chunk's end, then the intra part
        dB = tl.dot(xdt_d, dS_d, input_precision=PREC) * e_out[:, None]  # (T, BN)
        dB = tl.dot(tl.trans(ML_d), Cm, dB, input_precision=PREC)
        tl.atomic_add(dB_ptr + bo, dB, mask=bm, sem="relaxed")
        # d(dt·x): through the state at the chunk's end (also gives its share of da), then the intra part
        dxo = tl.dot(Bm, tl.trans(dS_d), input_precision=PREC) * e_out[:, None]  # (T, BP)
        r = tl.sum(xdt * dxo, axis=1)  # (T,) this step's input → later chunks' outputs
        da += tl.cumsum(r, axis=0) - r  # Σ_{j<k} r_j
        dxdt = tl.dot(tl.trans(CBL), dy_d, dxo, input_precision=PREC)  # (T, BP)
        ddt = tl.sum(dxdt * x, axis=1) + A * da
        dx = dxdt * dt[:, None] + Dh * dy
        dA_acc += tl.sum(da * dt, axis=0)
        dD_acc += tl.sum(tl.sum(dy * x, axis=1), axis=0)
        tl.store(
            dx_ptr + (bi * L * H + hi) * P + mr[:, None] * (H * P) + pp[None, :],
            dx.to(dx_ptr.dtype.element_ty),
            mask=xm,
        )
        tl.store(ddt_ptr + bi * L * H + hi + mr * H, ddt.to(ddt_ptr.dtype.element_ty), mask=tm)
        # state gradient entering this chunk
        dye = (dy * e_in[:, None]).to(DOT)
        dS = tl.dot(tl.trans(dye), Cm, dS * tl.exp(cl), input_precision=PREC)
    tl.store(dA_ptr + pid, dA_acc)
    tl.store(dD_ptr + pid, dD_acc)
    if HAS_INIT:
        tl.store(dinit_ptr + pid64 * P * N + pp[:, None] * N + nn[None, :], dS, mask=sm)


# ---- host side -------------------------------------------------------------------------------------------------
def _dot_dtype(dtype: torch.dtype) -> tl.dtype:
    if dtype == torch.float16:
        return tl.float16
    if dtype == torch.bfloat16 and not _INTERPRET:
        return tl.bfloat16
    return tl.float32


def _precision() -> str:
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _block(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(n))


# Smallest tiles launched on a GPU (head dim, state size, single-chunk length). Every variant ran correctly on an
# H100 (Triton 3.6) with tiles of at least 32 × 64 × 64, while a bf16 model with head dim 16, d_state 32 and 18
# bands (tiles 16 × 32 × 32) hit an illegal memory access (Hopper wgmma with small tiles, see CONFIGS). Smaller
# sizes are padded up (masked loads and stores), which costs only models that small.
MIN_TILE = (16, 16, 16) if _INTERPRET else (32, 64, CHUNK)


def _tiles(p: int, n: int, l: int) -> tuple[int, int, int]:
    return _block(p, MIN_TILE[0]), _block(n, MIN_TILE[1]), _block(l, MIN_TILE[2])


def _strides(t: Tensor, ndim: int) -> tuple[int, ...]:
    s = tuple(t.stride())
    assert len(s) == ndim
    return s


def _forward(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    init: Tensor | None,
    want_final: bool,
    ndir: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """``ndir`` = 2: the second half of the batch is scanned from its last step back; A, D are (ndir, h)."""
    b, l, h, p = x.shape
    nseq = b // ndir
    g, n = B.shape[-2:]
    y = torch.empty_like(x, memory_format=torch.contiguous_format)  # (b, l, h, p)
    DOT = _dot_dtype(x.dtype)
    BP, BN, TS = _tiles(p, n, l)
    Dp = D if D is not None else A  # a valid pointer; unused when HAS_D is False
    common = (
        *_strides(x, 4),
        *_strides(dt, 3),
        *_strides(B, 4),
        *_strides(C, 4),
        *_strides(y, 4),
    )
    if l <= CHUNK and init is None and not want_final:
        _launch(
            "fwd_single", _fwd_single_kernel, (b * g,), x.device,
            x, dt, A, B, C, Dp, y,
            l, nseq, h // g, g, p, n, *common,
            T=TS, BP=BP, BN=BN, HAS_D=D is not None, DOT=DOT, PREC=_precision(), REV=ndir == 2,
        )  # fmt: skip
        return y, None
    final = x.new_empty(b, h, p, n, dtype=torch.float32) if want_final else None
    init_c = init.float().contiguous() if init is not None else None
    _launch(
        "fwd_chunked", _fwd_chunked_kernel, (b * h,), x.device,
        x, dt, A, B, C, Dp, y, init_c if init_c is not None else y, final if final is not None else y,
        l, nseq, h, h // g, p, n, *common,
        T=_chunk("fwd_chunked", x.device), BP=BP, BN=BN, HAS_D=D is not None, HAS_INIT=init is not None, STORE_FINAL=want_final,
        DOT=DOT, PREC=_precision(), REV=ndir == 2,
    )  # fmt: skip
    return y, final


def _split_setup(x: Tensor, n: int, nseq: int) -> tuple[int, int, int, Tensor, dict[str, Any]]:
    """Tiles, chunk and the (b·h, chunks, BP, BN) state scratch (product dtype) of a split backward call, and
    the kernels' shared flags. x (b, l, h, p)."""
    b, l, h, p = x.shape
    DOT = _dot_dtype(x.dtype)
    BP, BN, _ = _tiles(p, n, l)
    T = _chunk("bwd_chunk", x.device)
    scratch_dtype = {tl.bfloat16: torch.bfloat16, tl.float16: torch.float16}.get(DOT, torch.float32)
    states = torch.empty(b * h, triton.cdiv(l, T), BP, BN, dtype=scratch_dtype, device=x.device)
    return BP, BN, T, states, {"DOT": DOT, "PREC": _precision(), "REV": nseq != b}


def _backward(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    init: Tensor | None,
    dy: Tensor,
    dfinal: Tensor | None,
    ndir: int = 1,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Gradients of ``_forward``'s inputs (dA, dD in the layout of A, D)."""
    b, l, h, p = x.shape
    nseq = b // ndir
    g, n = B.shape[-2:]
    DOT = _dot_dtype(x.dtype)
    BP, BN, TS = _tiles(p, n, l)
    Dp = D if D is not None else A
    dx = torch.empty(b, l, h, p, dtype=x.dtype, device=x.device)
    ddt = torch.empty(b, l, h, dtype=dt.dtype, device=x.device)
    dA_part = torch.empty(b * h, dtype=torch.float32, device=x.device)
    dD_part = torch.empty(b * h, dtype=torch.float32, device=x.device)
    strides = (*_strides(x, 4), *_strides(dt, 3), *_strides(B, 4), *_strides(C, 4), *_strides(dy, 4))
    dinit = None
    if l <= CHUNK and init is None and dfinal is None:
        dB = torch.empty(b, l, g, n, dtype=B.dtype, device=x.device)
        dC = torch.empty(b, l, g, n, dtype=C.dtype, device=x.device)
        _launch(
            "bwd_single", _bwd_single_kernel, (b * g,), x.device,
            x, dt, A, B, C, Dp, dy, dx, ddt, dB, dC, dA_part, dD_part,
            l, nseq, h, h // g, g, p, n, *strides,
            T=TS, BP=BP, BN=BN, HAS_D=D is not None, DOT=DOT, PREC=_precision(), REV=ndir == 2,
        )  # fmt: skip
    elif SPLIT_BACKWARD:
        dB, dC, dA_part, dD_part, dinit = _backward_split(
            x, dt, A, B, C, Dp, D is not None, init, dy, dfinal, dx, ddt, nseq, strides
        )
    else:
        T = _chunk("bwd_chunked", x.device)
        nchunks = triton.cdiv(l, T)
        scratch_dtype = {tl.bfloat16: torch.bfloat16, tl.float16: torch.float16}.get(DOT, torch.float32)
        scratch = torch.empty(b * h * nchunks * BP * BN, dtype=scratch_dtype, device=x.device)
        dB32 = torch.zeros(b, l, g, n, dtype=torch.float32, device=x.device)
        dC32 = torch.zeros(b, l, g, n, dtype=torch.float32, device=x.device)
        init_c = init.float().contiguous() if init is not None else None
        dfinal_c = dfinal.float().contiguous() if dfinal is not None else None
        if init is not None:
            dinit = torch.empty(b, h, p, n, dtype=torch.float32, device=x.device)
        _launch(
            "bwd_chunked", _bwd_chunked_kernel, (b * h,), x.device,
            x, dt, A, B, C, Dp, dy,
            init_c if init_c is not None else dx, dfinal_c if dfinal_c is not None else dx, scratch,
            dx, ddt, dB32, dC32, dA_part, dD_part, dinit if dinit is not None else dx,
            l, nseq, h, h // g, g, p, n, *strides,
            T=T, BP=BP, BN=BN, HAS_D=D is not None, HAS_INIT=init is not None,
            HAS_DFINAL=dfinal is not None, DOT=DOT, PREC=_precision(), REV=ndir == 2,
        )  # fmt: skip
        dB, dC = dB32.to(B.dtype), dC32.to(C.dtype)
    dA = dA_part.view(ndir, nseq, h, -1).sum((1, 3)).view(A.shape).to(A.dtype)
    dD = dD_part.view(ndir, nseq, h, -1).sum((1, 3)).view(D.shape).to(D.dtype) if D is not None else None
    return dx, ddt, dA, dB, dC, dD, dinit


def _backward_split(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    Dp: Tensor,
    has_d: bool,
    init: Tensor | None,
    dy: Tensor,
    dfinal: Tensor | None,
    dx: Tensor,
    ddt: Tensor,
    nseq: int,
    strides: tuple[int, ...],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """The chunked backward as ``ssd_triton_split``'s two kernels; writes dx, ddt in place and returns dB, dC (in
    B's dtype), the dA and dD partials (b·h, chunks) and the initial state's gradient (b, h, p, n) or None."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    BP, BN, T, states, flags = _split_setup(x, n, nseq)
    nchunks = states.shape[1]
    dstates = torch.empty_like(states)
    init_c = init.float().contiguous() if init is not None else None
    dfinal_c = dfinal.float().contiguous() if dfinal is not None else None
    dinit = torch.empty(b, h, p, n, dtype=torch.float32, device=x.device) if init is not None else None
    _launch(
        "sweeps", _sweeps_kernel, (2 * b * h,), x.device,
        x, dt, A, B, C, dy, init_c if init_c is not None else dx, dfinal_c if dfinal_c is not None else dx,
        states, dstates, dinit if dinit is not None else dx,
        l, nseq, b * h, h, h // g, p, n, *strides,
        T=T, BP=BP, BN=BN, HAS_INIT=init is not None, HAS_DFINAL=dfinal is not None, **flags,
    )  # fmt: skip
    dB32 = torch.zeros(b, l, g, n, dtype=torch.float32, device=x.device)
    dC32 = torch.zeros(b, l, g, n, dtype=torch.float32, device=x.device)
    dA_part = torch.empty(b * h, nchunks, dtype=torch.float32, device=x.device)
    dD_part = torch.empty(b * h, nchunks, dtype=torch.float32, device=x.device)
    _launch(
        "bwd_chunk", _bwd_chunk_kernel, (b * h, nchunks), x.device,
        x, dt, A, B, C, Dp, dy, states, dstates, dx, ddt, dB32, dC32, dA_part, dD_part,
        l, nseq, h, h // g, g, p, n, *strides,
        T=T, BP=BP, BN=BN, HAS_D=has_d, **flags,
    )  # fmt: skip
    return dB32.to(B.dtype), dC32.to(C.dtype), dA_part, dD_part, dinit


class _SSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        init: Tensor | None,
        want_final: bool,
        ndir: int = 1,
    ) -> tuple[Tensor, Tensor]:
        y, final = _forward(x, dt, A, B, C, D, init, want_final, ndir)
        ctx.save_for_backward(x, dt, A, B, C, D, init)  # type: ignore[arg-type]
        ctx.ndir = ndir  # type: ignore[attr-defined]
        ctx.set_materialize_grads(False)
        if final is None:
            return y, y.new_empty(0)
        return y, final

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, dy: Tensor | None, dfinal: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, dt, A, B, C, D, init = ctx.saved_tensors  # type: ignore[attr-defined]
        if dy is None:
            dy = torch.zeros_like(x)
        if dfinal is not None and dfinal.numel() == 0:
            dfinal = None
        ndir = ctx.ndir  # type: ignore[attr-defined]
        dx, ddt, dA, dB, dC, dD, dinit = _backward(x, dt, A, B, C, D, init, dy, dfinal, ndir)
        return dx, ddt, dA, dB, dC, dD, dinit, None, None


def ssd_triton(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int = 256,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused SSD scan (forward and backward in Triton). Shapes as ``ssd.ssd_chunked``; ``chunk_size`` is ignored.

    x (b, l, h, p), dt (b, l, h) > 0, A (h,) < 0, B/C (b, l, g, n), D (h,) or None, initial_state (b, h, p, n)
    -> y (b, l, h, p) [, final state (b, h, p, n) float32]
    """
    del chunk_size  # the kernels tile by their own chunks (CHUNK_T); the function does not depend on it
    b, l, h, p, g, n = check_shapes(x, dt, A, B, C)
    if D is not None and D.shape != (h,):
        raise ValueError(f"D must have shape ({h},), got {tuple(D.shape)}")
    if l == 0 or b == 0:
        y = x.new_zeros(b, l, h, p) + 0 * (dt.sum() + A.sum() + B.sum() + C.sum())
        if return_final_state:
            final = x.new_zeros(b, h, p, n, dtype=torch.float32)
            if initial_state is not None:
                final = final + initial_state.float()
            return y, final
        return y
    y, final = _SSDTriton.apply(x, dt, A, B, C, D, initial_state, return_final_state)
    return (y, final) if return_final_state else y


def ssd_triton_bidirectional(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> Tensor:
    """Both directions of a bidirectional layer in one launch per kernel: the first half of the batch scanned
    forward, the second half from its last step back, by reversed indexing (no flipped copies).

    x (2·b, l, h, p), dt (2·b, l, h), B/C (2·b, l, g, n) in sequence order; A (2, h), D (2, h) or None: row 0
    for the forward half, row 1 for the backward half -> y (2·b, l, h, p) in sequence order, with
    y[b:] = flip(ssd(flip(x[b:]), ..., A[1], ..., D[1])) along l and y[:b] = ssd(x[:b], ..., A[0], ..., D[0]).
    """
    b2, l, h, p = x.shape
    if b2 % 2 or A.shape != (2, h) or (D is not None and D.shape != (2, h)):
        raise ValueError(
            f"bidirectional SSD needs an even batch and A, D of shape (2, {h}); got x{tuple(x.shape)} "
            f"A{tuple(A.shape)} D{None if D is None else tuple(D.shape)}"
        )
    check_shapes(x, dt, A[0], B, C)
    if l == 0 or b2 == 0:
        return x.new_zeros(b2, l, h, p) + 0 * (dt.sum() + A.sum() + B.sum() + C.sum())
    D = D.contiguous() if D is not None else None
    y, _ = _SSDTriton.apply(x, dt, A.contiguous(), B, C, D, None, False, 2)
    return y


# The both-directions form and the conv kernel, found by the fused bidirectional block (PairedMamba2Block);
# the conv kernel and the one-pass norms also by the eager Mamba2 block for CUDA inference.
ssd_triton.bidirectional = ssd_triton_bidirectional  # type: ignore[attr-defined]
ssd_triton.conv_silu = conv_silu  # type: ignore[attr-defined]
ssd_triton.rms_norm = rms_norm  # type: ignore[attr-defined]
ssd_triton.gated_rms_norm = gated_rms_norm  # type: ignore[attr-defined]
