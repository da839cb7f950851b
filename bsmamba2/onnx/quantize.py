"""Opt-in int8 for an exported file: ONNX Runtime's dynamic quantisation of the weight matrix products.

``quantize_int8(src, dst)`` rewrites every MatMul whose second operand is a weight (the linear layers: band
split, in/out projections, merge layers, mask MLPs) to an int8 MatMulInteger with per-channel weight scales and
activations quantised per call (``onnxruntime.quantization.quantize_dynamic``). Weights use 7 of the 8 bits
(``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8 product saturates with full-range weights. The SSD's products of two
activations stay float32. The bsmamba2 metadata is carried over, so the result is an export like any other
(``OnnxModel`` runs it). Speed and agreement with fp32: ``benchmarks/bench_onnx.py``, BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bsmamba2.atomic import atomic_write
from bsmamba2.errors import UserError
from bsmamba2.onnx.runtime import INSTALL_HINT

log = logging.getLogger(__name__)


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write the int8 (dynamic, weights per channel) version of the export ``src`` to ``dst``, atomically.

    Returns ``dst``. Needs onnx and onnxruntime (the ``[onnx]`` extra); a UserError names it otherwise.
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise UserError(f"int8 quantisation needs onnx and onnxruntime: {INSTALL_HINT}") from None
    out = Path(dst)
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    with atomic_write(out) as tmp:
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: without VNNI, x86 u8 x s8 products saturate (ORT docs)
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},  # activation × activation (the SSD) stays float
        )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
    log.info("int8 (dynamic) %s -> %s (%.1f MB)", src, out, out.stat().st_size / 1e6)
    return out
