"""Mamba2 sequence mixer with mamba_ssm v2.2.2's parameter names and semantics (OFFICIAL_SPEC §1.6).

(batch, length, dim) -> (batch, length, dim). The SSD scan itself lives in ``ssd.py`` (reference forms) and in
optional fused kernels, chosen when the model is built; this module is the projections, the causal depthwise
convolution, Δ and A, the gated norm and the output projection around it, in these forms:

* ``Mamba2.forward``: the readable eager module, the reference (on the CPU without autograd, with the ``fast``
  scan, it hands over to ``mamba2_cpu``: the same function in fewer passes over memory; on CUDA without
  autograd, with the Triton scan, its conv + SiLU and gated-norm kernels replace torch's passes);
* ``Mamba2.step``: the same function on a piece of a sequence, carrying the state (``Mamba2State``) across
  pieces, for streaming;
* ``FusedMamba2Block``: a whole prenorm block with the memory-bound work around the scan compiled by
  torch.compile (the module-free functions of ``mamba2_glue``), same parameters and function;
* ``PairedMamba2Block``: the fused bidirectional block, both directions as one stacked computation (compiled
  ``mamba2_pair`` glue, one SSD launch for both directions on the Triton backend, no flipped copies).

``build_block`` makes the official bidirectional block of either form; the registry calls it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.config import Mamba2Config
from bsmamba2.model.dualpath import BidirectionalBlock, ForwardBlock, PreNormBlock
from bsmamba2.model.mixers import mamba2_cpu
from bsmamba2.model.mixers.base import BlockOptions, SequenceMixer
from bsmamba2.model.mixers.mamba2_glue import fused_glue
from bsmamba2.model.mixers.mamba2_pair import pair_scan_of
from bsmamba2.model.mixers.ssd import ssd_chunked, ssd_recurrent
from bsmamba2.model.mixers.ssd_types import SSDFn
from bsmamba2.model.norms import GatedNormKernel, GatedRMSNorm, RMSNormKernel, triton_norm_applies

RECURRENT_STEPS = 4  # Mamba2.step runs pieces up to this long as the step-by-step recurrence


class Mamba2State(NamedTuple):
    """What a Mamba2 mixer carries from one piece of a sequence to the next."""

    conv: Tensor  # (b, d_conv - 1, conv_dim): the last d_conv - 1 inputs x‖B‖C of the causal convolution
    ssm: Tensor  # (b, heads, headdim, d_state): the SSM state S after the last step, float32 or wider


class Mamba2(SequenceMixer):
    """Mamba2 mixer. Parameters: in_proj (z, x, B, C, dt), conv1d, dt_bias, A_log, D, norm, out_proj.

    Official sizes for d_model=256: expand 4 → d_inner 1024, headdim 64 → 16 heads, d_state 128, 1 group,
    d_conv 4; in_proj has 2·1024 + 2·128 + 16 = 2320 outputs. ``scan`` is the SSD function (a backend of
    ``ssd.py``'s registry, resolved when the model is built); the default is the plain-PyTorch reference.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 4,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        scan: SSDFn = ssd_chunked,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        self.ngroups = ngroups
        self.d_state = d_state
        self.chunk_size = chunk_size
        self.scan = scan
        conv_dim = self.d_inner + 2 * ngroups * d_state  # the x, B, C channels share one convolution
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)
        # Δ bias: softplus⁻¹ of a log-uniform draw in [dt_min, dt_max] (floored), as mamba_ssm initialises it.
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log), one scalar per head (Mamba2's A = a·I), a drawn from U(A_init_range).
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:  # u (b, l, d_model) -> (b, l, d_model)
        if mamba2_cpu.applies(self, u):  # CPU inference with the fast scan: the same function, fewer passes
            return mamba2_cpu.forward(self, u)
        l = u.shape[1]
        z, xBC, dt = self._project(u)
        inference = xBC.is_cuda and not torch.is_grad_enabled()
        conv_silu = getattr(self.scan, "conv_silu", None) if inference else None
        if conv_silu is not None:
            # Inference on the Triton backend: its conv + SiLU kernel, one pass over the in_proj output's
            # strided view; torch's depthwise conv1d on CUDA took ~9x the memory-bound time at these shapes
            # (bf16), plus two layout copies (BENCHMARKS.md, issue 12). Training keeps torch's conv.
            w, bias = self.conv1d.weight[:, 0, :], cast(Tensor, self.conv1d.bias)
            xBC = conv_silu(xBC[None], w[None], bias[None])[0]
        else:
            # Causal depthwise conv: pad d_conv-1 on both sides, keep the first l outputs (zeros before t = 0).
            xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :l].transpose(1, 2))  # (b, l, d_inner + 2·g·n)
        y = self._scan(xBC, dt)
        gated: GatedNormKernel | None = getattr(self.scan, "gated_rms_norm", None)
        if gated is not None and triton_norm_applies(y):
            # Inference on the Triton backend: the gated norm in one pass, z read in place in the in_proj
            # output (the reference's chain is ~10 memory-bound passes; issue 12).
            return self.out_proj(gated(y, z, self.norm.weight, self.norm.eps))
        return self.out_proj(self.norm(y, z))

    def prenorm_kernel(self) -> RMSNormKernel | None:
        """The Triton backend's one-pass prenorm (``norm_triton.rms_norm``); None on the other backends."""
        return getattr(self.scan, "rms_norm", None)

    # ---- streaming ---------------------------------------------------------------------------------------
    @property
    def streamable(self) -> bool:
        return True

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Mamba2State:
        """Zeros: no input seen yet. ``dtype`` is the activations' (default: the weights'); the SSM state is
        kept in at least float32, as the scan accumulates it."""
        w = self.in_proj.weight
        device = w.device if device is None else device
        dtype = w.dtype if dtype is None else dtype
        conv_dim, _, K = self.conv1d.weight.shape
        return Mamba2State(
            conv=torch.zeros(batch, K - 1, conv_dim, device=device, dtype=dtype),
            ssm=torch.zeros(
                batch, self.nheads, self.headdim, self.d_state, device=device,
                dtype=torch.promote_types(dtype, torch.float32),
            ),
        )  # fmt: skip

    def step(self, u: Tensor, state: Mamba2State) -> tuple[Tensor, Mamba2State]:
        """The next piece u (b, l, d_model), l ≥ 1, of sequences whose earlier part left ``state``.

        Returns (y (b, l, d_model), the state after this piece); pieces run one after another from
        ``init_state`` give what ``forward`` gives on the whole sequence. ``state`` is consumed: for pieces of
        up to ``RECURRENT_STEPS`` its SSM tensor is updated in place (as mamba_ssm's ``step`` does), so a
        caller that branches a stream copies the state first."""
        z, xBC, dt = self._project(u)
        K = self.conv1d.weight.shape[-1]
        # The convolution sees the previous K - 1 inputs, then this piece: no padding, exactly l outputs.
        xp = torch.cat([state.conv.to(xBC.dtype), xBC], dim=1)  # (b, K - 1 + l, conv_dim)
        l = u.shape[1]
        # A piece of a few steps (a stream's frame or two) runs the convolution as K multiply-adds and the
        # plain recurrence, in the state's dtype: the general forms cost more kernels and layout copies than
        # the arithmetic. Same function, other rounding.
        short = l <= RECURRENT_STEPS
        if short:
            w = self.conv1d.weight[:, 0, :]  # (conv_dim, K)
            bias = self.conv1d.bias
            assert bias is not None  # built with bias=True
            conv = bias + xp[:, 0:l] * w[:, 0]
            for k in range(1, K):
                conv = conv + xp[:, k : k + l] * w[:, k]  # (b, l, conv_dim)
        else:
            conv = F.conv1d(
                xp.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, groups=self.conv1d.groups
            ).transpose(1, 2)
        x, dt, A, B, C, D = self._scan_inputs(F.silu(conv), dt)
        if short:  # the carried SSM state is updated in place: ``state`` is consumed
            x, B, C = x.to(state.ssm.dtype), B.to(state.ssm.dtype), C.to(state.ssm.dtype)
            out = ssd_recurrent(
                x, dt, A, B, C, D, initial_state=state.ssm, return_final_state=True, inplace=True
            )
        else:
            out = self.scan(
                x, dt, A, B, C, D,
                chunk_size=self.chunk_size, initial_state=state.ssm, return_final_state=True,
            )  # fmt: skip
        assert isinstance(out, tuple)
        y, ssm = out
        y = self.out_proj(self.norm(rearrange(y, "b l h p -> b l (h p)"), z))
        tail = xp[:, xp.shape[1] - (K - 1) :].clone()  # a copy, so the state does not hold on to the piece
        return y, Mamba2State(conv=tail, ssm=ssm)

    # ---- pieces shared by the forms ------------------------------------------------------------------------
    def _project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (b, l, d_model) -> z (b, l, d_inner), pre-conv xBC (b, l, d_inner + 2·g·n), Δ (b, l, h)."""
        gn = self.ngroups * self.d_state
        zxbcdt = self.in_proj(u)  # (b, l, 2·d_inner + 2·g·n + h)
        z, xBC, dt = zxbcdt.split([self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        acc = torch.promote_types(u.dtype, torch.float32)  # Δ and A in (at least) float32, as mamba_ssm
        dt = F.softplus(dt.to(acc) + self.dt_bias.to(acc))  # (b, l, h) Δ > 0; never clamped (dt_limit (0, ∞))
        return z, xBC, dt

    def _scan_inputs(self, xBC: Tensor, dt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The SSD's (x, dt, A, B, C, D) from the activated conv output xBC (b, l, ·) and Δ (b, l, h)."""
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        A = -torch.exp(self.A_log.to(dt.dtype))  # (h,)
        return (
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            dt,
            A,
            rearrange(B, "b l (g n) -> b l g n", g=self.ngroups),
            rearrange(C, "b l (g n) -> b l g n", g=self.ngroups),
            self.D.to(dt.dtype),
        )

    def _scan(self, xBC: Tensor, dt: Tensor) -> Tensor:
        """The SSD of a whole sequence from zero state: (b, l, ·), (b, l, h) -> y (b, l, d_inner)."""
        y = self.scan(*self._scan_inputs(xBC, dt), chunk_size=self.chunk_size)
        assert isinstance(y, Tensor)
        return rearrange(y, "b l h p -> b l (h p)")  # (b, l, d_inner)


