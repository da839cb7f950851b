"""Official BSMamba2 checkpoints (PyTorch Lightning ``.ckpt``) and MSST ``bs_mamba2`` checkpoints → our model.

``bsmamba2 convert OFFICIAL.ckpt -o model.safetensors [--ema] [--stems vocals,...]`` writes one of our
safetensors files; ``load_model`` calls ``load_foreign_checkpoint`` directly for ``.ckpt`` / ``.pt`` / ``.pth``
/ ``.bin`` files and ``from_state_dict`` for a ``.safetensors`` file without our config.

What is read (OFFICIAL_SPEC §2):

- Lightning: ``ckpt["state_dict"]`` holds the network under the ``model.`` prefix, next to the window buffers
  ``featurizer.window``, ``inverse_featurizer.window`` and ``multi_featurizer.{0..4}.window`` (ignored).
  ``ckpt["hyper_parameters"]`` is an OmegaConf object: read as inert data, used only to cross-check and for
  what the weights cannot tell (hop length, sample rate, stem names). The EMA copy, if any, is
  ``ckpt["optimizer_states"][0]["ema"]``: one tensor per parameter, in ``parameters()`` order.
- MSST: the same module tree as a plain state dict (no prefix), possibly under ``"state_dict"`` or ``"model"``.

Everything else comes from the tensor shapes (never from hyper-parameters when they disagree): stems = number
of mask estimators, dim, depth, mono/stereo and the band layout from the band-split norms, the Mamba2 sizes from
``A_log``, ``conv1d`` and ``out_proj``. Every official key is then checked by name and shape; the one
difference from our names is the merge layer ``layers.i.j.linear``, an official ConvTranspose1d(2d→d, k=1)
whose weight (2d, d, 1) becomes our nn.Linear weight (d, 2d) = ``w[:, :, 0].T``.

Nothing pickled is ever executed: checkpoints are read with ``bsmamba2.model.safe_pickle``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bsmamba2.config import DEFAULT_STEMS, ModelConfig
from bsmamba2.errors import CheckpointError, UserError
from bsmamba2.model.safe_pickle import Inert, LazyTensor, open_torch_archive, sniff_format, to_plain

log = logging.getLogger(__name__)

__all__ = [
    "Converted",
    "add_arguments",
    "convert_checkpoint",
    "from_state_dict",
    "infer_config",
    "load_foreign_checkpoint",
    "official_state_shapes",
    "run",
]

# Present in every BSMamba2 / BS-RoFormer-style band-split model; its prefix is the model's prefix.
ANCHOR = "band_split.to_features.0.1.weight"
# Non-model buffers of the official Lightning module (STFT windows), dropped silently.
_WINDOW_KEY = re.compile(r"(featurizer|inverse_featurizer|multi_featurizer\.\d+)\.window")
_PREFERRED_PREFIXES = ("", "model.", "module.", "_orig_mod.", "model._orig_mod.", "model.module.")
# Attention-layer names of BS-RoFormer-style models (lucidrains, MSST bs_roformer / mel_band_roformer).
_ATTENTION_MARKERS = ("to_qkv", ".attn.", "rotary_embed", "to_gates", "to_out", ".layers.")
_MERGE_WEIGHT = re.compile(r"layers\.\d+\.[01]\.linear\.weight")


@dataclass
class Converted:
    """A converted checkpoint: our config, a state dict in our names, and what was done."""

    cfg: ModelConfig
    state: dict[str, Tensor]
    kind: str  # "Lightning checkpoint", "state dict", ...
    weights: str = "raw"  # "raw" or "ema"
    prefix: str = ""
    ignored: list[str] = field(default_factory=list)
    has_ema: bool = False


# ---- the official layout ---------------------------------------------------------------------------------


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


def _to_ours(key: str, t: Tensor) -> Tensor:
    """An official tensor under our name (same key); only the merge layer's weight changes layout."""
    if _MERGE_WEIGHT.fullmatch(key):
        return t[:, :, 0].t().contiguous()  # (2d, d, 1) ConvTranspose1d -> (d, 2d) nn.Linear
    return t


