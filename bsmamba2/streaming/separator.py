"""``StreamingSeparator``: real-time separation at any input rate, mono or stereo.

A causal model (``model.causal: true``) streams frame by frame (``CausalStream``: latency n_fft − 1 +
lookahead · hop samples). Any other model runs in block mode (``BlockStream``: chunks of ``block`` seconds
plus ``lookahead``, cross-faded; latency block + lookahead) when ``block`` is given.

>>> from bsmamba2 import StreamingSeparator
>>> sep = StreamingSeparator.from_pretrained("causal.safetensors", sample_rate=48000, channels=2)
>>> for block in blocks:                       # (2, n) float32, any n from 1 sample to several seconds
...     stems = sep.push(block)                # {"vocals": (2, m), "instrumental": (2, m)}, CPU tensors
>>> tail = sep.flush()                         # the last samples; the separator is ready for a new stream

At the model's rate (44.1 kHz for the bundled models) ``push`` returns exactly as many samples as it was
given, and the output is the offline causal model's output delayed by ``latency`` samples: the first
``latency`` samples are silence, and after ``flush`` the stream holds input length + latency samples. At other
rates the input and output go through streaming soxr resamplers (VHQ), which hold a few milliseconds back
(``push`` returns about as many samples as given; ``flush`` releases the rest) and add their filter delay
to the latency. "instrumental" (mixture − vocals of a vocals model) is computed at the model's rate from the
delayed mixture, so vocals + instrumental is the delayed mixture there (resampled twice at other rates).

A block is checked before it touches the stream: NaN/Inf samples, a channel count other than the stream's,
or integer samples are an ``AudioError`` (a UserError) and leave the stream as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.audio import Resampler, check_finite, convert_channels
from bsmamba2.device import describe, log_once, resolve_device, resolve_precision
from bsmamba2.errors import AudioError, CheckpointError, UserError
from bsmamba2.model.separator_net import BandSplitSeparator
from bsmamba2.stems import output_names, residual_name
from bsmamba2.streaming.blocks import BlockStream
from bsmamba2.streaming.engine import CausalStream

DEFAULT_CAUSAL_MODEL = Path(__file__).resolve().parent.parent / "assets" / "causal.safetensors"


class StreamingSeparator:
    """A model run as a stream. ``sample_rate``: the input's (default: the model's); ``channels``: the
    input's, 1 or 2 (default: taken from the first block). ``dtype``: autocast dtype (None: fp32).
    ``block``, ``lookahead`` (seconds): block mode, for models that are not causal (a causal model refuses
    them: it streams frame by frame)."""

    def __init__(
        self,
        model: BandSplitSeparator,
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        dtype: torch.dtype | None = None,
        block: float | None = None,
        lookahead: float = 0.25,
    ) -> None:
        cfg = model.cfg
        self.engine: CausalStream | BlockStream
        if block is None:
            self.engine = CausalStream(model, dtype=dtype)
        elif cfg.causal:
            raise UserError("a causal model streams frame by frame; block and lookahead are for other models")
        elif block <= 0 or lookahead < 0:
            raise UserError(f"block must be > 0 and lookahead >= 0 seconds, got {block} and {lookahead}")
        else:
            rate = cfg.sample_rate
            self.engine = BlockStream(
                model, block=round(block * rate), lookahead=round(lookahead * rate), dtype=dtype
            )
        self.model_rate, self.model_channels = cfg.sample_rate, cfg.audio_channels
        self.model_stems = tuple(cfg.stems)
        self.sample_rate = self.model_rate if sample_rate is None else int(sample_rate)
        if self.sample_rate <= 0:
            raise AudioError(f"sample_rate must be positive, got {sample_rate}")
        if channels is not None and channels not in (1, 2):
            raise AudioError(f"a stream has 1 or 2 channels, got {channels}")
        self._fixed_channels = channels
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        backend: str = "auto",
        block: float | None = None,
        lookahead: float = 0.25,
    ) -> StreamingSeparator:
        """Load a model file. None: the bundled causal model where this build has one, or with ``block``,
        the bundled (bidirectional) default model in block mode.

        device "cpu" by default: a stream of small blocks is latency-bound, where a GPU's launch cost
        dominates; precision "fp32" by default for the same reason (autocast adds casts per small kernel)."""
        from bsmamba2.checkpoints import load_model  # the checkpoint stack only when loading a file

        if path is None:
            path = DEFAULT_MODEL if block is not None else DEFAULT_CAUSAL_MODEL
            if not path.exists():
                raise CheckpointError(
                    f"no bundled model at {path}; pass a causal model file, or block= for block mode"
                )
        dev = resolve_device(device)
        dtype = resolve_precision(dev, precision)
        model = load_model(path, device=dev, backend=backend)
        log_once(f"streaming model {Path(path).name} on {describe(dev, dtype)}")
        return cls(
            model, sample_rate=sample_rate, channels=channels, dtype=dtype, block=block, lookahead=lookahead
        )

    # ---- facts ------------------------------------------------------------------------------------------
    @property
    def stems(self) -> tuple[str, ...]:
        """The output names: the model's stems, plus the residual ("instrumental") of a one-stem model."""
        return output_names(self.model_stems)

    @property
    def latency(self) -> int:
        """Algorithmic latency in samples at the model's rate: n_fft − 1 + lookahead · hop for a causal
        model, block + lookahead − 1 in block mode."""
        return self.engine.latency

    @property
    def latency_ms(self) -> float:
        """The same in milliseconds (the resamplers' delay at other rates is not included)."""
        return 1000.0 * self.latency / self.model_rate

    @property
    def channels(self) -> int | None:
        """The stream's channel count (None until the first block when not given)."""
        return self._channels

    # ---- the stream ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop the stream under way (its pending output is lost); the next block starts a new one."""
        self.engine.reset()
        self._channels = self._fixed_channels
        self._resample_in: Resampler | None = None
        self._resample_out: Resampler | None = None
        # The model-rate mixture, delayed like the stems, for the residual.
        self._mix_delay = torch.zeros(self.model_channels, self.latency)

    def push(self, block: Tensor | np.ndarray) -> dict[str, Tensor]:
        """block (C, n) or (n,) float samples at ``sample_rate`` -> {name: float32 CPU tensor (C, m)}.

        C must stay the same for the whole stream; a 1-D block is mono. m = n at the model's rate."""
        x = self._checked(block)  # (C, n) float32; nothing of the stream is touched before this passes
        if self._channels is None:
            self._channels = x.shape[0]
        self._start_resamplers()
        assert self._resample_in is not None
        x_model = self._resample_in(convert_channels(x, self.model_channels))  # (C_model, n')
        return self._run(torch.from_numpy(np.ascontiguousarray(x_model)), last=False)

    def flush(self) -> dict[str, Tensor]:
        """The rest of the stream (the last ``latency`` samples, and what the resamplers held); then reset."""
        if self._resample_in is None:  # nothing was pushed
            return self._empty()
        held = self._resample_in(np.zeros((self.model_channels, 0), np.float32), last=True)
        out = self._run(torch.from_numpy(np.ascontiguousarray(held)), last=False)
        if self.engine.pushed == 0:  # only empty blocks
            self.reset()
            return self._empty()
        y = self.engine.flush()  # (s, c, latency)
        tail = self._finish(y, self._mix_delay, last=True)
        merged = {k: torch.cat([out[k], tail[k]], dim=-1) for k in self.stems}
        self.reset()
        return merged

    # ---- internals --------------------------------------------------------------------------------------
    def _empty(self) -> dict[str, Tensor]:
        return {name: torch.zeros(self._channels or self._fixed_channels or 1, 0) for name in self.stems}

    def _checked(self, block: Tensor | np.ndarray) -> np.ndarray:
        x = block.detach().cpu().numpy() if isinstance(block, Tensor) else np.asarray(block)
        if not np.issubdtype(x.dtype, np.floating):
            raise AudioError(f"a block must hold float samples in [-1, 1], got {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] not in (1, 2):
            raise AudioError(f"a block must be (channels, samples) with 1 or 2 channels, got shape {x.shape}")
        if self._channels is not None and x.shape[0] != self._channels:
            raise AudioError(f"this stream has {self._channels} channel(s); got a block with {x.shape[0]}")
        check_finite(x, "block")
        return x

    def _start_resamplers(self) -> None:
        if self._resample_in is None:
            self._resample_in = Resampler(self.sample_rate, self.model_rate, self.model_channels)
            rows = len(self.stems) * self.model_channels  # every output's channels go through one stream
            self._resample_out = Resampler(self.model_rate, self.sample_rate, rows)

    def _run(self, x_model: Tensor, last: bool) -> dict[str, Tensor]:
        """Model-rate samples (C_model, n') through the engine, the residual and back to the caller's layout."""
        y = self.engine.push(x_model)  # (s, C_model, n')
        mix = torch.cat([self._mix_delay, x_model], dim=-1)
        n = x_model.shape[-1]
        delayed, self._mix_delay = mix[:, :n], mix[:, n:]
        return self._finish(y, delayed, last)

    def _finish(self, y: Tensor, delayed_mix: Tensor, last: bool) -> dict[str, Tensor]:
        """Model stems y (s, C_model, m) and the mixture they came from, delayed alike (C_model, m) -> outputs."""
        y = y.float().cpu()
        parts = [y]
        if residual_name(self.model_stems) is not None:
            parts.append((delayed_mix - y[0])[None])
        stacked = (
            torch.cat(parts).reshape(len(self.stems) * self.model_channels, -1).numpy()
        )  # (outputs·C, m)
        assert self._resample_out is not None and self._channels is not None
        back = self._resample_out(stacked, last=last).reshape(len(self.stems), self.model_channels, -1)
        return {
            name: torch.from_numpy(np.ascontiguousarray(convert_channels(back[i], self._channels)))
            for i, name in enumerate(self.stems)
        }