class FusedMamba2Block(PreNormBlock):
    """A prenorm Mamba2 block, ``x + mixer(norm(x))``, with the memory-bound work around the scan compiled into
    few kernels (``block_in`` / ``block_out`` under torch.compile); the scan runs in its backend between them.

    Same parameters and function as ``PreNormBlock(dim, mixer)``, fewer kernels and less saved activation
    memory. Needs a working torch.compile (a C/C++ compiler on CPU, Triton on CUDA); the first call of each
    shape compiles. ``step`` (streaming) is the eager one it inherits.
    """

    def __init__(self, dim: int, mixer: Mamba2) -> None:
        super().__init__(dim, mixer)

    def forward(self, x: Tensor, flip: bool = False) -> Tensor:  # (n, l, d) -> (n, l, d)
        m = cast(Mamba2, self.mixer)  # the constructor takes only a Mamba2
        w_in, w_out = m.in_proj.weight, m.out_proj.weight
        if torch.is_autocast_enabled(x.device.type):  # the compiled graphs see autocast's casts explicitly
            dtype = torch.get_autocast_dtype(x.device.type)
            w_in, w_out = w_in.to(dtype), w_out.to(dtype)
        sizes = (m.d_inner, m.ngroups * m.d_state, m.nheads)
        with torch.autocast(x.device.type, enabled=False):
            z, xBC, dt = fused_glue("in")(
                x,
                self.norm.weight,
                self.norm.eps,
                w_in,
                m.conv1d.weight,
                m.conv1d.bias,
                m.dt_bias,
                sizes,
                flip,
            )
        y = m._scan(xBC, dt)
        with torch.autocast(x.device.type, enabled=False):
            return fused_glue("out")(y.to(z.dtype), z, m.norm.weight, m.norm.eps, w_out, x, flip)


