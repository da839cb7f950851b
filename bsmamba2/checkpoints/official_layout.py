"""The official BSMamba2 parameter layout (OFFICIAL_SPEC §2.1) and how a file's keys map onto ours.

Our parameter names are the official ones except the merge layer ``layers.i.j.linear``, an official
ConvTranspose1d(2d→d, k=1) whose weight (2d, d, 1) becomes our nn.Linear weight (d, 2d) = ``w[:, :, 0].T``.
A file's model entries are found by the prefix of one key every band-split model has (:data:`ANCHOR`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from bsmamba2.checkpoints._text import head
from bsmamba2.checkpoints.base import layout_problems
from bsmamba2.config import ModelConfig
from bsmamba2.errors import CheckpointError

# Present in every BSMamba2 / BS-RoFormer-style band-split model; its prefix is the model's prefix.
ANCHOR = "band_split.to_features.0.1.weight"
# Non-model buffers of the official Lightning module (STFT windows), dropped silently.
_WINDOW_KEY = re.compile(r"(featurizer|inverse_featurizer|multi_featurizer\.\d+)\.window")
_PREFERRED_PREFIXES = ("", "model.", "module.", "_orig_mod.", "model._orig_mod.", "model.module.")
# Attention-layer names of BS-RoFormer-style models (lucidrains, MSST bs_roformer / mel_band_roformer).
_ATTENTION_MARKERS = ("to_qkv", ".attn.", "rotary_embed", "to_gates", "to_out", ".layers.")
_MERGE_WEIGHT = re.compile(r"layers\.\d+\.[01]\.linear\.weight")


def official_state_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the official ``BSModel`` for ``cfg`` (OFFICIAL_SPEC §2.1), in its
    state-dict order (which is also its ``parameters()`` order: the model has no buffers)."""
    m = cfg.mamba2
    d, di, h = cfg.dim, m.d_inner(cfg.dim), m.nheads(cfg.dim)
    gn = m.ngroups * m.d_state
    conv = di + 2 * gn  # x, B, C share the depthwise convolution
    hidden = cfg.mask_mlp_mult * d
    feats = [2 * cfg.audio_channels * w for w in cfg.band_widths]  # real + imag per channel and bin
    out: dict[str, tuple[int, ...]] = {}
    for i in range(cfg.depth):
        for j in (0, 1):  # 0 = time, 1 = band
            for direction in ("forward_blocks", "backward_blocks"):
                p = f"layers.{i}.{j}.{direction}.0."
                out[p + "norm.weight"] = (d,)
                out[p + "mixer.dt_bias"] = (h,)
                out[p + "mixer.A_log"] = (h,)
                out[p + "mixer.D"] = (h,)
                out[p + "mixer.in_proj.weight"] = (2 * di + 2 * gn + h, d)  # z, x, B, C, dt
                out[p + "mixer.conv1d.weight"] = (conv, 1, m.d_conv)
                out[p + "mixer.conv1d.bias"] = (conv,)
                out[p + "mixer.norm.weight"] = (di,)
                out[p + "mixer.out_proj.weight"] = (d, di)
            out[f"layers.{i}.{j}.linear.weight"] = (2 * d, d, 1)  # ConvTranspose1d: (in, out, kernel)
            out[f"layers.{i}.{j}.linear.bias"] = (d,)
    out["final_norm.gamma"] = (d,)
    for k, n in enumerate(feats):
        out[f"band_split.to_features.{k}.0.gamma"] = (n,)
        out[f"band_split.to_features.{k}.1.weight"] = (d, n)
        out[f"band_split.to_features.{k}.1.bias"] = (d,)
    for s in range(cfg.num_stems):
        for k, n in enumerate(feats):
            p = f"mask_estimators.{s}.to_freqs.{k}.0."
            out[p + "0.weight"] = (hidden, d)
            out[p + "0.bias"] = (hidden,)
            out[p + "2.weight"] = (2 * n, hidden)  # GLU halves it back to n
            out[p + "2.bias"] = (2 * n,)
    return out


def to_ours(key: str, t: Tensor) -> Tensor:
    """An official tensor under our name (same key); only the merge layer's weight changes layout."""
    if _MERGE_WEIGHT.fullmatch(key):
        return t[:, :, 0].t().contiguous()  # (2d, d, 1) ConvTranspose1d -> (d, 2d) nn.Linear
    return t


def model_part(raw: Mapping[Any, Any], source: str) -> tuple[dict[str, Any], str, list[str]]:
    """(the model's entries with their prefix removed, in file order; the prefix; the other keys).

    The prefix is ``model.`` for Lightning, none for MSST.
    """
    keys = [k for k in raw if isinstance(k, str)]
    if not keys:
        raise CheckpointError(f"{source}: not a model checkpoint (no named tensors)")
    prefixes = sorted({k[: -len(ANCHOR)] for k in keys if k.endswith(ANCHOR)})
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if not prefixes:
        raise CheckpointError(
            f"{source}: not a BSMamba2 checkpoint: no band-split weights ({ANCHOR!r}) among its "
            f"{len(keys)} entries ({head(keys)})"
        )
    prefix = next((p for p in _PREFERRED_PREFIXES if p in prefixes), None)
    if prefix is None:
        if len(prefixes) > 1:
            raise CheckpointError(f"{source}: several models in one file (prefixes {', '.join(prefixes)})")
        prefix = prefixes[0]
    state: dict[str, Any] = {}
    ignored: list[str] = []
    for k in keys:
        if k.startswith(prefix) and not _WINDOW_KEY.fullmatch(k[len(prefix) :]):
            state[k[len(prefix) :]] = raw[k]
        else:
            ignored.append(k)
    return state, prefix, ignored


def check_family(keys: list[str], source: str) -> None:
    """A clear error for band-split models whose dual-path layers are not the official Mamba2 blocks."""
    layer_keys = [k for k in keys if k.startswith("layers.")]
    if any(k.endswith(".mixer.A_log") for k in layer_keys):
        return
    attention = [k for k in layer_keys if any(m in k for m in _ATTENTION_MARKERS)]
    if attention:
        raise CheckpointError(
            f"{source}: a BS-RoFormer-style checkpoint (attention layers, e.g. {attention[0]}); only BSMamba2 "
            "(Mamba2) checkpoints can be converted, official BS-RoFormer parameter names are not documented"
        )
    if layer_keys:
        raise CheckpointError(
            f"{source}: its dual-path layers are not Mamba2 blocks (e.g. {layer_keys[0]}); "
            "only BSMamba2 checkpoints can be converted"
        )
    raise CheckpointError(f"{source}: not a BSMamba2 checkpoint (band-split weights but no dual-path layers)")


def check_layout(
    shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Every official key present with its shape, nothing else; one line naming what is wrong."""
    problems = layout_problems(shapes, expected)
    if problems:
        raise CheckpointError(f"{source}: does not match the BSMamba2 layout: " + "; ".join(problems))
