"""The two blocks of a causal BSMamba2 layer in ``FramePlan``'s form: few kernels per frame.

A 10 ms push runs one STFT frame: every product is (62 × d) @ (d × ·), where a kernel's fixed cost and the
passes over memory weigh as much as its arithmetic. The layout below is chosen for that, from copies of the
weights taken when a plan is built:

* constants folded into the products: each prenorm's weight into ``in_proj`` (its rows), ``dt_bias`` into a
  bias of the input product, each gated norm's weight into ``out_proj`` (its rows), ``out_proj`` into the
  block's merge Linear and the residual into the merge as an identity (``x + x·L = x·(L + I)``), so a block
  ends in one product;
* ``TimeBlock``: the conv tail kept as a ring of d_conv slots plus a slot of ones that carries the conv bias
  (the causal convolution of a frame is one multiply and one sum, no concatenation); the SSM state kept as S̃
  with a per-(sequence, head) scale, S = scale · S̃, so that a step's decay is a multiply of the (m, h) scale
  rather than a pass over the state: one in-place rank-one update and one read-out per frame. S̃ is rescaled
  to S when a scale would fall below ``RESCALE_BELOW``, and a step whose own decay is that small runs the
  plain update;
* ``BandBlock``: both directions in one batched product (the backward one reads the bands reversed, gathered
  with the input in one index), the depthwise conv as d_conv in-place multiply-adds on shifted views, the
  SSD over the bands in its quadratic (attention-like) form, one (bands × bands) matrix per head.

Axis legend: m sequences (streams · bands) of a time block, l frames, n frames of a band block, k bands,
d model dim, e directions (forward, backward), c in_proj width, h heads, p head dim, s state size, g groups,
j heads per group, w d_conv taps.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.dualpath import BidirectionalBlock, ForwardBlock, PreNormBlock
from bsmamba2.model.mixers.mamba2 import Mamba2

RESCALE_BELOW = 1e-18  # S̃ is folded back into S before a scale drops below this (1/scale stays finite)
FACTORED_RANGE = 120.0  # band decays summing beyond this (per sequence and head) take the quadratic SSD
PENDING = 8  # frames of rank-one SSM updates kept aside and added into S̃ as one product (module doc)


class TimeState(NamedTuple):
    """A time block's carried state in the plan's form.

    ``conv`` (m, w + 1, conv_dim): the last w inputs of the causal convolution in ring slots 0..w−1 (the
    newest at ``pos``) and a slot of ones (the bias's). The SSM state S (m, h, p, s) is kept as
    S = scale · (S̃ + Σ_q B_q ⊗ v_q): ``ssm`` (m·g, s, j·p) S̃ laid out per group (S[:, g·j + i] =
    scale[:, g·j + i] · S̃[g, :, i·p:(i+1)·p]ᵀ for head i of group g), ``scale`` (m, h), and the last
    frames' rank-one terms not yet added into S̃: ``b_buf`` (m·g, K, s), ``v_buf`` (m·g, K, j·p) (slots ≥
    ``fill`` are zero)."""

    conv: Tensor
    ssm: Tensor
    scale: Tensor
    pos: int
    b_buf: Tensor
    v_buf: Tensor
    fill: int


class _Mixer:
    """One prenorm Mamba2 block's weights, detached and folded for ``x̂ @ w`` (x̂ = x / rms(x))."""

    def __init__(self, block: PreNormBlock) -> None:
        m = cast(Mamba2, block.mixer)
        self.sizes = (m.d_inner, m.ngroups * m.d_state, m.nheads)
        self.h, self.p, self.g, self.n = m.nheads, m.headdim, m.ngroups, m.d_state
        self.norm_eps, self.gate_eps = block.norm.eps, m.norm.eps
        dtype = m.in_proj.weight.dtype
        # (x̂ · w) Wᵀ = x̂ (diag(w) Wᵀ): the prenorm's weight folded into in_proj
        w_in = block.norm.weight.detach().double()[:, None] * m.in_proj.weight.detach().double().t()
        self.w_in = w_in.to(dtype).contiguous()  # (d, c), c = 2·d_inner + 2·g·s + h
        bias = torch.zeros(w_in.shape[1], dtype=dtype, device=w_in.device)
        bias[-m.nheads :] = m.dt_bias.detach()
        self.in_bias = bias  # (c,): dt_bias in the dt columns
        self.conv_w = m.conv1d.weight.detach()[:, 0, :].t().contiguous()  # (w, conv_dim)
        assert m.conv1d.bias is not None  # built with bias=True
        self.conv_b = m.conv1d.bias.detach()
        self.A = -torch.exp(m.A_log.detach().float())  # (h,)
        self.D = m.D.detach()
        # (ĝ · w_gate) W_outᵀ = ĝ (diag(w_gate) W_outᵀ): the gated norm's weight folded into out_proj
        w_out = m.norm.weight.detach().double()[:, None] * m.out_proj.weight.detach().double().t()
        self.w_out = w_out  # (d_inner, d) float64, folded further by the block

    @property
    def acc(self) -> torch.dtype:
        return torch.promote_types(self.w_in.dtype, torch.float32)


