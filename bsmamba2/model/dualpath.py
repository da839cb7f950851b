"""Prenorm and bidirectional blocks around any sequence mixer, and the dual-path stack (paper §III-B, official
form OFFICIAL_SPEC §1.4–1.5).

Axis legend: b batch, t frames, k bands, d model dim; a block sees n sequences of length l.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bsmamba2.model import onednn
from bsmamba2.model.mixers.base import NotStreamableError, SequenceMixer
from bsmamba2.model.norms import BlockRMSNorm, prenorm_dtype, triton_norm_applies


class PreNormBlock(SequenceMixer):
    """mamba_ssm's ``Block`` as the official model runs it: x + mixer(norm(x)) (OFFICIAL_SPEC §1.5).

    Streams when its mixer does: ``step`` is the same block on a piece of the sequence, carrying the mixer's
    state (the norm and the residual act per position)."""

    def __init__(self, dim: int, mixer: SequenceMixer) -> None:
        super().__init__()
        self.norm = BlockRMSNorm(dim, eps=1e-5)
        self.mixer = mixer

    def forward(self, x: Tensor, flip: bool = False) -> Tensor:  # (n, l, d) -> (n, l, d)
        """x + mixer(norm(x)); with ``flip``, the same along the reversed sequence, flipped back."""
        if flip:
            return self.forward(x.flip(1)).flip(1)
        return x + self.mixer(self._prenorm(x)).to(x.dtype)

    def _prenorm(self, x: Tensor) -> Tensor:  # (n, l, d) -> (n, l, d)
        """norm(x); for CUDA inference, the mixer's fused kernel where it has one, written in the dtype that
        in_proj reads under autocast (one pass instead of the reference's chain and autocast's cast)."""
        kernel = self.mixer.prenorm_kernel() if triton_norm_applies(x) else None
        if kernel is None:
            return self.norm(x)
        return kernel(x, self.norm.weight, self.norm.eps, prenorm_dtype(x))

    @property
    def streamable(self) -> bool:
        return self.mixer.streamable

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        return self.mixer.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:  # x (n, l, d) -> (n, l, d), new state
        y, state = self.mixer.step(self.norm(x), state)
        return x + y.to(x.dtype), state


class BidirectionalBlock(nn.Module):
    """Forward and backward prenorm blocks with separate weights, merged by a linear layer, plus the input.

    y = x + Linear([x + M_f(N_f(x)) ; flip(x' + M_b(N_b(x')))]), x' = flip(x) along the sequence.
    The outer residual is the official code's (unstated in the paper). ``forward_blocks.0`` /
    ``backward_blocks.0`` keep the official parameter names; ``linear`` is the official 1×1 ConvTranspose1d
    (512 → 256) written as nn.Linear (its weight is the transposed, squeezed official weight).
    ``make_block()`` returns one prenorm block, ``forward(x, flip=False)``, of whichever class was chosen when
    the model was built (``PreNormBlock`` or a fused equivalent).
    """

    def __init__(self, dim: int, make_block: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.forward_blocks = nn.ModuleList([make_block()])
        self.backward_blocks = nn.ModuleList([make_block()])
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (n, l, d) -> (n, l, d)
        f = self.forward_blocks[0](x)
        b = self.backward_blocks[0](x, flip=True)  # = block(x.flip(1)).flip(1)
        if cpu_inference(x):
            return x + self._merge_cpu(f, b)
        # Linear([f ; b]) as W_f·f + W_b·b: the same product without copying both into a (n, l, 2d) tensor.
        w_f, w_b = self.linear.weight.chunk(2, dim=1)
        return x + (F.linear(f, w_f, self.linear.bias) + F.linear(b, w_b))

    def _merge_cpu(self, f: Tensor, b: Tensor) -> Tensor:
        """Linear([f ; b]) for f, b (n, l, d) on the CPU without autograd: oneDNN's products on weights
        converted and packed once (MKL's float32 GEMM took 2.3x oneDNN's time on the AMD CPU here)."""
        lin = self.linear
        lin_b = lin.bias
        assert lin_b is not None  # built with bias=True

        def make() -> tuple[Tensor, ...]:
            w_f, w_b = lin.weight.chunk(2, dim=1)
            return w_f.contiguous(), w_b.contiguous(), lin_b

        def pack(ws: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return onednn.pack(ws[0], CPU_INFERENCE_TOKENS), onednn.pack(ws[1], CPU_INFERENCE_TOKENS), ws[2]

        dtype = onednn.compute_dtype(lin.weight)
        w_f, w_b, bias = onednn.prepared_weights(self, (lin.weight, lin_b), dtype, make, pack)
        n, l, d = f.shape
        with torch.autocast("cpu", enabled=False):  # the weights are already in the compute dtype
            out = onednn.linear(f.to(dtype).reshape(n * l, d), w_f, bias)
            return out.add_(onednn.linear(b.to(dtype).reshape(n * l, d), w_b)).view(n, l, -1)


class ForwardBlock(SequenceMixer):
    """The causal time block: the official bidirectional block without its backward branch.

    y = x + Linear(x + M_f(N_f(x))). ``forward_blocks.0`` keeps the bidirectional block's name and shapes (a
    bidirectional checkpoint's forward weights fit it); ``linear`` is (dim -> dim) where the bidirectional
    block's merges both directions (2·dim -> dim). Streams: ``step`` carries the forward block's state.
    """

    def __init__(self, dim: int, make_block: Callable[[], SequenceMixer]) -> None:
        super().__init__()
        self.forward_blocks = nn.ModuleList([make_block()])
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (n, l, d) -> (n, l, d)
        return x + self.linear(self.forward_blocks[0](x))

    @property
    def _block(self) -> SequenceMixer:
        return cast(SequenceMixer, self.forward_blocks[0])  # the constructor's make_block makes one

    @property
    def streamable(self) -> bool:
        return self._block.streamable

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        return self._block.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:  # x (n, l, d) -> (n, l, d), new state
        f, state = self._block.step(x, state)
        return x + self.linear(f), state


# Inference on the CPU runs a pass over at most this many tokens (sequences x length) at a time. The
# sequences of a pass are independent, and a mixer's intermediates (SSD chunk states and decay matrices)
# are tens of times the pass's input: run whole, one 8 s chunk of the bundled model (62 bands x 801
# frames) peaked at 2.3 GiB of host memory; in slices of 16384 tokens, at 0.8 GiB. A whole `separate` run
# peaked at 1,017 MiB (bundled, 2-minute song) and 2,127 MiB (paper config, 16 s song) with 16384, and at
# 803 / 1,140 MiB with 4096, no slower (BENCHMARKS.md, memory). Training (grad enabled), GPUs and tracing run each pass whole.
CPU_INFERENCE_TOKENS = 4096


def cpu_inference(x: Tensor) -> bool:
    """True for a CPU tensor with autograd off and no tracer, compiler or exporter watching (they see the
    reference forms)."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def run_sequences(block: nn.Module, seqs: Tensor) -> Tensor:
    """``block(seqs)`` for seqs (n, l, d) -> (n, l, d); on the CPU without grad, contiguous and in slices of
    whole sequences."""
    if not cpu_inference(seqs):
        return block(seqs)
    # One copy into sequence-major order, so that every product downstream is a plain GEMM (a strided 3-D
    # input made ``matmul`` copy the weight once per sequence for a batched product).
    seqs = seqs.contiguous()
    step = max(1, CPU_INFERENCE_TOKENS // max(1, seqs.shape[1]))
    if seqs.shape[0] <= step:
        return block(seqs)
    return torch.cat([block(part) for part in seqs.split(step)])


def time_pass(z: Tensor, block: nn.Module) -> Tensor:
    """Run ``block`` along time: every band is a sequence over frames. z (b, t, k, d) -> (b, t, k, d)."""
    b = z.shape[0]
    out = run_sequences(block, rearrange(z, "b t k d -> (b k) t d"))
    return rearrange(out, "(b k) t d -> b t k d", b=b)


def band_pass(z: Tensor, block: nn.Module) -> Tensor:
    """Run ``block`` along bands: every frame is a sequence over bands. z (b, t, k, d) -> (b, t, k, d)."""
    b = z.shape[0]
    out = run_sequences(block, rearrange(z, "b t k d -> (b t) k d"))
    return rearrange(out, "(b t) k d -> b t k d", b=b)


def make_layers(
    depth: int, make_block: Callable[[], nn.Module], make_time_block: Callable[[], nn.Module] | None = None
) -> nn.ModuleList:
    """``depth`` dual-path layers; ``layers[i][0]`` is the time block (``make_time_block``'s, default
    ``make_block``'s) and ``layers[i][1]`` the band block. Any (n, l, d) -> (n, l, d) module works as a block."""
    make_time = make_block if make_time_block is None else make_time_block
    return nn.ModuleList(nn.ModuleList([make_time(), make_block()]) for _ in range(depth))


def dual_path(z: Tensor, layers: nn.ModuleList, recompute: bool = False) -> Tensor:
    """Each layer: a time pass, then a band pass (paper Fig. 1; OFFICIAL_SPEC §1.4). z (b, t, k, d).

    ``recompute``: keep only each pass's input for the backward and recompute the pass there (activation
    checkpointing). It costs one extra forward of the blocks and cuts activation memory by about the number
    of passes, which is what lets the paper's batch of 5 × 8 s train on one GPU.
    """
    for layer in layers:
        assert isinstance(layer, nn.ModuleList)
        if recompute and torch.is_grad_enabled():
            z = checkpoint(time_pass, z, layer[0], use_reentrant=False)
            z = checkpoint(band_pass, z, layer[1], use_reentrant=False)
        else:
            z = band_pass(time_pass(z, layer[0]), layer[1])
    return z


def dual_path_state(
    layers: nn.ModuleList, batch: int, bands: int, device: torch.device, dtype: torch.dtype
) -> list[Any]:
    """The time blocks' states before the first frame, one per layer, for ``batch`` · ``bands`` sequences."""
    states = []
    for layer in layers:
        assert isinstance(layer, nn.ModuleList)
        time_block = layer[0]
        if not isinstance(time_block, SequenceMixer) or not time_block.streamable:
            raise NotStreamableError(
                f"{type(time_block).__name__} time blocks cannot stream; build causal=True"
            )
        states.append(time_block.init_state(batch * bands, device, dtype))
    return states


def dual_path_step(z: Tensor, layers: nn.ModuleList, states: list[Any]) -> tuple[Tensor, list[Any]]:
    """``dual_path`` on the next l frames z (b, l, k, d) of a stream; ``states`` from ``dual_path_state`` or
    the previous step. The band pass mixes within each frame, so only the time blocks carry state."""
    b = z.shape[0]
    new_states = []
    for layer, state in zip(layers, states, strict=True):
        assert isinstance(layer, nn.ModuleList)
        time_block = cast(SequenceMixer, layer[0])  # dual_path_state checked that it streams
        y, state = time_block.step(rearrange(z, "b l k d -> (b k) l d"), state)
        z = band_pass(rearrange(y, "(b k) l d -> b l k d", b=b), layer[1])
        new_states.append(state)
    return z, new_states
