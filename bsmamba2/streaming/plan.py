"""``FramePlan``: a causal BSMamba2's per-frame function with its weights laid out for small steps.

A stream at 10 ms blocks runs the network on one STFT frame per push, where the work per kernel is tiny and
the count of kernels, the layout copies and the passes over the carried SSM state decide the time. This
plan computes ``BandSplitSeparator.step_spec`` in fewer of each, from copies of the weights taken when it is
built (a model trained further needs a new plan):

* the band split and mask heads batched by band width (``GroupedBands``);
* each band block's two directions as one batched product (weights stacked on a direction axis), its causal
  convolution as d_conv multiply-adds (no convolution kernel) and its SSD over the bands in the quadratic
  (attention-like) form, one (bands × bands) matrix per head;
* each time block's SSM state kept as S̃ with a per-(sequence, head) scale, S = scale · S̃, so that a step's
  decay is a multiply of the (b, h) scale rather than a pass over the state: one in-place rank-one update
  and one read-out per frame (``_TimeState``). S̃ is rescaled to S when a scale would fall below
  ``RESCALE_BELOW``, and a step whose own decay is that small runs the plain update.

Same function as ``step_spec`` up to rounding (tests hold it to it and to the offline forward). Built only for
Mamba2 models in float32/float64 without autocast; ``FramePlan.supports`` says whether a model fits.

Axis legend: b streams, l frames of a step, k bands, d model dim, e directions (forward, backward),
m = b·k time sequences, h heads, p head dim, n state size, g groups, j heads per group, w d_conv taps.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.bands import GroupedBands
from bsmamba2.model.dualpath import BidirectionalBlock, ForwardBlock, PreNormBlock
from bsmamba2.model.mixers.mamba2 import Mamba2
from bsmamba2.model.norms import gated_rms_norm
from bsmamba2.model.separator_net import BandSplitSeparator, SpecStreamState

RESCALE_BELOW = 1e-18  # S̃ is folded back into S before a scale drops below this (1/scale stays finite)


class _TimeState(NamedTuple):
    """A time block's carried state in the plan's form: S[:, g·j + i, :, :] = scale[:, g·j + i] · ssm[g, :, i·p:(i+1)·p]ᵀ
    for sequence m, group g, head i of the group (``to_ssm`` gives S)."""

    conv: Tensor  # (m, d_conv - 1, conv_dim): the last inputs of the causal convolution
    ssm: Tensor  # (m·g, n, j·p) S̃, float32 or wider (the SSM state S (m, h, p, n) laid out per group)
    scale: Tensor  # (m, h)


class _Mixer:
    """One Mamba2 mixer's weights (with its prenorm's), transposed for ``x @ w`` and detached."""

    def __init__(self, block: PreNormBlock) -> None:
        m = cast(Mamba2, block.mixer)
        self.sizes = (m.d_inner, m.ngroups * m.d_state, m.nheads)
        self.h, self.p, self.g, self.n = m.nheads, m.headdim, m.ngroups, m.d_state
        self.norm_eps = block.norm.eps
        # the prenorm's weight folded into in_proj: (x̂ · w) Wᵀ = x̂ (diag(w) Wᵀ), x̂ = x / rms(x)
        w_in = block.norm.weight.detach().double()[:, None] * m.in_proj.weight.detach().double().t()
        self.w_in = w_in.to(m.in_proj.weight.dtype).contiguous()  # (d, 2·d_inner + 2·g·n + h)
        self.conv_w = m.conv1d.weight.detach()[:, 0, :].t().contiguous()  # (w, conv_dim)
        assert m.conv1d.bias is not None  # built with bias=True
        self.conv_b = m.conv1d.bias.detach()
        self.dt_bias = m.dt_bias.detach()
        self.A = -torch.exp(m.A_log.detach().float())  # (h,)
        self.D = m.D.detach()
        self.gate_w, self.gate_eps = m.norm.weight.detach(), m.norm.eps
        self.w_out = m.out_proj.weight.detach().t().contiguous()  # (d_inner, d)


class FramePlan:
    """``model.step_spec`` (a causal ``BandSplitSeparator``) in few kernels; see the module docstring."""

    def __init__(self, model: BandSplitSeparator) -> None:
        if not self.supports(model):
            raise ValueError("FramePlan needs a causal Mamba2 model with float32 or float64 weights")
        self.cfg = model.cfg
        self.bands = GroupedBands(model.band_split, list(model.mask_estimators))  # type: ignore[arg-type]
        self.final_norm = model.final_norm
        self.time: list[tuple[_Mixer, Tensor, Tensor]] = []  # (mixer, folded way out, bias) per layer
        self.band: list[_BandBlock] = []
        for layer in model.layers:
            assert isinstance(layer, nn.ModuleList)
            fwd = cast(ForwardBlock, layer[0])
            mix = _Mixer(cast(PreNormBlock, fwd.forward_blocks[0]))
            # y = u + Linear(u + g·W_outᵀ) = u + [g ‖ u] · [W_outᵀ·W_linᵀ ; W_linᵀ] + bias: one product
            lin = fwd.linear.weight.detach().double().t()  # (d, d)
            out = torch.cat([mix.w_out.double() @ lin, lin]).to(mix.w_out.dtype)  # (d_inner + d, d)
            self.time.append((mix, out, fwd.linear.bias.detach()))
            self.band.append(_BandBlock(cast(BidirectionalBlock, layer[1])))
        self.dtype = next(model.parameters()).dtype

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a causal Mamba2 BandSplitSeparator this plan can run."""
        if not isinstance(model, BandSplitSeparator) or not model.cfg.causal:
            return False
        if next(model.parameters()).dtype not in (torch.float32, torch.float64):
            return False
        for layer in model.layers:
            assert isinstance(layer, nn.ModuleList)
            t, b = layer[0], layer[1]
            if not (isinstance(t, ForwardBlock) and isinstance(b, BidirectionalBlock)):
                return False
            blocks = [t.forward_blocks[0], b.forward_blocks[0], b.backward_blocks[0]]
            if not all(isinstance(x, PreNormBlock) and isinstance(x.mixer, Mamba2) for x in blocks):
                return False
        return True

    # ---- state -----------------------------------------------------------------------------------------
    def stream_state(self, batch: int, device: torch.device) -> SpecStreamState:
        """Before the first frame of ``batch`` streams (the plan's own per-layer state form)."""
        m = batch * self.cfg.num_bands
        layers = []
        for mix, _, _ in self.time:
            acc = torch.promote_types(self.dtype, torch.float32)
            layers.append(
                _TimeState(
                    conv=torch.zeros(
                        m, mix.conv_w.shape[0] - 1, mix.conv_w.shape[1], device=device, dtype=self.dtype
                    ),
                    ssm=torch.zeros(m * mix.g, mix.n, mix.h // mix.g * mix.p, device=device, dtype=acc),
                    scale=torch.ones(m, mix.h, device=device, dtype=acc),
                )
            )
        c, f = self.cfg.audio_channels, self.cfg.n_bins
        pending = torch.zeros(batch, c, f, 0, device=device, dtype=torch.complex64)
        return SpecStreamState(layers=layers, pending=pending, seen=0)

    # ---- the step ----------------------------------------------------------------------------------------
    def step(self, X: Tensor, state: SpecStreamState) -> tuple[Tensor, SpecStreamState]:
        """``step_spec``: X complex (b, c, f, l) -> (stems decided now (b, s, c, f, l'), new state). The
        state is consumed (its SSM tensors are updated in place)."""
        b, _, _, l = X.shape
        if l == 0:
            return X.new_zeros(b, self.cfg.num_stems, *X.shape[1:], dtype=torch.complex64), state
        x = rearrange(torch.view_as_real(X), "b c f t r -> b t (f c r)").to(self.dtype)  # feature 4f+2c+r
        z = self.bands.split(x)  # (b, l, k, d)
        layers = []
        for (mix, lin_w, lin_b), band, st in zip(self.time, self.band, state.layers, strict=True):
            u = rearrange(z, "b l k d -> (b k) l d")
            gated, st = _time_step(mix, u, st)  # (m, l, d_inner)
            y = torch.addmm(lin_b, torch.cat([gated, u], dim=-1).flatten(0, 1), lin_w).view_as(u) + u
            z = band(rearrange(y, "(b k) l d -> (b l) k d", b=b)).view(z.shape)
            layers.append(st)
        masks = self.bands.masks(self.final_norm(z))  # (b, s, l, f·c·2)
        c = self.cfg.audio_channels
        masks = rearrange(masks.float(), "b s t (f c r) -> b s c f t r", c=c, r=2).contiguous()
        masks = torch.view_as_complex(masks)  # (b, s, c, f, l)
        queue = torch.cat([state.pending, X.to(torch.complex64)], dim=-1)
        ready = max(0, l - max(0, self.cfg.lookahead - state.seen))  # frames ≥ 0 whose masks are in
        out = queue[:, None, ..., :ready] * masks[..., l - ready :]
        return out, SpecStreamState(layers=layers, pending=queue[..., ready:], seen=state.seen + l)


def _time_step(mix: _Mixer, x: Tensor, st: _TimeState) -> tuple[Tensor, _TimeState]:
    """The prenorm Mamba2 block's mixer for the next l frames x (m, l, d) up to its gated norm ->
    (m, l, d_inner) (``out_proj`` is folded into the caller's product), and the state after them."""
    m, l, _ = x.shape
    d_inner, gn, h = mix.sizes
    u = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mix.norm_eps)  # the prenorm, weight in w_in
    z, xBC, dt = (u @ mix.w_in).split([d_inner, d_inner + 2 * gn, h], dim=-1)
    acc = st.ssm.dtype
    dt = F.softplus(dt.to(acc) + mix.dt_bias.to(acc))  # (m, l, h)
    xp = torch.cat([st.conv, xBC], dim=1)  # (m, w - 1 + l, conv_dim)
    w = mix.conv_w.shape[0]
    conv = mix.conv_b + xp[:, 0:l] * mix.conv_w[0]
    for k in range(1, w):
        conv = conv + xp[:, k : k + l] * mix.conv_w[k]
    xs, B, C = F.silu(conv).to(acc).split([d_inner, gn, gn], dim=-1)
    g, j, p, n = mix.g, h // mix.g, mix.p, mix.n
    S = st.ssm  # (m·g, n, j·p): S̃ with the state axis before the heads, so both products below are rows
    scale = st.scale

    def fold(factor: Tensor) -> None:  # S̃ *= factor (m, h), per head
        S.view(m, g, n, j, p).mul_(factor.view(m, g, 1, j, 1))

    a = torch.exp(dt * mix.A)  # (m, l, h): each frame's decay
    xdt = xs.view(m, l, h, p) * dt[..., None]  # Δ·x (m, l, h, p)
    ys = []
    for t in range(l):
        new = scale * a[:, t]
        if bool(new.min() < RESCALE_BELOW):  # fold the scale into S̃ first (rare: every few dozen decays)
            fold(scale)
            new = a[:, t].clone()
            if bool(new.min() < RESCALE_BELOW):  # this decay alone wipes the state: plain update, no scale
                fold(new)
                new = torch.ones_like(new)
        inv = (xdt[:, t] / new[..., None]).reshape(m * g, 1, j * p)  # Δ·x / scale
        S.addcmul_(B[:, t].reshape(m * g, n, 1), inv)  # S̃ += B ⊗ Δ·x/scale
        r = torch.bmm(C[:, t].reshape(m * g, 1, n), S).view(m, h, p)  # C·S̃
        ys.append(r * new[..., None])  # C·S = scale · C·S̃
        scale = new
    y = torch.stack(ys, dim=1) + xs.view(m, l, h, mix.p) * mix.D.to(acc)[:, None]  # (m, l, h, p)
    y = gated_rms_norm(y.flatten(2), z.to(acc), mix.gate_w, mix.gate_eps).to(x.dtype)
    tail = xp[:, xp.shape[1] - (w - 1) :].clone()
    return y, _TimeState(conv=tail, ssm=st.ssm, scale=scale)