# ---- reading the file ------------------------------------------------------------------------------------


def load_foreign_checkpoint(
    path: str | os.PathLike[str], ema: bool = False, stems: Sequence[str] | None = None
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(our config, state dict in our names) from an official Lightning or MSST checkpoint.

    ``ema`` takes the EMA weights (error if the file has none); ``stems`` names the mask estimators' outputs.
    Tensors are float32 on the CPU, ready for ``model.load_state_dict(state, strict=True)``.
    Raises CheckpointError (one line) for anything that is not a BSMamba2 checkpoint.
    """
    c = convert_checkpoint(path, ema=ema, stems=stems)
    return c.cfg, c.state


def convert_checkpoint(
    path: str | os.PathLike[str], ema: bool = False, stems: Sequence[str] | None = None
) -> Converted:
    """Like ``load_foreign_checkpoint`` but also says what kind of file it was and what was ignored."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file")
    fmt = sniff_format(p)
    if fmt == "safetensors":
        from bsmamba2.model.checkpoint import read_safetensors  # checkpoint imports this module lazily

        meta, tensors = read_safetensors(p)
        if "config" in meta:
            raise CheckpointError(
                f"{p}: already a bsmamba2 model file; load it directly, no conversion needed"
            )
        return _convert(tensors, source=str(p), kind="safetensors state dict", stems=stems, want_ema=ema)
    with open_torch_archive(p) as archive:  # refuses legacy / unknown formats with one line
        obj = archive.load()
        state, kind, hparams, ema_list = _unpack(obj, str(p))
        # Inside the ``with``: tensors are read from the archive as they are materialised.
        return _convert(
            state, source=str(p), kind=kind, stems=stems, hparams=hparams, ema_list=ema_list, want_ema=ema
        )


