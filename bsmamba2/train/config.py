"""Training configuration: frozen dataclasses that a YAML file and ``key=value`` overrides map onto.

A YAML file mirrors ``TrainConfig`` section by section (see ``configs/*.yaml``, shipped in the package:
``bsmamba2 train tiny`` or ``bsmamba2 train paper`` name them without a path)::

    run_dir: runs/bsmamba2        # where checkpoints, TensorBoard logs and log.txt go
    batch_size: 5                 # clips per process and micro-batch
    grad_accum: 6                 # micro-batches per optimizer step
    model:  {preset: paper, ...}  # ModelConfig preset (paper | roformer_paper | tiny) + field overrides
    data:   {root: ..., layout: musdb, segment_seconds: 8.0, ...}
    optim:  {lr: 5.0e-4, weight_decay: 0.01, grad_clip: 3.0, schedule: constant, ...}
    loss:   {lambda_time: 10.0, windows: [4096, 2048, 1024, 512, 256], hop_length: 147, ...}
    valid:  {every: 1000, segment_seconds: 8.0, overlap: 0.0, ...}

Overrides use dotted paths: ``optim.lr=1e-4 model.dim=64 max_steps=100``. Values are parsed as YAML, so
``true``, ``[1, 2]`` and ``null`` work, and numbers like ``1e-4`` are read as floats. An unknown key anywhere is
a one-line ``UserError`` that lists the keys that section accepts.

Every training default lives here, once; the defaults are the official recipe (OFFICIAL_SPEC §5, §6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bsmamba2.config import ModelConfig, model_config_from_dict
from bsmamba2.configio import check_keys as _check_keys
from bsmamba2.configio import coerce_fields as _coerce_fields
from bsmamba2.configio import plain as _plain
from bsmamba2.data.layouts import DEFAULT_LAYOUT, LAYOUTS
from bsmamba2.data.sampler import MixRecipe
from bsmamba2.device import TRAIN_PRECISIONS
from bsmamba2.errors import UserError

SCHEDULES = ("constant", "cosine")
BUNDLED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # package data (a link in a checkout)
CONFIG_ALIASES = {"paper": "bsmamba2_paper", "roformer_paper": "bsroformer_paper"}  # the model presets
BEST_METRICS = ("usdr", "csdr")


@dataclass(frozen=True)
class DataConfig(MixRecipe):
    """Where the stems are, plus how training clips are drawn: the sampler's :class:`MixRecipe` fields
    (segment_seconds, gain_range, p_silent, p_channel_swap, p_polarity_flip, p_aligned, p_reverb,
    reverb_rt60, p_drive, drive_db, p_mono, activity_threshold, activity_stems, stems, items_per_epoch), whose
    defaults are the official recipe (OFFICIAL_SPEC §6).

    The separated stems and the sample rate come from the model config, so they are not repeated here.
    """

    root: str = ""  # the dataset folder, e.g. MUSDB18HQ: ROOT/{train,valid,test}/TRACK/{vocals,...}.wav
    train_subset: str = "train"
    layout: str = DEFAULT_LAYOUT  # how ROOT splits into subsets: musdb | folders (bsmamba2.data.layouts)
    num_workers: int = 2  # DataLoader worker processes per training process

    def __post_init__(self) -> None:
        _coerce_fields(self, "data")
        self.check_recipe("data.")
        if self.layout not in LAYOUTS:
            raise UserError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule (OFFICIAL_SPEC §6: AdamW lr 5e-4, weight decay 0.01, clip 3)."""

    lr: float = 5e-4
    weight_decay: float = 0.01  # PyTorch's AdamW default, applied to every parameter as in the official code
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 3.0  # max global grad norm; 0 disables clipping (the norm is still logged)
    schedule: str = "constant"  # "constant" (official: no scheduler) or "cosine"
    warmup_steps: int = 0  # linear warm-up from 0, for either schedule
    decay_steps: int = 0  # cosine: steps from warm-up end to min_lr; 0 = until max_steps
    min_lr_ratio: float = 0.0  # cosine: final lr = min_lr_ratio * lr
    ema_decay: float = 0.999  # EMA of the weights after every optimizer step; 0 disables

    def __post_init__(self) -> None:
        _coerce_fields(self, "optim")
        if self.lr <= 0:
            raise UserError(f"optim.lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0 or self.warmup_steps < 0 or self.decay_steps < 0:
            raise UserError("optim.grad_clip, optim.warmup_steps and optim.decay_steps must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    """The paper's Eq. 8 with the official details (OFFICIAL_SPEC §5); see ``bsmamba2.train.loss``."""

    lambda_time: float = 10.0  # weight of the time-domain L1 term
    windows: tuple[int, ...] = (4096, 2048, 1024, 512, 256)  # multi-resolution STFT window lengths
    hop_length: int = 147  # hop of every multi-resolution STFT
    min_n_fft: int = 2048  # n_fft = max(window, min_n_fft)
    stft_weight: float = 1.0  # weight of the multi-resolution term
    round_trip_target: bool = True  # compare against iSTFT(STFT(s)) with the model's STFT, as official

    def __post_init__(self) -> None:
        _coerce_fields(self, "loss")
        if any(w <= 0 for w in self.windows) or self.hop_length <= 0:
            raise UserError("loss.windows and loss.hop_length must be positive")


@dataclass(frozen=True)
class ValidConfig:
    """Full-track validation (OFFICIAL_SPEC §7: non-overlapping 8 s chunks, uSDR mean, cSDR median)."""

    every: int = 1000  # optimizer steps between validations; 0 disables validation
    subset: str = "valid"
    segment_seconds: float = 8.0  # chunk length of the chunked inference
    overlap: float = 0.0  # official: no overlap
    batch_size: int = 8  # chunks per forward pass
    max_tracks: int = 0  # validate on the first N tracks only; 0 = all
    use_ema: bool = True  # validate (and pick "best") with the EMA weights when EMA is on
    best_metric: str = "usdr"  # "usdr" (mean) or "csdr" (median), averaged over stems
    audio_examples: int = 2  # tracks whose separated audio goes to TensorBoard
    audio_seconds: float = 10.0  # length of each TensorBoard excerpt

    def __post_init__(self) -> None:
        _coerce_fields(self, "valid")
        if self.best_metric not in BEST_METRICS:
            raise UserError(
                f"valid.best_metric must be one of {', '.join(BEST_METRICS)}, got {self.best_metric!r}"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise UserError(f"valid.overlap must be in [0, 1), got {self.overlap}")
        if self.every < 0 or self.segment_seconds <= 0 or self.batch_size <= 0:
            raise UserError("valid.every must be >= 0; valid.segment_seconds and valid.batch_size positive")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Paper Table I / OFFICIAL_SPEC §6 by default."""

    run_dir: str = "runs/bsmamba2"
    seed: int = 42  # official seed; model init and data both derive from it
    batch_size: int = 5  # clips per process per micro-batch (Table I: 5 per GPU)
    grad_accum: int = 6  # micro-batches per optimizer step (Table I: 6)
    max_steps: int = 0  # optimizer steps to train in total (across resumes); 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget of this call; on expiry save and stop. 0 = no limit
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1"; torchrun uses LOCAL_RANK
    precision: str = "bf16"  # "bf16" autocast on CUDA (Table I), or "fp32". CPU always runs fp32
    backend: str = "auto"  # Mamba2 scan: auto | torch | triton (bsmamba2.model.mixers.ssd.USER_BACKENDS)
    compile: bool = False  # torch.compile the whole model
    # compile the memory-bound work around every Mamba2 scan (FusedMamba2Block): auto = on CUDA, on, off; or
    # kernels: each bidirectional block as one Function over Triton kernels (mixer_triton, CUDA only)
    fused: str = "auto"
    recompute: bool = (
        False  # activation checkpointing of the dual-path passes: less memory, ~1/3 more compute
    )
    log_every: int = 50  # steps between TensorBoard scalars / log lines
    ckpt_every: int = 1000  # steps between checkpoints (also written at every validation and at the end)
    keep_last: int = 3  # step_XXXXXX checkpoints to keep (plus the one "best" points at)
    max_bad_steps: int = 10  # stop after this many consecutive non-finite losses
    progress: bool = True  # tqdm bar on rank 0
    # a model file whose weights start a new run (fine-tuning / warm start); its architecture must be this
    # config's model. Ignored on --resume (the checkpoint has the weights). "" = fresh initialisation.
    init_from: str = ""
    model: ModelConfig = field(default_factory=ModelConfig.paper)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)

    def __post_init__(self) -> None:
        _coerce_fields(self, "")
        if self.fused not in ("auto", "on", "off", "kernels"):
            raise UserError(f"fused must be auto, on, off or kernels, got {self.fused!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "grad_accum", "log_every", "ckpt_every", "keep_last", "max_bad_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_steps < 0 or self.max_minutes < 0:
            raise UserError("max_steps and max_minutes must be >= 0 (0 = no limit)")
        if self.optim.schedule == "cosine" and not (self.optim.decay_steps or self.max_steps):
            raise UserError("optim.schedule=cosine needs optim.decay_steps or max_steps")

    # ---- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples); the model section is fully expanded (no preset)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ModelConfig):
                out[f.name] = value.to_dict()
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[f.name] = {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
            else:
                out[f.name] = _plain(value)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a nested dict (as read from YAML); unknown keys are a one-line ``UserError``."""
        if not isinstance(d, Mapping):
            raise UserError(f"a training config must be a mapping, got {type(d).__name__}")
        _check_keys(cls, d, "")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if name == "model":
                kwargs[name] = model_config_from_dict(value)
            elif name in ("data", "optim", "loss", "valid"):
                sub = _SECTIONS[name]
                if not isinstance(value, Mapping):
                    raise UserError(f"config section {name!r} must be a mapping, got {value!r}")
                _check_keys(sub, value, name)
                kwargs[name] = sub(**value)
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "valid": ValidConfig,
}


# ---- YAML + overrides ---------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """Parse an override value as YAML, reading number-like strings such as ``1e-4`` as floats."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of nested dict ``d`` with ``a.b.c=value`` overrides applied (keys checked later)."""
    out = _deep_copy(d)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is not a config section")
            node = child
        node[parts[-1]] = parse_value(text)
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start from the defaults when ``path`` is None) and apply overrides.

    ``path``: a file, or the name of a bundled config (:func:`find_config`)."""
    d: dict[str, Any] = {}
    if path is not None:
        p = find_config(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: a training config must be a YAML mapping")
        d = loaded
    return TrainConfig.from_dict(apply_overrides(d, overrides))


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names: the file itself if it exists, else a config shipped in the package
    (``bsmamba2/configs``, the checkout's ``configs/``) by name, with or without ``.yaml``: ``tiny``,
    ``bsmamba2_paper``, and the model presets' names ``paper`` / ``roformer_paper`` for the paper configs."""
    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and p.suffix in ("", ".yaml"):
        bundled = BUNDLED_CONFIGS / f"{CONFIG_ALIASES.get(p.stem, p.stem)}.yaml"
        if bundled.is_file():
            return bundled
    names = sorted([*CONFIG_ALIASES, *(f.stem for f in BUNDLED_CONFIGS.glob("*.yaml"))])
    raise UserError(f"config file not found: {p} (nor a bundled config: {', '.join(names)})")


# ---- helpers ------------------------------------------------------------------------------------------------
def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}