class TimeBlock:
    """The causal time block (``ForwardBlock`` of a prenorm Mamba2): y = x + Linear(x + M(N(x)))."""

    def __init__(self, block: ForwardBlock) -> None:
        mix = self.mix = _Mixer(cast(PreNormBlock, block.forward_blocks[0]))
        dtype = mix.w_in.dtype
        # y = x + [ĝ ‖ x] · [diag(w_gate)·W_outᵀ·Linᵀ ; Linᵀ + I] + bias: one product, the residual in it
        lin = block.linear.weight.detach().double().t()  # (d, d)
        eye = torch.eye(lin.shape[0], dtype=lin.dtype, device=lin.device)
        self.w_out = torch.cat([mix.w_out @ lin, lin + eye]).to(dtype).contiguous()  # (d_inner + d, d)
        self.out_bias = block.linear.bias.detach()
        # ring weights: at ring position q, slot i holds the input (q − i) mod w frames back; slot w is ones
        w = mix.conv_w.shape[0]
        slots = torch.arange(w)
        rings = []
        for q in range(w):
            back = (q - slots) % w  # frames back of each slot
            rings.append(torch.cat([mix.conv_w[w - 1 - back], mix.conv_b[None]]))
        self.ring_w = torch.stack(rings)  # (w, w + 1, conv_dim)

    def state(self, m: int, device: torch.device, stagger: int = 0, pending: int = PENDING) -> TimeState:
        """Before the first frame of m sequences. ``stagger``: pending slots counted as used at the start
        (zeros), so that the layers of a plan add their pending updates into S̃ on different frames;
        ``pending``: K, the frames of updates kept aside."""
        mix = self.mix
        w, conv_dim = self.ring_w.shape[0], self.ring_w.shape[-1]
        conv = torch.zeros(m, w + 1, conv_dim, device=device, dtype=mix.w_in.dtype)
        conv[:, w] = 1.0
        acc, jp = mix.acc, mix.h // mix.g * mix.p
        ssm = torch.zeros(m * mix.g, mix.n, jp, device=device, dtype=acc)
        scale = torch.ones(m, mix.h, device=device, dtype=acc)
        b_buf = torch.zeros(m * mix.g, pending, mix.n, device=device, dtype=acc)
        v_buf = torch.zeros(m * mix.g, pending, jp, device=device, dtype=acc)
        return TimeState(conv, ssm, scale, w - 1, b_buf, v_buf, stagger % pending)

    def __call__(self, x: Tensor, st: TimeState) -> tuple[Tensor, TimeState]:
        """The next l frames x (m, l, d) -> (m, l, d) and the state after them (its tensors updated in
        place)."""
        mix = self.mix
        m, l, d = x.shape
        d_inner, gn, h = mix.sizes
        acc, p = mix.acc, mix.p
        u = rms_normed(x, mix.norm_eps)  # the prenorm (its weight is in w_in)
        proj = torch.addmm(mix.in_bias, u.reshape(m * l, d), mix.w_in).view(m, l, -1)
        z, xBC, dt = proj.split([d_inner, d_inner + 2 * gn, h], dim=-1)
        # (m, l, h), dt_bias added by the product; contiguous first: softplus of a strided slice is 3x slower
        dt = F.softplus(dt.to(acc).contiguous())
        decay = torch.exp(dt * mix.A)  # (m, l, h): each frame's decay
        gate = F.silu(z.to(acc))  # (m, l, d_inner)
        ys, pos = [], st.pos
        for t in range(l):
            pos = (pos + 1) % self.ring_w.shape[0]
            st.conv[:, pos] = xBC[:, t]
            conv = (st.conv * self.ring_w[pos]).sum(1)  # (m, conv_dim): causal conv with its bias
            xs, B, C = F.silu(conv, inplace=True).to(acc).split([d_inner, gn, gn], dim=-1)
            y, st = _ssm_step(mix, st, decay[:, t], dt[:, t], xs.view(m, h, p), B, C)
            ys.append(y)
        y = ys[0][:, None] if l == 1 else torch.stack(ys, dim=1)  # (m, l, h, p)
        g = rms_normed(y.view(m, l, d_inner) * gate, mix.gate_eps).to(x.dtype)  # gate weight in w_out
        both = torch.cat([g, x], dim=-1).view(m * l, -1)  # (m·l, d_inner + d)
        out = torch.addmm(self.out_bias, both, self.w_out).view(m, l, d)
        return out, st._replace(pos=pos)


