"""The SSD scan of Mamba2 (Dao & Gu 2024), in plain PyTorch, at two levels plus a backend registry.

Shapes (axis legend: b batch, l length, h heads, p head dim, g groups, n state size, c chunks):
    x  (b, l, h, p)   inputs, one vector per head
    dt (b, l, h)      step sizes, already positive (softplus applied by the caller)
    A  (h,)           negative decay rates, one scalar per head (Mamba2's A = a·I, paper eq. 4)
    B  (b, l, g, n)   input projections, shared by the h/g heads of a group
    C  (b, l, g, n)   output projections
    D  (h,) or None   skip connection
    returns y (b, l, h, p) and, if asked, the final state (b, h, p, n)

The recurrence both levels compute (OFFICIAL_SPEC §1.6, the mamba_ssm discretisation, which uses Δ·B and not
the zero-order hold of the paper's eq. 3):
    S_t = exp(dt_t·A)·S_{t-1} + dt_t · x_t ⊗ B_t        S: (p, n) per head, S_{-1} = initial state or 0
    y_t = S_t · C_t + D·x_t

``ssd_naive`` is the definition, one step at a time. ``ssd_chunked`` is the block decomposition of the Mamba2
paper (intra-chunk quadratic form, per-chunk states, inter-chunk recurrence, state-to-output), any length.
Both take an ``initial_state`` and can return the final state, so a sequence can be scanned in pieces.

The backend registry below names every implementation, the fused Triton kernels (``ssd_triton.py``) included;
a model resolves its backend once, when it is built, to a function (``backend_function``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bsmamba2.errors import UserError
from bsmamba2.model.mixers.ssd_types import SSDFn, check_shapes

log = logging.getLogger(__name__)


def ssd_naive(
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
    """Step-by-step recurrence: the definition. O(l) sequential steps; for tests and tiny inputs."""
    b, l, h, p, g, n = check_shapes(x, dt, A, B, C)
    Bh = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    S = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(x.dtype)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        S = decay[:, :, None, None] * S + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, t]))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    if D is not None:
        y = y + x * D[:, None]
    return (y, S) if return_final_state else y


def ssd_recurrent(
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
    inplace: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``ssd_naive``'s recurrence in few passes over the state, for streaming a few steps at a time.

    The state (b, h, p, n) is the big tensor of a step (a stream's frame reads and writes all of it), so each
    step touches it three times, in place: decay, the rank-one input, the read-out. Heads share their group's
    B and C by broadcasting, not by copies. ``inplace``: update ``initial_state`` itself (it must have x's
    dtype) instead of a copy; a fresh tensor per step costs several times the arithmetic on CPU (cold memory).
    Runs in the dtype of x (the caller promotes).
    """
    b, l, h, p, g, n = check_shapes(x, dt, A, B, C)
    if initial_state is None:
        S = x.new_zeros(b, h, p, n)
    elif inplace and initial_state.dtype == x.dtype:
        S = initial_state
    else:
        S = initial_state.to(x.dtype, copy=True)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        S.mul_(decay[:, :, None, None])  # (b, h, p, n)
        Sg = S.view(b, g, h // g, p, n)
        xdt = (dt[:, t, :, None] * x[:, t]).view(b, g, h // g, p, 1)  # Δ·x, (b, g, k, p, 1)
        Sg.addcmul_(xdt, B[:, t, :, None, None, :])  # += Δ·x ⊗ B
        ys.append(torch.einsum("bgkpn,bgn->bgkp", Sg, C[:, t]).reshape(b, h, p))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    if D is not None:
        y = y + x * D[:, None]
    return (y, S) if return_final_state else y


def segsum(a: Tensor) -> Tensor:
    """Stable segment sum: out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above the diagonal.

    a (..., T) -> (..., T, T). exp(segsum(a)) is the lower-triangular decay matrix of a scalar recurrence.
    Built by masked cumulative sums rather than cumsum differences, which lose precision (Mamba2 paper §6).
    """
    T = a.shape[-1]
    a = a[..., None].expand(*a.shape, T)  # (..., T, T): a[..., i, j] = a_i
    strict = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    a = a.masked_fill(~strict, 0.0)
    out = torch.cumsum(a, dim=-2)
    return out.masked_fill(~strict.logical_or(torch.eye(T, dtype=torch.bool, device=a.device)), -torch.inf)


def ssd_chunked(
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
    """Chunked SSD (the Mamba2 paper's block decomposition) for any length.

    The sequence is zero-padded to a multiple of ``chunk_size``; padded steps have dt = 0, so they neither
    decay nor feed the state, and the final state is the state after the last real step.
    """
    b, l, h, p, g, n = check_shapes(x, dt, A, B, C)
    # Mixed inputs (bf16 x/B/C with fp32 dt, outside autocast) run in the widest dtype: einsum needs one.
    dtype = torch.promote_types(torch.promote_types(x.dtype, B.dtype), torch.promote_types(C.dtype, dt.dtype))
    x, B, C, dt = x.to(dtype), B.to(dtype), C.to(dtype), dt.to(dtype)
    hg = h // g
    cs = max(1, min(chunk_size, l)) if l else 1
    pad = (-l) % cs
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    xdt = x * dt[..., None]  # (b, L, h, p): the input enters scaled by Δ
    a = dt * A  # (b, L, h): log-decay per step, <= 0
    # Split heads into (group, head-in-group) so B and C are never copied per head.
    X = rearrange(xdt, "b (c s) (g k) p -> b c s g k p", s=cs, g=g)
    Bc = rearrange(B, "b (c s) g n -> b c s g n", s=cs)
    Cc = rearrange(C, "b (c s) g n -> b c s g n", s=cs)
    a = rearrange(a, "b (c s) (g k) -> b g k c s", s=cs, g=g)
    a_cum = torch.cumsum(a, dim=-1)  # (b, g, k, c, s)

    # 1. intra-chunk outputs (the quadratic "attention-like" form): y_i = sum_{j<=i} C_i·B_j · decay(j->i) · X_j
    #    decay(j->i) = exp(a_cum_i - a_cum_j). Within one chunk the difference of cumulative sums is accurate
    #    enough (|a_cum| stays small over <= chunk_size steps) and needs one (s, s) tensor instead of three.
    causal = torch.ones(cs, cs, dtype=torch.bool, device=x.device).tril()
    Ldec = torch.exp((a_cum[..., :, None] - a_cum[..., None, :]).masked_fill(~causal, -torch.inf))
    CB = torch.einsum("bcign,bcjgn->bcgij", Cc, Bc)  # (b, c, g, s_i, s_j)
    y_diag = torch.einsum("bcgij,bgkcij,bcjgkp->bcigkp", CB, Ldec, X)

    # 2. the state each chunk produces on its own (from zero): sum_j decay(j->end) · X_j ⊗ B_j
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, k, c, s)
    states = torch.einsum("bcjgn,bgkcj,bcjgkp->bcgkpn", Bc, decay_states, X)  # (b, c, g, k, p, n)

    # 3. inter-chunk recurrence over chunk boundaries (a scalar decay per head and chunk)
    if initial_state is None:
        init = states.new_zeros(b, 1, g, hg, p, n)
    else:
        init = rearrange(initial_state.to(states.dtype), "b (g k) p n -> b 1 g k p n", g=g)
    states = torch.cat([init, states], dim=1)  # (b, c+1, g, k, p, n)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, g, k, c+1, c+1)
    states = torch.einsum("bgkzc,bcgkpn->bzgkpn", decay_chunk, states)
    states, final = states[:, :-1], states[:, -1]  # entering states per chunk; state after the last chunk

    # 4. contribution of each chunk's entering state to its outputs
    y_off = torch.einsum("bcign,bcgkpn,bgkci->bcigkp", Cc, states, torch.exp(a_cum))
    y = rearrange(y_diag + y_off, "b c s g k p -> b (c s) (g k) p")[:, :l]
    if D is not None:
        y = y + x[:, :l] * D[:, None]
    if return_final_state:
        return y, rearrange(final, "b g k p n -> b (g k) p n")
    return y


# ---- backend registry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One SSD implementation a Mamba2 mixer can run."""

    summary: str  # what it is, for --help
    load: Callable[[], SSDFn]  # the function; raises ImportError when an optional dependency is missing
    cuda_only: bool = False
    public: bool = False  # offered to users (--backend, TrainConfig.backend); the others are for tests


def _load_triton() -> SSDFn:
    # Triton is optional (pip install triton) and pulls in a compiler stack, so it is imported on first use.
    # ssd_triton imports only ssd_types, never this module.
    from bsmamba2.model.mixers.ssd_triton import ssd_triton

    return ssd_triton


# Under Triton's interpreter (TRITON_INTERPRET=1, used by the tests) the kernels run on CPU tensors.
_TRITON_ON_CPU = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _load_fast() -> SSDFn:
    from bsmamba2.model.mixers.ssd_fast import ssd_fast  # imports only ssd_types, never this module

    return ssd_fast


def _load_export() -> SSDFn:
    from bsmamba2.model.mixers.ssd_export import ssd_export  # imports no other module of the package

    return ssd_export


BACKENDS: dict[str, Backend] = {
    "torch": Backend("the plain-PyTorch reference, any device", lambda: ssd_chunked, public=True),
    "fast": Backend("plain PyTorch laid out for speed, any device", _load_fast, public=True),
    "triton": Backend("fused kernels, CUDA", _load_triton, cuda_only=not _TRITON_ON_CPU, public=True),
    "naive": Backend("the step-by-step recurrence, for tests", lambda: ssd_naive),
    "export": Backend("traceable into ONNX (bsmamba2 export)", _load_export),
    "recurrent": Backend("the recurrence in few passes, for streaming steps", lambda: ssd_recurrent),
}
ALIASES = {"chunked": "torch"}  # the reference's earlier name, still accepted
AUTO = "auto"  # "triton" on CUDA when Triton imports, else "fast"
# What a user picks from, and the --help line that explains it.
USER_BACKENDS: tuple[str, ...] = (AUTO, *(name for name, b in BACKENDS.items() if b.public))
BACKEND_HELP = "Mamba2 scan: " + ", ".join(
    [f"{AUTO} (fused Triton on CUDA, else fast)"]
    + [f"{name} ({b.summary})" for name, b in BACKENDS.items() if b.public]
)
_loaded: dict[str, SSDFn] = {}
_logged: set[tuple[str, str]] = set()


class BackendError(UserError, ValueError):
    """An SSD backend name that is unknown, not installed or not usable on the device (one line)."""


def _function(name: str) -> SSDFn:
    """The function of registered backend ``name``, loaded once; BackendError if its dependency is missing."""
    if name not in _loaded:
        try:
            _loaded[name] = BACKENDS[name].load()
        except ImportError as e:
            raise BackendError(f"SSD backend {name!r} is not installed ({e})") from None
    return _loaded[name]


def _available(name: str) -> bool:
    try:
        _function(name)
    except BackendError:
        return False
    return True


def resolve_backend(name: str, device: torch.device | None = None) -> str:
    """The registered backend that ``name`` means on ``device``, checked; ``BackendError`` otherwise.

    auto = the fused "triton" kernels on CUDA when Triton imports (checked against the float64 reference on an
    H100 by tests/test_ssd_triton.py -m gpu and benchmarks/bench_ssd.py), else "fast" (plain PyTorch laid out for speed; "torch" is the
    readable reference it is tested against). ``device=None`` (not known yet) reads auto as "fast" and checks an explicit name
    only for being installed. The choice is logged once per (backend, device type).
    """
    where = device.type if device is not None else "cpu"
    if name == AUTO:
        name = "triton" if where == "cuda" and _available("triton") else "fast"
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise BackendError(f"unknown SSD backend {name!r}; choose from {', '.join(USER_BACKENDS)}")
    if BACKENDS[name].cuda_only and device is not None and device.type != "cuda":
        raise BackendError(f"SSD backend {name!r} needs a CUDA device, got {device.type}")
    _function(name)
    key = (name, device.type if device is not None else "any device")
    if key not in _logged:
        _logged.add(key)
        log.debug("SSD backend: %s on %s", *key)
    return name


def backend_function(name: str) -> SSDFn:
    """The scan function of a backend name (as ``resolve_backend`` returns, or an alias): what a model stores
    when it is built, so that nothing is looked up per forward."""
    return _function(ALIASES.get(name, name))


def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    backend: str = "torch",
    chunk_size: int = 256,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the SSD scan with a named backend (see the module docstring for shapes), for scripts and tests."""
    fn = backend_function(backend)
    return fn(
        x,
        dt,
        A,
        B,
        C,
        D,
        chunk_size=chunk_size,
        initial_state=initial_state,
        return_final_state=return_final_state,
    )
