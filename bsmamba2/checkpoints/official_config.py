"""Our ModelConfig for an official-layout state dict: from the tensor shapes, and from the hyper-parameters
only for what shapes cannot tell.

Everything comes from the shapes (never from hyper-parameters when they disagree): stems = number of mask
estimators, dim, depth, mono/stereo and the band layout from the band-split norms, the Mamba2 sizes from
``A_log``, ``conv1d`` and ``out_proj``. A Lightning checkpoint's ``hyper_parameters`` (read as inert plain
data) are used for the hop length, sample rate, Mamba2 group count and stem names, and to cross-check.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from bsmamba2.checkpoints.official_layout import ANCHOR
from bsmamba2.config import DEFAULT_STEMS, ModelConfig
from bsmamba2.errors import CheckpointError

log = logging.getLogger(__name__)


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

    mamba = _mamba2_sizes(shape, dim, hp, source)
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
        mamba2=mamba,
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


def _mamba2_sizes(
    shape: Callable[[str], tuple[int, ...]], dim: int, hp: _HParams, source: str
) -> dict[str, int]:
    """d_state, expand, headdim, ngroups and d_conv of the Mamba2 mixers, from the first one's A_log (heads),
    out_proj (inner width) and conv1d (inner width + 2 · ngroups · d_state, kernel)."""
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
    return dict(
        d_state=gn // ngroups,
        expand=d_inner // dim,
        headdim=d_inner // nheads,
        ngroups=ngroups,
        d_conv=d_conv,
    )


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