def _ssm_step(
    mix: _Mixer, st: TimeState, a: Tensor, dt: Tensor, xs: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, TimeState]:
    """One frame of the SSM on the state's tensors, updated in place: decay a and Δ (m, h), x (m, h, p),
    B and C (m, g·s) -> y (m, h, p) = C·S + D·x, and the state after it.

    S_t = a_t·S_{t−1} + B_t ⊗ Δ_t·x_t is S_t = σ_t·S̃_t with σ_t = σ_{t−1}·a_t and S̃_t = S̃_{t−1} + B_t ⊗ v_t,
    v_t = Δ_t·x_t / σ_t: no pass over the state for the decay. The rank-one terms wait in the pending slots,
    read out as C·S̃ + (C·B_buf)·v_buf, and go into S̃ as one (s × K) @ (K × j·p) product every K frames:
    one read of S̃ per frame instead of a read and a write for the update and a read for the read-out."""
    m, h, p = xs.shape
    g, s = mix.g, mix.n
    j = h // g
    S, fill = st.ssm, st.fill
    new = st.scale * a
    if new.min().item() < RESCALE_BELOW:  # fold the scale into S̃ first (rare: every few dozen decays)
        _add_pending(st)
        fill = 0
        _fold(S, st.scale, g)
        new = a.clone()
        if new.min().item() < RESCALE_BELOW:  # this decay alone wipes the state: plain update, no scale
            _fold(S, new, g)
            new = torch.ones_like(new)
    v = (dt / new).view(m, g, j, 1)
    torch.mul(xs.view(m, g, j, p), v, out=st.v_buf[:, fill].view(m, g, j, p))  # Δ·x / scale
    st.b_buf[:, fill].view(m, g, s).copy_(B.view(m, g, s))
    r = torch.bmm(C.reshape(m * g, 1, s), S)  # C·S̃ (m·g, 1, j·p)
    cb = torch.bmm(C.reshape(m * g, 1, s), st.b_buf.transpose(1, 2))  # C·B of the pending frames
    r = torch.baddbmm(r, cb, st.v_buf).view(m, h, p)
    y = torch.addcmul(xs * mix.D.view(h, 1), r, new[..., None])  # C·S = scale · C·(S̃ + pending)
    fill += 1
    if fill == st.v_buf.shape[1]:
        _add_pending(st)
        fill = 0
    return y, st._replace(scale=new, fill=fill)


def _add_pending(st: TimeState) -> None:
    """S̃ += Σ_q B_q ⊗ v_q over the pending slots (one batched product), which are zeroed."""
    st.ssm.baddbmm_(st.b_buf.transpose(1, 2), st.v_buf)
    st.v_buf.zero_()