class PairedMamba2Block(BidirectionalBlock):
    """The bidirectional block with both directions computed at once (``mamba2_pair``): the weights of the
    forward and backward ``FusedMamba2Block``s stacked along a direction axis, one batched GEMM per projection,
    one compiled graph per side of the scan, and the scan of both directions in one call (one launch per
    kernel with the Triton backend, the backward direction by reversed indexing: no flipped copies).

    Same parameters (``forward_blocks.0``, ``backward_blocks.0``, ``linear``) and function as
    ``BidirectionalBlock``; needs torch.compile like ``FusedMamba2Block``.
    """

    def forward(self, x: Tensor) -> Tensor:  # (n, l, d) -> (n, l, d)
        blocks = [
            cast(FusedMamba2Block, self.forward_blocks[0]),
            cast(FusedMamba2Block, self.backward_blocks[0]),
        ]
        ms = [cast(Mamba2, b.mixer) for b in blocks]
        m = ms[0]
        w_in = torch.stack([mm.in_proj.weight for mm in ms])  # (2, 2·d_inner + 2·g·n + h, d)
        w_out = torch.stack([mm.out_proj.weight for mm in ms])  # (2, d, d_inner)
        if torch.is_autocast_enabled(x.device.type):  # the compiled graphs see autocast's casts explicitly
            dtype = torch.get_autocast_dtype(x.device.type)
            w_in, w_out = w_in.to(dtype), w_out.to(dtype)
        sizes = (m.d_inner, m.ngroups * m.d_state, m.nheads)
        conv_w = torch.stack([mm.conv1d.weight[:, 0, :] for mm in ms])  # (2, ch, K)
        conv_b = torch.stack([cast(Tensor, mm.conv1d.bias) for mm in ms])
        conv = getattr(m.scan, "conv_silu", None) if TRITON_CONV else None
        with torch.autocast(x.device.type, enabled=False):
            z, xBC, dt = fused_glue("pair_in")(
                x,
                torch.stack([b.norm.weight for b in blocks]),
                blocks[0].norm.eps,
                w_in,
                conv_w,
                conv_b,
                torch.stack([mm.dt_bias for mm in ms]),
                sizes,
                conv is None,
            )
        if conv is not None:  # the Triton conv + SiLU kernel (direction per sequence), outside the graph
            xBC = conv(xBC, conv_w, conv_b)
        # the scan over the stacked batch (2·n sequences): x, B, C are views of the conv output, no copies
        two, n, l, _ = xBC.shape
        gn = m.ngroups * m.d_state
        xs, B, C = xBC.reshape(two * n, l, -1).split([m.d_inner, gn, gn], dim=-1)
        A = -torch.exp(torch.stack([mm.A_log for mm in ms]).to(dt.dtype))  # (2, h): one row per direction
        D = torch.stack([mm.D for mm in ms]).to(dt.dtype)
        y = pair_scan_of(m.scan, m.chunk_size)(
            rearrange(xs, "b l (h p) -> b l h p", p=m.headdim),
            dt.reshape(two * n, l, m.nheads),
            A,
            rearrange(B, "b l (g n) -> b l g n", g=m.ngroups),
            rearrange(C, "b l (g n) -> b l g n", g=m.ngroups),
            D,
        )  # (2·n, l, h, p)
        y = y.reshape(two, n, l, m.d_inner)
        with torch.autocast(x.device.type, enabled=False):
            f_b = fused_glue("pair_out")(
                y.to(z.dtype), z, torch.stack([mm.norm.weight for mm in ms]), m.norm.eps, w_out, x
            )
        return x + self.linear(f_b)