def from_state_dict(
    tensors: Mapping[str, Tensor],
    source: str = "state dict",
    stems: Sequence[str] | None = None,
    hparams: Any = None,
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(our config, state dict in our names) from an in-memory official / MSST state dict (any prefix)."""
    c = _convert(tensors, source=source, kind="state dict", stems=stems, hparams=hparams)
    return c.cfg, c.state


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (Tensor, LazyTensor))


def _unpack(obj: Any, source: str) -> tuple[Mapping[Any, Any], str, Any, Any]:
    """(state dict, kind, hyper-parameters as plain data, EMA list or None) of an unpickled checkpoint."""
    if isinstance(obj, Inert):
        raise CheckpointError(
            f"{source}: holds a pickled {type(obj).qualname()} object, not a state dict "
            "(save model.state_dict() instead)"
        )
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: not a model checkpoint (it holds a {type(obj).__name__})")
    hparams = to_plain(obj["hyper_parameters"]) if "hyper_parameters" in obj else None
    ema_list = None
    opt_states = obj.get("optimizer_states")
    if isinstance(opt_states, (list, tuple)) and opt_states and isinstance(opt_states[0], dict):
        ema_list = opt_states[0].get("ema")
    if isinstance(obj.get("state_dict"), dict):
        lightning = (
            "pytorch-lightning_version" in obj or "optimizer_states" in obj or "hyper_parameters" in obj
        )
        return obj["state_dict"], ("Lightning checkpoint" if lightning else "state dict"), hparams, ema_list
    for key in ("model", "model_state_dict", "state"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(_is_tensor(v) for v in inner.values()):
            return inner, "state dict", hparams, ema_list
    return obj, "state dict", hparams, ema_list


# ---- conversion ------------------------------------------------------------------------------------------


def _convert(
    raw: Mapping[Any, Any],
    source: str,
    kind: str,
    stems: Sequence[str] | None = None,
    hparams: Any = None,
    ema_list: Any = None,
    want_ema: bool = False,
) -> Converted:
    state, prefix, ignored = _model_part(raw, source)
    _check_family(list(state), source)
    shapes = {k: tuple(v.shape) for k, v in state.items() if _is_tensor(v)}
    not_tensors = [k for k, v in state.items() if not _is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{source}: {len(not_tensors)} entries are not tensors ({_head(not_tensors)})")
    cfg = infer_config(shapes, hparams=hparams, stems=stems, source=source)
    expected = official_state_shapes(cfg)
    _check_layout(shapes, expected, source)
    has_ema = ema_list is not None
    weights = "raw"
    if want_ema:
        state = _ema_state(state, ema_list, source)
        weights = "ema"
    elif has_ema:
        log.info(
            "%s: also holds EMA weights; --ema (or ema=True) uses them instead of the saved ones", source
        )
    out: dict[str, Tensor] = {}
    for key in expected:  # official order
        t = state[key]
        if not t.dtype.is_floating_point:
            raise CheckpointError(
                f"{source}: {prefix}{key} holds {t.dtype} values, not floating-point weights"
            )
        value = t.materialize() if isinstance(t, LazyTensor) else t.detach()
        out[key] = _to_ours(key, value.to(device="cpu", dtype=torch.float32))
    if ignored:
        log.debug("%s: ignored %d non-model entries (%s)", source, len(ignored), _head(ignored))
    return Converted(cfg, out, kind, weights, prefix, ignored, has_ema)


def _model_part(raw: Mapping[Any, Any], source: str) -> tuple[dict[str, Any], str, list[str]]:
    """The model's entries with their prefix (``model.`` for Lightning, none for MSST) removed, in file order."""
    keys = [k for k in raw if isinstance(k, str)]
    if not keys:
        raise CheckpointError(f"{source}: not a model checkpoint (no named tensors)")
    prefixes = sorted({k[: -len(ANCHOR)] for k in keys if k.endswith(ANCHOR)})
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if not prefixes:
        raise CheckpointError(
            f"{source}: not a BSMamba2 checkpoint: no band-split weights ({ANCHOR!r}) among its "
            f"{len(keys)} entries ({_head(keys)})"
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


def _check_family(keys: list[str], source: str) -> None:
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


def _check_layout(
    shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Every official key present with its shape, nothing else; one line naming what is wrong."""
    from bsmamba2.model.checkpoint import layout_problems  # checkpoint imports this module lazily

    problems = layout_problems(shapes, expected)
    if problems:
        raise CheckpointError(f"{source}: does not match the BSMamba2 layout: " + "; ".join(problems))


def _ema_state(state: dict[str, Any], ema_list: Any, source: str) -> dict[str, Any]:
    """The EMA copy under the parameter names: ``optimizer_states[0]["ema"]`` follows ``parameters()``
    order, which is the model's state-dict order (it has no buffers)."""
    if ema_list is None:
        raise CheckpointError(
            f"{source}: has no EMA weights (no optimizer_states[0]['ema']); leave out --ema to use its weights"
        )
    if not isinstance(ema_list, (list, tuple)):
        raise CheckpointError(
            f"{source}: optimizer_states[0]['ema'] is a {type(ema_list).__name__}, not a list"
        )
    names = list(state)
    if len(ema_list) != len(names):
        raise CheckpointError(
            f"{source}: the EMA list has {len(ema_list)} tensors but the model has {len(names)} parameters"
        )
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(zip(names, ema_list)):
        if not _is_tensor(value):
            raise CheckpointError(f"{source}: EMA entry {i} ({name}) is not a tensor")
        if tuple(value.shape) != tuple(state[name].shape):
            raise CheckpointError(
                f"{source}: EMA entry {i} has shape {tuple(value.shape)} but {name} has {tuple(state[name].shape)}"
            )
        out[name] = value
    return out


# ---- configuration from shapes ---------------------------------------------------------------------------


def infer_config(
    shapes: Mapping[str, tuple[int, ...]],
    hparams: Any = None,
    stems: Sequence[str] | None = None,
    source: str = "checkpoint",
) -> ModelConfig:
    """Our ModelConfig for an official-layout state dict, from its tensor shapes (prefix already removed).

    ``hparams`` (plain data, e.g. a Lightning checkpoint's hyper_parameters) fills in what shapes cannot
    tell: hop length, sample rate, Mamba2 group count, stem names. Where it contradicts the
    shapes, a warning is logged and the shapes win.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{source}: missing {key}, cannot tell the model's size")
        return shapes[key]

    def count(pattern: str) -> int:  # max index + 1, so that a gap shows up later as a missing key
        rx = re.compile(pattern)
        found = [int(m.group(1)) for k in shapes if (m := rx.match(k))]
        return max(found) + 1 if found else 0

    hp = _HParams(hparams)
    dim = shape(ANCHOR)[0]
    depth = count(r"layers\.(\d+)\.")
    num_stems = count(r"mask_estimators\.(\d+)\.")
    if not num_stems:
        raise CheckpointError(f"{source}: no mask estimators (mask_estimators.0.*), not a separation model")
    feats = []
    for k in range(count(r"band_split\.to_features\.(\d+)\.")):
        gamma = shapes.get(f"band_split.to_features.{k}.0.gamma")
        feats.append(gamma[0] if gamma else shape(f"band_split.to_features.{k}.1.weight")[1])
    channels, widths = _band_layout(feats, hp, source)

    p = "layers.0.0.forward_blocks.0.mixer."
    nheads = shape(p + "A_log")[0]
    d_inner = shape(p + "out_proj.weight")[1]
    conv_dim, _, d_conv = _dims(shape(p + "conv1d.weight"), 3, p + "conv1d.weight", source)
    if nheads <= 0 or d_inner % dim or d_inner % nheads or conv_dim <= d_inner or (conv_dim - d_inner) % 2:
        raise CheckpointError(
            f"{source}: unsupported Mamba2 sizes (dim {dim}, inner {d_inner}, {nheads} heads, conv {conv_dim})"
        )
    gn = (conv_dim - d_inner) // 2  # ngroups · d_state
    ngroups = hp.model_int("ngroups") or 1
    if gn % ngroups or nheads % ngroups:
        log.warning(
            "%s: hyper_parameters say ngroups=%d, which does not fit the weights; using 1", source, ngroups
        )
        ngroups = 1
    if ngroups != 1:
        log.warning("%s: ngroups=%d (from hyper_parameters); the official model uses 1", source, ngroups)
    hidden = shape("mask_estimators.0.to_freqs.0.0.0.weight")[0]
    if hidden % dim:
        raise CheckpointError(f"{source}: mask MLP width {hidden} is not a multiple of dim {dim}")

    names = _stem_names(num_stems, stems, hp, source)
    n_fft = 2 * (sum(widths) - 1)
    values: dict[str, Any] = dict(
        mixer="mamba2",
        dim=dim,
        depth=depth,
        stems=names,
        audio_channels=channels,
        n_fft=n_fft,
        band_widths=widths,
        mask_mlp_mult=hidden // dim,
        mamba2=dict(
            d_state=gn // ngroups,
            expand=d_inner // dim,
            headdim=d_inner // nheads,
            ngroups=ngroups,
            d_conv=d_conv,
        ),
    )
    for name, value in (
        ("hop_length", hp.stft_int("hop_length")),
        ("sample_rate", hp.any_int("sample_rate")),
    ):
        if value is not None and value > 0:
            values[name] = value
    hp.cross_check(values, source)
    try:
        return ModelConfig(**values)
    except ValueError as e:
        raise CheckpointError(f"{source}: unsupported model configuration ({e})") from None


def _dims(s: tuple[int, ...], n: int, key: str, source: str) -> tuple[int, ...]:
    if len(s) != n:
        raise CheckpointError(f"{source}: {key} has shape {s}, expected {n} dimensions")
    return s


def _band_layout(feats: list[int], hp: _HParams, source: str) -> tuple[int, tuple[int, ...]]:
    """(audio channels, band widths in bins) from the band-split feature sizes 2·C·f_k.

    Σ 2·C·f_k = 2·C·(n_fft/2 + 1). Stereo and mono readings give n_fft values N and 2N + 2, which are never both
    powers of two; so the power-of-two reading wins, then the hyper-parameters' ``stereo`` or ``n_fft``.
    """
    if not feats or any(f <= 0 for f in feats):
        raise CheckpointError(f"{source}: no band-split layers")
    candidates = []
    for c in (2, 1):
        if all(f % (2 * c) == 0 for f in feats):
            widths = tuple(f // (2 * c) for f in feats)
            n_fft = 2 * (sum(widths) - 1)
            candidates.append((c, widths, n_fft))
    if not candidates:
        raise CheckpointError(f"{source}: band feature sizes {feats[:4]}... are not 2·channels·bins")
    stereo = hp.model_value("stereo")
    want_fft = hp.stft_int("n_fft")

    def score(cand: tuple[int, tuple[int, ...], int]) -> tuple[bool, bool, bool]:
        c, _, n_fft = cand
        return (n_fft == want_fft, isinstance(stereo, bool) and stereo == (c == 2), n_fft & (n_fft - 1) == 0)

    c, widths, _ = max(candidates, key=score)  # ties keep the first: stereo, as the official model
    return c, widths


def _stem_names(n: int, stems: Sequence[str] | None, hp: _HParams, source: str) -> tuple[str, ...]:
    if stems is not None:
        names = tuple(s.strip() for s in stems if s.strip())
        if len(names) != n:
            raise CheckpointError(
                f"{source}: {len(names)} stem names given ({', '.join(names)}) but the checkpoint has {n} "
                f"mask estimator{'s' if n != 1 else ''}"
            )
        return names
    from_hp = hp.targets()
    if from_hp is not None and len(from_hp) == n and len(set(from_hp)) == n:
        return tuple(from_hp)
    if n in DEFAULT_STEMS:
        return DEFAULT_STEMS[n]
    log.warning(
        "%s: %d stems with no names; calling them stem0..stem%d (use --stems to name them)", source, n, n - 1
    )
    return tuple(f"stem{i}" for i in range(n))


class _HParams:
    """Read-only look-ups in a checkpoint's hyper-parameters (plain data of unknown nesting).

    The official model config is the first mapping that has both ``dim`` and ``depth``; its STFT settings are
    the first mapping under a key naming a ``featurizer`` (not a multi-resolution or inverse one) that has
    ``n_fft``. Names follow the official Hydra configs (OFFICIAL_SPEC §1.1, §4).
    """

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        maps = list(_mappings(tree))
        self.model = next((m for _, m in maps if "dim" in m and "depth" in m), {})
        self.stft = next(
            (
                m
                for path, m in maps
                if path
                and "featurizer" in str(path[-1])
                and not any(w in str(path[-1]) for w in ("multi", "inverse"))
                and "n_fft" in m
            ),
            {},
        )
        self.maps = maps

    def model_value(self, key: str) -> Any:
        return self.model.get(key)

    def model_int(self, key: str) -> int | None:
        return _int(self.model.get(key))

    def stft_int(self, key: str) -> int | None:
        return _int(self.stft.get(key))

    def any_int(self, key: str) -> int | None:
        return next((_int(m[key]) for _, m in self.maps if _int(m.get(key)) is not None), None)

    def targets(self) -> list[str] | None:
        for _, m in self.maps:
            for key in ("target", "targets", "instruments"):
                v = m.get(key)
                if isinstance(v, str):
                    v = [v]
                if isinstance(v, list) and v and all(isinstance(s, str) for s in v):
                    return v
        return None

    def cross_check(self, values: Mapping[str, Any], source: str) -> None:
        """Warn about every hyper-parameter that contradicts the weights (the weights are used)."""
        checks: list[tuple[str, Any, Any]] = [
            ("dim", self.model.get("dim"), values["dim"]),
            ("depth", self.model.get("depth"), values["depth"]),
            ("num_stems", self.model.get("num_stems"), len(values["stems"])),
            ("stereo", self.model.get("stereo"), values["audio_channels"] == 2),
            ("mask_estimator_depth", self.model.get("mask_estimator_depth"), 2),
            ("n_fft", self.stft.get("n_fft"), values["n_fft"]),
            ("win_length", self.stft.get("win_length"), values["n_fft"]),
        ]
        for key in ("d_state", "expand", "headdim", "d_conv"):
            checks.append((key, self.model.get(key), values["mamba2"][key]))
        for key, said, actual in checks:
            if said is not None and isinstance(said, (bool, int)) and said != actual:
                log.warning(
                    "%s: hyper_parameters say %s=%r but the weights have %r; using the weights",
                    source,
                    key,
                    said,
                    actual,
                )
        module_type = self.model.get("module_type")
        if isinstance(module_type, str) and "mamba" not in module_type.lower():
            log.warning(
                "%s: hyper_parameters say module_type=%r but the weights are Mamba2 blocks",
                source,
                module_type,
            )


def _mappings(tree: Any) -> Iterator[tuple[tuple[Any, ...], dict[Any, Any]]]:
    """Every dict in ``tree``, breadth first, with its key path."""
    queue: list[tuple[tuple[Any, ...], Any]] = [((), tree)]
    seen: set[int] = set()
    while queue:
        path, node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            yield path, node
            queue.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            queue.extend(((*path, i), v) for i, v in enumerate(node))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _head(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---- command line ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bsmamba2 convert``."""
    parser.add_argument(
        "checkpoint", type=Path, help="official Lightning .ckpt, or an MSST bs_mamba2 checkpoint"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output .safetensors file (default: next to CHECKPOINT)",
    )
    parser.add_argument("--ema", action="store_true", help="take the EMA weights stored in the checkpoint")
    parser.add_argument(
        "--stems",
        default=None,
        help="comma-separated stem names, one per mask estimator (default: vocals; vocals,other; "
        "vocals,drums,bass,other for 1, 2, 4 stems)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, load strictly into our model, write safetensors; print a short summary."""
    from bsmamba2.model.checkpoint import build_model, load_weights, save_model

    src: Path = args.checkpoint
    out: Path = args.output if args.output is not None else src.with_suffix(".safetensors")
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"{out}: the output must be a .safetensors file")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out}: the output would overwrite the checkpoint; choose another name with -o")
    stems = args.stems.split(",") if args.stems is not None else None
    c = convert_checkpoint(src, ema=args.ema, stems=stems)
    model = build_model(c.cfg)
    load_weights(model, c.state, source=str(src))
    save_model(model, out, metadata={"converted_from": src.name, "converted_weights": c.weights})
    cfg = c.cfg
    n_params = sum(t.numel() for t in c.state.values())
    print(
        f"read {src} ({c.kind}, {c.weights} weights{'; EMA weights also present' if c.has_ema and c.weights == 'raw' else ''})"
    )
    print(
        f"model: BSMamba2 dim {cfg.dim}, depth {cfg.depth}, "
        f"{'stereo' if cfg.audio_channels == 2 else 'mono'}, {cfg.num_bands} bands, n_fft {cfg.n_fft}, "
        f"hop {cfg.hop_length}, stems {','.join(cfg.stems)}; {n_params:,} parameters"
    )
    print(f"wrote {out}")
    print(f"separate with: bsmamba2 separate --model {out} song.wav")
    return 0
