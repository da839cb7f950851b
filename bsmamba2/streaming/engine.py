"""The streaming engine of a causal model, at the model's rate and layout: samples in, delayed stems out.

``CausalStream(model)`` carries everything a stream needs between blocks: the input samples of the frame
under way, the model's per-layer state (``BandSplitSeparator.step_spec``: each time block's conv tail and SSM
state, and the frames waiting for their lookahead; run by ``FramePlan`` where the model fits it, in the plan's
own state form), the overlap-add tail of the inverse STFT, and the output samples already final. ``push`` returns exactly as many samples as it was given: the offline causal model's
output delayed by ``latency = cfg.latency`` samples (the first ``latency`` are silence), whatever the block
sizes. ``flush`` returns the last ``latency`` samples and starts a new stream; ``reset`` drops the stream.

Why the output can be that exact: frame t covers samples [t·hop − P, t·hop + hop), P = n_fft − hop
(``bsmamba2.model.framing``), so it is complete once sample (t + 1)·hop − 1 has arrived; a sample is final
once the last frame over it (the one starting at or before it) has been decided, lookahead frames later.
That is at most n_fft − 1 + lookahead·hop samples after it arrives, whatever its place in the hop.

Axis legend: s stems, c audio channels, f frequency bins, t frames, n samples.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from bsmamba2.model.framing import analyse, envelope, left_pad, synthesise
from bsmamba2.model.mixers.base import NotStreamableError
from bsmamba2.model.separator_net import BandSplitSeparator, SpecStreamState
from bsmamba2.spectral import hann_window
from bsmamba2.streaming.plan import FramePlan


class CausalStream:
    """One stream through a causal ``BandSplitSeparator``. Tensors are float32 (c, n) at the model's rate
    with c = ``cfg.audio_channels``, on the model's device. ``dtype``: autocast dtype for the network (None:
    the weights' own precision)."""

    def __init__(self, model: BandSplitSeparator, *, dtype: torch.dtype | None = None) -> None:
        cfg = model.cfg
        if not cfg.causal:
            raise NotStreamableError(
                "only a causal model (model.causal: true) streams with bounded latency; "
                "run a bidirectional model in block mode (bsmamba2.streaming.BlockStream)"
            )
        self.model = model.eval()
        self.cfg = cfg
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.latency = cfg.latency  # samples
        self._env = envelope(self.n_fft, self.hop, self.device)  # (hop,)
        self._window = hann_window(self.n_fft, self.device)
        # A frame's work is small, so kernel count and passes over the state rule: the plan runs the same
        # function in fewer (a snapshot of the weights: a stream made before further training keeps the old
        # ones). Models it does not fit, and autocast, take the model's own step with the band split and
        # mask heads batched by band width.
        plain = dtype is None or dtype == torch.float32
        self._plan = FramePlan(model) if plain and FramePlan.supports(model) else None
        self._grouped = model.grouped_bands()
        self.reset()

    # ---- the stream -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next push starts a new one (nothing seen, nothing pending)."""
        c, s = self.cfg.audio_channels, self.cfg.num_stems
        pad = left_pad(self.n_fft, self.hop)
        self._input = torch.zeros(c, pad, device=self.device)  # from the next frame's first sample on
        self._state: SpecStreamState = (
            self.model.stream_state(1, self.device)
            if self._plan is None
            else self._plan.stream_state(1, self.device)
        )
        self._tail = torch.zeros(s, c, self.n_fft - self.hop, device=self.device)  # overlap-add, not final
        self._skip = pad  # synthesised samples before the signal's first (the left padding's)
        self._ready = torch.zeros(s, c, self.latency, device=self.device)  # final output not returned yet
        self.pushed = 0  # input samples of this stream so far

    def push(self, block: Tensor) -> Tensor:
        """block (c, n), n ≥ 0 -> stems (s, c, n): the offline output delayed by ``latency`` samples.

        The caller checks the block (channels, finite values); this is the engine."""
        x = block.to(self.device, torch.float32)
        self._input = torch.cat([self._input, x], dim=-1)
        self.pushed += x.shape[-1]
        frames = (
            (self._input.shape[-1] - self.n_fft) // self.hop + 1 if self._input.shape[-1] >= self.n_fft else 0
        )
        if frames > 0:
            used = (frames - 1) * self.hop + self.n_fft
            X = analyse(self._input[:, :used], self.n_fft, self.hop)  # (c, f, frames)
            self._input = self._input[:, frames * self.hop :]  # the next frame starts here
            with torch.inference_mode(), self._autocast():
                if self._plan is not None:
                    S, self._state = self._plan.step(X[None], self._state)  # (1, s, c, f, t ≤ frames)
                else:
                    S, self._state = self.model.step_spec(X[None], self._state, self._grouped)
            self._emit(S[0])
        out, self._ready = self._ready[..., : x.shape[-1]], self._ready[..., x.shape[-1] :]
        return out

    def flush(self) -> Tensor:
        """The stream's last ``latency`` output samples (s, c, latency), as if silence followed; then reset.

        push outputs + flush output = ``latency`` zeros, then the offline output of everything pushed."""
        out = self.push(torch.zeros(self.cfg.audio_channels, self.latency, device=self.device))
        self.reset()
        return out

    # ---- internals ----------------------------------------------------------------------------------
    def _emit(self, S: Tensor) -> None:
        """Overlap-add the decided frames S complex (s, c, f, t) and queue the samples that became final."""
        t = S.shape[-1]
        if t == 0:
            return
        if t == 1:  # one frame (a 10 ms push): its windowed inverse FFT is the overlap-add (synthesise's)
            wave = torch.fft.irfft(S[..., 0], n=self.n_fft, dim=-1) * self._window  # (s, c, n_fft)
        else:
            wave = synthesise(S, self.n_fft, self.hop)  # (s, c, (t - 1)·hop + n_fft), from a frame start
        wave[..., : self._tail.shape[-1]] += self._tail
        final, self._tail = wave[..., : t * self.hop], wave[..., t * self.hop :]
        final = final / (self._env if t == 1 else self._env.repeat(t))  # every frame over these is in
        if self._skip:
            drop = min(self._skip, final.shape[-1])
            final, self._skip = final[..., drop:], self._skip - drop
        self._ready = torch.cat([self._ready, final], dim=-1)

    def _autocast(self) -> Any:
        if self.dtype is None or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)