# Fused bidirectional blocks may run both directions at once (``PairedMamba2Block``). Off by default: on the
# H200 (2026-12-01) its training step was 703 ms against 693 ms for two ``FusedMamba2Block`` calls with
# flipped copies (BENCHMARKS.md), so it does not pay yet. Benchmarks and tests set it to build either form.
PAIR_DIRECTIONS = False
# Paired blocks on the Triton backend run the conv + SiLU in conv_triton's kernel instead of inside the compiled
# graph (an experiment for benchmarks until measured faster; same function).
TRITON_CONV = False
# Fused bidirectional blocks on the Triton backend may be ``mixer_triton.KernelMamba2Block``: the whole block as
# one autograd Function over Triton kernels and batched GEMMs (issue 13), keeping what this says for the
# backward ("all", or "input": recompute inside the block, in place of the dual path's checkpointing). None
# (the default): not built. Benchmarks and tests set it until it is measured faster than the default.
KERNEL_BLOCKS: str | None = None


def build_block(dim: int, settings: Mamba2Config, options: BlockOptions) -> BidirectionalBlock | ForwardBlock:
    """The official bidirectional Mamba2 block (OFFICIAL_SPEC §1.5), (n, l, dim) -> (n, l, dim): eager
    prenorm blocks, or when ``options.fused`` a ``PairedMamba2Block`` of ``FusedMamba2Block``s, around mixers
    scanning with ``options.scan``. With ``options.causal``, its forward branch alone (``ForwardBlock``,
    streamable)."""
    block_cls = FusedMamba2Block if options.fused else PreNormBlock
    scan = mamba2_cpu.causal_scan(options.scan) if options.causal else options.scan

    def make() -> PreNormBlock:  # the settings' fields are Mamba2's keyword arguments
        return block_cls(dim, Mamba2(dim, **dataclasses.asdict(settings), scan=scan))

    if options.causal:
        return ForwardBlock(dim, make)
    if options.fused and KERNEL_BLOCKS is not None and getattr(scan, "__name__", "") == "ssd_triton":
        from bsmamba2.model.mixers.mixer_triton import SAVE_MODES, KernelMamba2Block  # imports triton

        if KERNEL_BLOCKS not in SAVE_MODES:
            raise ValueError(
                f"mamba2.KERNEL_BLOCKS must be one of {SAVE_MODES} or None, got {KERNEL_BLOCKS!r}"
            )
        block = KernelMamba2Block(
            dim, lambda: PreNormBlock(dim, Mamba2(dim, **dataclasses.asdict(settings), scan=scan))
        )
        block.save = KERNEL_BLOCKS
        return block
    return (
        PairedMamba2Block(dim, make) if options.fused and PAIR_DIRECTIONS else BidirectionalBlock(dim, make)
    )