class _BandBlock:
    """A bidirectional band block with its two directions stacked (e = 2) and run as one."""

    def __init__(self, block: BidirectionalBlock) -> None:
        fw = _Mixer(cast(PreNormBlock, block.forward_blocks[0]))
        bw = _Mixer(cast(PreNormBlock, block.backward_blocks[0]))
        self.mix = fw
        self.w_in = torch.cat([fw.w_in, bw.w_in], dim=1)  # (d, e·c), c = 2·d_inner + 2·g·n + h
        self.conv_w = torch.stack([fw.conv_w, bw.conv_w], dim=1)[:, :, None, None]  # (w, e, 1, 1, conv_dim)
        self.conv_b = torch.stack([fw.conv_b, bw.conv_b])[:, None, None]  # (e, 1, 1, conv_dim)
        self.dt_bias = torch.stack([fw.dt_bias, bw.dt_bias])[:, None, None]  # (e, 1, 1, h)
        self.A = torch.stack([fw.A, bw.A])[:, None, None]  # (e, 1, 1, h)
        self.D = torch.stack([fw.D, bw.D])[:, None, :, None, None]  # (e, 1, h, 1, 1)
        self.gate_w = torch.stack([fw.gate_w, bw.gate_w])[:, None]  # (e, 1, d_inner)
        # x + Linear([x + g_f·W_fᵀ ‖ x + flip(g_b·W_bᵀ)]) = x + [g_f ‖ flip(g_b) ‖ x] · W + bias, with
        # W = [W_fᵀ·L₁ᵀ ; W_bᵀ·L₂ᵀ ; (L₁ + L₂)ᵀ] (L = [L₁ L₂] the merge's weight; flips commute with products)
        d = fw.w_out.shape[1]
        lin = block.linear.weight.detach().double()
        l1, l2 = lin[:, :d].t(), lin[:, d:].t()
        w_out = torch.cat([fw.w_out.double() @ l1, bw.w_out.double() @ l2, l1 + l2])
        self.w_out = w_out.to(fw.w_out.dtype).contiguous()  # (2·d_inner + d, d)
        self.lin_b = block.linear.bias.detach()
        self._masks: dict[tuple[int, torch.device], Tensor] = {}

    def _causal(self, k: int, device: torch.device) -> Tensor:
        key = (k, device)
        if key not in self._masks:
            self._masks[key] = torch.ones(k, k, device=device).tril()  # 1 on and below the diagonal
        return self._masks[key]

    def __call__(self, x: Tensor) -> Tensor:  # (n, k, d) -> (n, k, d): n frames, each a sequence over bands
        mix = self.mix
        n, k, d = x.shape
        d_inner, gn, h = mix.sizes
        u = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mix.norm_eps)  # both prenorms (weights in w_in)
        both = (u.reshape(n * k, d) @ self.w_in).view(
            n, k, 2, -1
        )  # (n, k, e, c): both directions, one product
        # (e, n·k, c); the backward branch reads the bands reversed
        proj = torch.stack([both[:, :, 0], both[:, :, 1].flip(1)]).view(2, n * k, -1)
        z, xBC, dt = proj.split([d_inner, d_inner + 2 * gn, h], dim=-1)
        acc = torch.promote_types(x.dtype, torch.float32)
        dt = F.softplus(dt.to(acc).view(2, n, k, h) + self.dt_bias)  # (e, n, k, h)
        w = self.conv_w.shape[0]
        xp = F.pad(xBC.view(2, n, k, -1), (0, 0, w - 1, 0))  # (e, n, w - 1 + k, conv_dim)
        conv = self.conv_b + xp[:, :, 0:k] * self.conv_w[0]
        for i in range(1, w):
            conv = conv + xp[:, :, i : i + k] * self.conv_w[i]
        xv, B, C = F.silu(conv).to(acc).split([d_inner, gn, gn], dim=-1)
        # The SSD of each whole band sequence, quadratic form: y_i = Σ_{j≤i} exp(Σ_{j<t≤i} a_t) (C_i·B_j) Δ_j x_j.
        g = mix.g
        acum = torch.cumsum(rearrange(dt * self.A, "e n k h -> e n h k"), dim=-1)  # (e, n, h, k)
        # exp of arguments below about -87 gives float32 subnormals, which cost ~10x a normal exp on CPU:
        # clamped at -80 (a weight under 2e-35, next to the diagonal's 1); above the diagonal (> 0) at 0,
        # where the causal mask, applied to C·B (one matrix per group, not per head), zeroes it.
        decay = (acum[..., :, None] - acum[..., None, :]).clamp_(min=-80.0, max=0.0)  # (e, n, h, k, k)
        Bg = rearrange(B, "e n k (g s) -> e n g k s", g=g)
        Cg = rearrange(C, "e n k (g s) -> e n g k s", g=g)
        CB = ((Cg @ Bg.transpose(-1, -2)) * self._causal(k, x.device))[:, :, :, None]  # (e, n, g, 1, k, k)
        L = torch.exp(decay).view(2, n, g, h // g, k, k) * CB  # (e, n, g, j, k, k)
        xh = rearrange(xv, "e n k (h p) -> e n h k p", h=h)  # (e, n, h, k, p)
        X = (xh * rearrange(dt, "e n k h -> e n h k")[..., None]).view(2, n, g, h // g, k, -1)
        y = (L @ X).view(2, n, h, k, -1) + xh * self.D  # (e, n, h, k, p)
        y = rearrange(y, "e n h k p -> e (n k) (h p)")
        y = gated_rms_norm(y, z.to(acc), self.gate_w, mix.gate_eps).to(x.dtype).view(2, n, k, -1)
        cat = torch.cat([y[0], y[1].flip(1), x], dim=-1).view(n * k, -1)  # (n·k, 2·d_inner + d)
        return torch.addmm(self.lin_b, cat, self.w_out).view(n, k, d) + x
