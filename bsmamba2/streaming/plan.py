"""``FramePlan``: a causal BSMamba2's per-frame function with its weights laid out for small steps.

A stream at 10 ms blocks runs the network on one STFT frame per push, where the work per kernel is tiny and
the count of kernels, the layout copies and the passes over the carried SSM state decide the time. This
plan computes ``BandSplitSeparator.step_spec`` in fewer of each, from copies of the weights taken when it is
built (a model trained further needs a new plan): the band split and mask heads batched by band width
(``bsmamba2.streaming.frame_heads``), each layer's time and band blocks in the form of ``bsmamba2.streaming.frame_blocks``
(constants folded into the products, the conv tail as a ring, the SSM state as scale · S̃, both band
directions in one product).

Same function as ``step_spec`` up to rounding (tests hold it to it and to the offline forward). Built only for
Mamba2 models in float32/float64 without autocast; ``FramePlan.supports`` says whether a model fits.

Axis legend: b streams, l frames of a step, k bands, d model dim, c audio channels, f frequency bins,
s stems, r real/imaginary part, m = b·k time sequences.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from bsmamba2.model.separator_net import BandSplitSeparator, SpecStreamState
from bsmamba2.streaming.frame_blocks import PENDING, BandBlock, TimeBlock, is_plain_layer
from bsmamba2.streaming.frame_heads import heads_of


class FramePlan:
    """``model.step_spec`` (a causal ``BandSplitSeparator``) in few kernels; see the module docstring."""

    def __init__(self, model: BandSplitSeparator) -> None:
        if not self.supports(model):
            raise ValueError("FramePlan needs a causal Mamba2 model with float32 or float64 weights")
        self.cfg = model.cfg
        self.heads = heads_of(model.band_split, model.final_norm, list(model.mask_estimators))
        self.time: list[TimeBlock] = []
        self.band: list[BandBlock] = []
        for layer in model.layers:
            assert isinstance(layer, nn.ModuleList)
            self.time.append(TimeBlock(layer[0]))  # type: ignore[arg-type]
            self.band.append(BandBlock(layer[1], self.cfg.num_bands))  # type: ignore[arg-type]
        self.dtype = next(model.parameters()).dtype

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a causal Mamba2 BandSplitSeparator this plan can run."""
        if not isinstance(model, BandSplitSeparator) or not model.cfg.causal:
            return False
        if next(model.parameters()).dtype not in (torch.float32, torch.float64):
            return False
        return all(is_plain_layer(layer) for layer in model.layers)

    # ---- state -----------------------------------------------------------------------------------------
    def stream_state(self, batch: int, device: torch.device, pending: int = PENDING) -> SpecStreamState:
        """Before the first frame of ``batch`` streams (the plan's own per-layer state form). ``pending``:
        frames of SSM updates each time block keeps aside (``frame_blocks.TimeState``)."""
        m = batch * self.cfg.num_bands
        # the layers add their pending SSM updates on different frames (an even cost per push)
        n = len(self.time)
        layers = [
            block.state(m, device, stagger=i * pending // n, pending=pending)
            for i, block in enumerate(self.time)
        ]
        c, f = self.cfg.audio_channels, self.cfg.n_bins
        waiting = torch.zeros(batch, c, f, 0, device=device, dtype=torch.complex64)  # frames before masks
        return SpecStreamState(layers=layers, pending=waiting, seen=0)

    # ---- the step ----------------------------------------------------------------------------------------
    def step(self, X: Tensor, state: SpecStreamState) -> tuple[Tensor, SpecStreamState]:
        """``step_spec``: X complex (b, c, f, l) -> (stems decided now (b, s, c, f, l'), new state). The
        state is consumed (its conv and SSM tensors are updated in place)."""
        b, _, _, l = X.shape
        if l == 0:
            return X.new_zeros(b, self.cfg.num_stems, *X.shape[1:], dtype=torch.complex64), state
        x = rearrange(torch.view_as_real(X), "b c f t r -> (b t) (f c r)").to(self.dtype)  # feature 4f+2c+r
        z = rearrange(self.heads.split(x), "k (b l) d -> b l k d", b=b)
        layers = []
        for time, band, st in zip(self.time, self.band, state.layers, strict=True):
            y, st = time(rearrange(z, "b l k d -> (b k) l d"), st)  # (m, l, d)
            z = band(rearrange(y, "(b k) l d -> (b l) k d", b=b)).view(z.shape)
            layers.append(st)
        masks = torch.stack(self.heads.masks(rearrange(z, "b l k d -> k (b l) d")))  # (s, b·l, f·c·2)
        c = self.cfg.audio_channels
        masks = rearrange(masks.float(), "s (b t) (f c r) -> b s c f t r", b=b, c=c, r=2).contiguous()
        masks = torch.view_as_complex(masks)  # (b, s, c, f, l)
        queue = torch.cat([state.pending, X.to(torch.complex64)], dim=-1)
        ready = max(0, l - max(0, self.cfg.lookahead - state.seen))  # frames ≥ 0 whose masks are in
        out = queue[:, None, ..., :ready] * masks[..., l - ready :]
        return out, SpecStreamState(layers=layers, pending=queue[..., ready:], seen=state.seen + l)
