"""Replay a model's forward pass as a CUDA graph: one launch per batch instead of thousands.

The bundled model is small, so on a large GPU its eager forward is bound by kernel launches (Python and the
CUDA driver), not by arithmetic. :class:`CudaGraphModel` wraps any chunk-engine model (``(B, C, L) -> (B, S,
C, L)`` with a ``cfg``): the first batch of a given shape, dtype and autocast setting is run twice eagerly
(lazy buffers, cuBLAS handles and kernel tuning happen there), then captured; later batches of that shape are
copied into the captured input and replayed. Other shapes run eagerly. ``fused = True`` tells the chunk
engine to pad the last batch of a signal to the full batch size, so one graph serves a whole folder.

The replay runs the very kernels the capture recorded, so it computes what the eager model computes for the
same batch; only the padded last batch can differ in the last bits (another batch size for cuBLAS). A
capture that fails (an operation that cannot be captured) is logged once and the model stays eager.
Off CUDA the wrapper is the model itself. Autocast's weight cache is disabled around warm-up, capture and
replay: a cast cached during warm-up would be read, not recomputed, by the graph, from memory freed later.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CudaGraphModel(nn.Module):
    """``model`` with its CUDA forward passes captured once per input shape and replayed (see the module)."""

    fused = True  # the chunk engine pads every batch to batch_size: one shape, one graph

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.cfg = getattr(model, "cfg", None)
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self._failed = False
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L) -> (B, S, C, L)
        if x.device.type != "cuda" or self._failed or torch.is_grad_enabled():
            return self.inner(x)
        amp = torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda")
        key = (tuple(x.shape), x.dtype, x.device, amp, dtype)
        with torch.autocast("cuda", dtype=dtype, enabled=amp, cache_enabled=False):
            entry = self._graphs.get(key)
            if entry is None:
                try:
                    entry = self._capture(x)
                except RuntimeError as e:  # e.g. an operation that syncs with the host
                    log.warning("CUDA graph capture failed, running eagerly: %s", str(e).splitlines()[0])
                    self._failed = True
                    return self.inner(x)
                self._graphs[key] = entry
            graph, static_in, static_out = entry
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.inner(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # decode/encode threads may run
            static_out = self.inner(static_in)
        return graph, static_in, static_out


def with_cuda_graphs(model: nn.Module) -> nn.Module:
    """``CudaGraphModel(model)`` when the model's parameters are on a CUDA device; else ``model`` itself."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cuda":
        return model
    return CudaGraphModel(model)