def _fold(S: Tensor, factor: Tensor, g: int) -> None:
    """S̃ (m·g, s, j·p) *= factor (m, h), per head."""
    m, h = factor.shape
    S.view(m, g, S.shape[1], h // g, -1).mul_(factor.view(m, g, 1, h // g, 1))


class BandBlock:
    """A bidirectional band block with its two directions stacked (e = 2) and run as one."""

    def __init__(self, block: BidirectionalBlock, num_bands: int) -> None:
        fw = _Mixer(cast(PreNormBlock, block.forward_blocks[0]))
        bw = _Mixer(cast(PreNormBlock, block.backward_blocks[0]))
        self.mix, k = fw, num_bands
        self.w_in = torch.stack([fw.w_in, bw.w_in]).contiguous()  # (e, d, c)
        self.in_bias = torch.stack([fw.in_bias, bw.in_bias])[:, None]  # (e, 1, c)
        self.conv_w = torch.stack([fw.conv_w, bw.conv_w], dim=1)[:, :, None, None]  # (w, e, 1, 1, conv_dim)
        self.conv_b = torch.stack([fw.conv_b, bw.conv_b])[:, None, None]  # (e, 1, 1, conv_dim)
        self.A = torch.stack([fw.A, bw.A])[:, None, None]  # (e, 1, 1, h)
        self.D = torch.stack([fw.D, bw.D])[:, None, None, :, None]  # (e, 1, 1, h, 1)
        # x + Linear([x + ĝ_f·W_fᵀ ‖ x + flip(ĝ_b·W_bᵀ)]) = [ĝ_f ‖ flip(ĝ_b) ‖ x] · W + bias, with
        # W = [W_fᵀ·L₁ᵀ ; W_bᵀ·L₂ᵀ ; (L₁ + L₂)ᵀ + I] (L = [L₁ L₂] the merge's weight; flips commute with products)
        d = fw.w_out.shape[1]
        lin = block.linear.weight.detach().double()
        l1, l2 = lin[:, :d].t(), lin[:, d:].t()
        eye = torch.eye(d, dtype=lin.dtype, device=lin.device)
        w_out = torch.cat([fw.w_out @ l1, bw.w_out @ l2, l1 + l2 + eye])
        self.w_out = w_out.to(fw.w_in.dtype).contiguous()  # (2·d_inner + d, d)
        self.out_bias = block.linear.bias.detach()
        device = fw.w_in.device
        self.order = torch.cat([torch.arange(k), torch.arange(k).flip(0)]).to(device)  # bands, then reversed
        self.causal = torch.ones(k, k, device=device, dtype=fw.acc).tril()  # 1 on and below the diagonal

    def __call__(self, x: Tensor) -> Tensor:
        """(n, k, d) -> (n, k, d): n frames, each a sequence over the k bands, both directions."""
        mix = self.mix
        n, k, d = x.shape
        d_inner, gn, h = mix.sizes
        acc, g, w = mix.acc, mix.g, self.conv_w.shape[0]
        u = rms_normed(x, mix.norm_eps)  # both prenorms (weights in w_in)
        u2 = rearrange(u.index_select(1, self.order), "n (e k) d -> e (n k) d", e=2)
        proj = torch.baddbmm(self.in_bias, u2, self.w_in)  # (e, n·k, c); the backward's bands reversed
        z, xBC, dt = proj.split([d_inner, d_inner + 2 * gn, h], dim=-1)
        dt = F.softplus(dt.to(acc).contiguous())  # (e, n·k, h), dt_bias added by the product
        xBC = xBC.view(2, n, k, -1)
        conv = torch.addcmul(self.conv_b, xBC, self.conv_w[w - 1])  # causal conv over bands, zero-padded
        for i in range(1, w):
            conv[:, :, i:].addcmul_(xBC[:, :, :-i], self.conv_w[w - 1 - i])
        xv, B, C = F.silu(conv, inplace=True).to(acc).split([d_inner, gn, gn], dim=-1)
        # The SSD of each whole band sequence: y_i = D·x_i + Σ_{j≤i} exp(A_i − A_j) (C_i·B_j) Δ_j x_j, with
        # A_i = Σ_{t≤i} a_t (falling: a_t = Δ_t·A < 0).
        acum = (dt.view(2, n, k, h) * self.A).cumsum_(2)  # (e, n, k, h)
        Bg = rearrange(B, "e n k (g s) -> e n g k s", g=g)
        Cg = rearrange(C, "e n k (g s) -> e n g k s", g=g)
        CB = (Cg @ Bg.transpose(-1, -2)).mul_(self.causal)  # (e, n, g, k, k), zero above the diagonal
        xh = xv.view(2, n, k, h, mix.p)
        xD = xh * self.D
        ssd = _ssd_factored if acum[:, :, -1].min().item() >= -FACTORED_RANGE else _ssd_quadratic
        y = ssd(acum, dt.view(2, n, k, h), xh, CB, xD)  # (e, n, k, h, p)
        gate = F.silu(z.to(acc)).view(2, n, k, h, -1)
        g_ = torch.mul(y, gate, out=x.new_empty(2, n, k, h, mix.p, dtype=acc)).view(2, n, k, d_inner)
        g_ = rms_normed(g_, mix.gate_eps).to(x.dtype)  # gate weights in w_out
        both = torch.cat([g_[0], g_[1].flip(1), x], dim=-1).view(n * k, -1)  # (n·k, 2·d_inner + d)
        return torch.addmm(self.out_bias, both, self.w_out).view(n, k, d)


def _ssd_factored(acum: Tensor, dt: Tensor, xh: Tensor, CB: Tensor, xD: Tensor) -> Tensor:
    """The band SSD with exp(A_i − A_j) = exp(A_i − c)·exp(c − A_j), c = A_{k−1}/2 per sequence and head: the
    (k × k) decay matrix of each head is never formed, and the heads of a group share one (k × k) @
    (k × j·p) product with C·B. acum, dt (e, n, k, h); xh, xD (e, n, k, h, p); CB (e, n, g, k, k) masked ->
    y (e, n, k, h, p). Both factors stay within exp(±FACTORED_RANGE/2): normal floats, no overflow."""
    g, p = CB.shape[2], xh.shape[-1]
    rel = acum - acum[:, :, -1:] * 0.5  # A_i − c
    out_w = rel.exp()  # exp(A_i − c)
    in_w = rel.neg_().exp_().mul_(dt)  # Δ_j·exp(c − A_j)
    X = rearrange(xh * in_w[..., None], "e n k (g j) p -> e n g k (j p)", g=g)
    Y = rearrange(CB @ X, "e n g k (j p) -> e n k (g j) p", p=p)
    return torch.addcmul(xD, Y, out_w[..., None])


def _ssd_quadratic(acum: Tensor, dt: Tensor, xh: Tensor, CB: Tensor, xD: Tensor) -> Tensor:
    """The band SSD with each head's decay matrix formed (``_ssd_factored``'s function, for decays that sum
    beyond its range); same arguments and result."""
    e, n, k, h, p = xh.shape
    g = CB.shape[2]
    at = acum.transpose(-1, -2).contiguous()  # (e, n, h, k)
    # exp of arguments below about -87 gives float32 subnormals, which cost ~10x a normal exp on CPU:
    # clamped at -80 (a weight under 2e-35, next to the diagonal's 1); above the diagonal (> 0) at 0,
    # where the causal mask of C·B zeroes it.
    L = (at[..., :, None] - at[..., None, :]).clamp_(min=-80.0, max=0.0).exp_()  # (e, n, h, k, k)
    L.view(e, n, g, h // g, k, k).mul_(CB[:, :, :, None])
    X = rearrange(xh * dt[..., None], "e n k h p -> (e n h) k p")  # Δ·x
    y = rearrange(torch.bmm(L.view(-1, k, k), X), "(e n h) k p -> e n k h p", e=e, n=n)
    return y + xD


def rms_normed(x: Tensor, eps: float) -> Tensor:
    """x / √(mean(x²) + eps) over the last axis, any shape. (``F.rms_norm`` runs as ~20 kernels on CPU;
    this is one norm, four in-place ops on the (…, 1) factor and one multiply.)"""
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * r.square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def is_plain_layer(layer: nn.Module) -> bool:
    """Whether a layer is (ForwardBlock, BidirectionalBlock) of prenorm Mamba2 mixers, the form these run."""
    if not isinstance(layer, nn.ModuleList):
        return False
    t, b = layer[0], layer[1]
    if not (isinstance(t, ForwardBlock) and isinstance(b, BidirectionalBlock)):
        return False
    blocks = [t.forward_blocks[0], b.forward_blocks[0], b.backward_blocks[0]]
    return all(isinstance(x, PreNormBlock) and isinstance(x.mixer, Mamba2) for x in blocks)
