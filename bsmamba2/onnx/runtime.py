"""The ONNX Runtime engine: an exported file behind the torch model's interface.

:class:`OnnxModel` maps a waveform batch (b, c, n) to stems (b, s, c, n) like ``BandSplitSeparator``: the STFT
and iSTFT run in torch (:mod:`bsmamba2.spectral`), the network between them in ONNX Runtime. It carries a
``cfg`` rebuilt from the file's metadata, so ``Separator``, :class:`bsmamba2.apply.OverlapAdd` and
:mod:`bsmamba2.pipeline` run it unchanged: same chunking, overlap and outputs as the torch engine.

onnxruntime is an optional dependency (``pip install 'bsmamba2[onnx]'``); without it, opening a file raises a
one-line UserError saying so.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.onnx.graph import FORMAT, FORMAT_VERSION, INPUT, OUTPUT
from bsmamba2.spectral import istft, pad_to_min_length, stft

try:
    import onnxruntime as ort
except ImportError:  # optional: the [onnx] extra
    ort = None

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bsmamba2[onnx]'"


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line UserError naming the extra to install."""
    if ort is None:
        raise UserError(f"the onnx engine needs onnxruntime, which is not installed: {INSTALL_HINT}")
    return ort


def providers_for(device: torch.device) -> list[Any]:
    """Execution providers for ``device``: CUDA (on its index) then CPU where onnxruntime has CUDA, else CPU."""
    rt = require_onnxruntime()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in rt.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        log.info("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); the graph runs on CPU")
    return ["CPUExecutionProvider"]


def _load_errors() -> tuple[type[BaseException], ...]:
    """What onnxruntime raises for a file it cannot load (its errors derive from Exception directly)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile")
    found = tuple(
        getattr(state, n) for n in (*names, "NotImplemented", "RuntimeException") if hasattr(state, n)
    )
    return (*found, RuntimeError, OSError, ValueError)


def open_session(path: str | os.PathLike[str], device: torch.device, threads: int | None = None) -> Any:
    """An InferenceSession for ``path``; CheckpointError (one line) for a missing or unreadable file.

    ``threads``: intra-op threads (default: torch's count, so both engines obey the same setting).
    """
    rt = require_onnxruntime()
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such model file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a model file")
    opts = rt.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.log_severity_level = 3  # errors only: constant-folding notes are not the user's business
    # ORT's planner hands a dead tensor's buffer to a later tensor of the same (symbolic) shape and holds
    # every such buffer until it is reused: with six identical layers, the buffers of one whole layer stay
    # allocated (paper config, 201 frames: 4.9 GB peak RSS, 1.8 GB without reuse; torch: 2.5 GB). Without
    # it each tensor is freed after its last use, to the arena, which serves the next layer's tensors.
    opts.enable_mem_reuse = False
    try:
        return rt.InferenceSession(str(p), opts, providers=providers_for(device))
    except _load_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p}: not a readable ONNX model ({first[:200]})") from None


def read_config(meta: dict[str, str], source: str) -> ModelConfig:
    """The ModelConfig stored in an export's metadata; CheckpointError for a foreign or newer file."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{source}: an ONNX model, but not a bsmamba2 export (no bsmamba2 metadata); "
            "make one with `bsmamba2 export MODEL -o model.onnx`"
        )
    try:
        version = int(meta.get("format_version", ""))
        cfg = ModelConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{source}: damaged bsmamba2 export metadata ({e})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: export format version {version} is newer than this bsmamba2 reads ({FORMAT_VERSION})"
        )
    return cfg


def _check_signature(session: Any, cfg: ModelConfig, source: str) -> None:
    ins, outs = session.get_inputs(), session.get_outputs()
    want_in = [None, cfg.audio_channels, cfg.n_bins, None, 2]
    ok = (
        [i.name for i in ins] == [INPUT]
        and [o.name for o in outs] == [OUTPUT]
        and len(ins[0].shape) == 5
        and len(outs[0].shape) == 6
        and all(w is None or s == w for s, w in zip(ins[0].shape, want_in))
    )
    if not ok:
        got = ", ".join(f"{i.name}{list(i.shape)}" for i in ins) + " -> " + ", ".join(o.name for o in outs)
        raise CheckpointError(f"{source}: the graph's inputs/outputs ({got}) are not a bsmamba2 export's")


class OnnxModel(nn.Module):
    """An exported model run by ONNX Runtime: ``forward(wave (b, c, n)) -> stems (b, s, c, n)``, float32.

    ``cfg`` comes from the file's metadata; c = ``cfg.audio_channels``, stems in ``cfg.stems`` order. The
    module holds no weights; an empty buffer records the device, so ``.to(device)`` and
    :func:`bsmamba2.apply.model_device` behave as for the torch model. The graph runs in its own precision
    (torch autocast does not reach it).
    """

    def __init__(
        self, path: str | os.PathLike[str], device: str | torch.device = "cpu", threads: int | None = None
    ) -> None:
        super().__init__()
        self.path = Path(path)
        dev = torch.device(device)
        self.session = open_session(self.path, dev, threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.cfg = read_config(self.metadata, str(self.path))
        _check_signature(self.session, self.cfg, str(self.path))
        self.register_buffer("anchor", torch.empty(0, device=dev), persistent=False)

    @property
    def stems(self) -> tuple[str, ...]:
        return self.cfg.stems

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run_spec(self, spec: Tensor) -> Tensor:
        """The graph alone: spec float32 (b, c, f, t, 2) -> stem spectrograms float32 (b, s, c, f, t, 2)."""
        x = np.ascontiguousarray(spec.detach().float().cpu().numpy())
        (out,) = self.session.run([OUTPUT], {INPUT: x})
        return torch.from_numpy(out).to(spec.device)

    def forward(self, wave: Tensor) -> Tensor:
        """wave (b, c, n) -> stems (b, s, c, n), float32: STFT (torch) -> graph (ONNX Runtime) -> iSTFT (torch)."""
        cfg = self.cfg
        if wave.dim() != 3 or wave.shape[1] != cfg.audio_channels:
            raise ValueError(
                f"expected a waveform (batch, {cfg.audio_channels}, samples), got shape {tuple(wave.shape)}"
            )
        padded, n = pad_to_min_length(wave.float(), cfg.n_fft)
        X = stft(padded, cfg.n_fft, cfg.hop_length)  # (b, c, f, t) complex
        S = torch.view_as_complex(self.run_spec(torch.view_as_real(X)).contiguous())  # (b, s, c, f, t)
        return istft(S, cfg.n_fft, cfg.hop_length, length=padded.shape[-1])[..., :n]


def load_engine(
    path: str | os.PathLike[str] | None, device: torch.device, precision: str = "auto"
) -> OnnxModel:
    """The onnx engine for ``Separator.from_pretrained``: an exported file on ``device``.

    precision: "auto" or "fp32" (the graph runs in the precision it was exported in); anything else, or no
    file, is a one-line UserError.
    """
    if path is None:
        raise UserError(
            "the onnx engine runs an exported file: make one with `bsmamba2 export -o model.onnx` "
            "and pass it as the model"
        )
    if precision not in ("auto", "fp32"):
        raise UserError(
            f"precision {precision}: the onnx engine runs the exported graph as it is (fp32); "
            "use precision auto or fp32, or the torch engine"
        )
    return OnnxModel(path, device)
