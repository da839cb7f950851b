"""Shared fixtures: simple stand-in models, a tiny saved BSMamba2, sound files and a tiny MUSDB-layout corpus.

Everything is small enough for CPU tests that take seconds.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from bsmamba2.api import Separator
from bsmamba2.config import ModelConfig

SR = 44100

# Tiny tensors: thread start-up costs more than the maths, and on a shared 2-core runner intra-op threads
# fight each other (a tiny-model forward measured 10x slower with 2 threads under load than with 1).
torch.set_num_threads(1)


class ScaleModel(nn.Module):
    """A stand-in separator: stem k = gains[k] * input. (B, C, L) -> (B, S, C, L). Carries a ``cfg`` like the
    real model (stems, sample_rate, audio_channels)."""

    def __init__(self, gains: tuple[float, ...] = (1.0,), stems: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.register_buffer("gains", torch.tensor(gains, dtype=torch.float32))
        names = stems or (("vocals",) if len(gains) == 1 else tuple(f"s{i}" for i in range(len(gains))))
        self.cfg = ModelConfig.tiny(stems=names)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x[:, None] * self.gains[None, :, None, None]  # (B, S, C, L)


def threads_started_since(before: set[threading.Thread]) -> list[str]:
    """Names of the threads alive now that were not in ``before`` (``set(threading.enumerate())``), less tqdm's
    monitor: tqdm starts that one with the process's first bar and keeps it for good."""
    return [t.name for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"]


@pytest.fixture(autouse=True)
def python_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler in every test, whatever the process inherited: a shell's background job
    (`make test &`) starts with SIGINT ignored, an ignored signal raises nothing (nor does `interrupt_main`),
    and a child process inherits the ignoring. Tests of Ctrl-C need the handler an interactive run has."""
    import signal

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.fixture
def identity_model() -> ScaleModel:
    """Vocals = the input (so instrumental = 0)."""
    return ScaleModel((1.0,))


@pytest.fixture
def half_model() -> ScaleModel:
    """Vocals = half the input (so instrumental = the other half)."""
    return ScaleModel((0.5,))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ``ModelConfig.tiny()`` BSMamba2 (vocals only) saved with ``save_model``."""
    from bsmamba2.checkpoints import save_model
    from bsmamba2.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(hop_length=128))  # hop 128: half the frames, twice as fast
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture
def write_audio(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write_audio(name, data (C, N) or None, sr=44100, seconds=1.0, channels=2, subtype="FLOAT")."""

    def make(
        name: str = "song.wav",
        data: np.ndarray | None = None,
        sr: int = SR,
        seconds: float = 1.0,
        channels: int = 2,
        subtype: str = "FLOAT",
        seed: int = 0,
    ) -> Path:
        if data is None:
            rng = np.random.default_rng(seed)
            data = (0.3 * rng.standard_normal((channels, int(round(seconds * sr))))).astype(np.float32)
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.ascontiguousarray(data.T), sr, subtype=subtype)
        return p

    return make


def _phrase_vocals(n: int, phrases: list[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    v = np.zeros((2, n), np.float32)
    for s, e in phrases:
        m = (t >= s) & (t < e)
        v[:, m] = 0.4 * np.sin(2 * np.pi * 330 * t[m]) + 0.05 * rng.standard_normal((2, int(m.sum())))
    return v


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/test/<track>/{mixture,vocals,drums,bass,other}.wav: two 2.5 s tracks of noise and tones, vocals in
    known phrases; track "A" also has a synthetic-corpus meta.json listing its phrases."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    n = int(2.5 * SR)
    layouts = {"A": [(0.2, 1.5)], "B": [(0.1, 1.2), (1.4, 2.45)]}
    for name, phrases in layouts.items():
        d = root / "test" / name
        d.mkdir(parents=True)
        stems = {
            "vocals": _phrase_vocals(n, phrases, rng),
            "drums": (0.1 * rng.standard_normal((2, n))).astype(np.float32),
            "bass": np.tile(0.2 * np.sin(2 * np.pi * 55 * np.arange(n) / SR), (2, 1)).astype(np.float32),
            "other": (0.05 * rng.standard_normal((2, n))).astype(np.float32),
        }
        for s, x in stems.items():
            sf.write(str(d / f"{s}.wav"), x.T, SR, subtype="FLOAT")
        sf.write(str(d / "mixture.wav"), sum(stems.values()).T, SR, subtype="FLOAT")
        if name == "A":
            meta = {
                "sample_rate": SR,
                "phrases": [
                    {
                        "start": s,
                        "end": e,
                        "start_sample": round(s * SR),
                        "end_sample": round(e * SR),
                        "bucket": "1-2",
                    }
                    for s, e in phrases
                ],
            }
            (d / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``Separator.from_pretrained`` records the call and fails loudly: for checks that must come before
    any model is loaded."""
    calls: list[object] = []

    def load(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Separator, "from_pretrained", staticmethod(load))
    return calls


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the user cache (measured CPU precision, compile caches) out of the tester's home folder."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


# ---- full-size exports and the paper-layout export ---------------------------------------------------------

FULLSIZE = "fullsize"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{FULLSIZE}: full-size model exports (minutes each); run only when asked: -m {FULLSIZE}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``fullsize`` are skipped unless the -m expression names them (``pytest -m fullsize``):
    ``make test`` stays within its time budget, the scaled-down twins of these tests run there instead."""
    if FULLSIZE in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=f"a full-size export (minutes): run by hand with pytest -m {FULLSIZE}")
    for item in items:
        if FULLSIZE in item.keywords:
            item.add_marker(skip)


# The authors' layout (62 bands, STFT 2048/441, stereo folding, one vocals mask; OFFICIAL_SPEC §1) at a test
# size: the bundled model's layout too (configs/default_small.yaml), with two dual-path layers so that the
# layer loop is traced. An export's cost follows the op count: this one is ~45 s on a 2-core CPU.
PAPER_LAYOUT_SMALL = ModelConfig.paper(
    dim=16, depth=2, mamba2={"expand": 2, "d_state": 16, "headdim": 8}, mask_mlp_mult=2
)


@pytest.fixture(scope="session")
def paper_layout_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(weights.safetensors, model.onnx) of a seeded random ``PAPER_LAYOUT_SMALL`` model, exported once per session
    by ``bsmamba2 export -o model.onnx`` with no MODEL, the CLI's bundled default pointed at these weights.

    Shared by tests/test_onnx_export.py (the layout exports and runs like torch) and tests/test_onnx_cli.py (the
    default-MODEL path, then ``separate --engine onnx`` against torch)."""
    pytest.importorskip("onnxscript")
    import bsmamba2.cli.export as cli_export
    from bsmamba2 import cli
    from bsmamba2.checkpoints import save_model
    from bsmamba2.model import build_model

    folder = tmp_path_factory.mktemp("onnx_paper_layout")
    torch.manual_seed(0)
    weights = save_model(build_model(PAPER_LAYOUT_SMALL), folder / "paper_layout.safetensors")
    out = folder / "paper_layout.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_export, "DEFAULT_MODEL", weights)
        assert cli.main(["export", "-o", str(out)]) == 0
    return weights, out


@pytest.fixture
def replay_onnx_trace(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], list[dict[str, object]]]:
    """``replay(path)``: from then on, ``torch.onnx.export`` hands back the graph of the export at ``path``
    instead of tracing the model (a second of loading for seconds of tracing). For tests of what the exporter
    does around the trace (checks, atomic writes, int8); ``path`` must be an export of the same weights.
    Returns the list of the stand-in's calls (their keyword arguments)."""

    def replay(path: Path) -> list[dict[str, object]]:
        import onnx_ir as ir

        calls: list[dict[str, object]] = []

        def export(*args: object, **kwargs: object) -> torch.onnx.ONNXProgram:
            calls.append(kwargs)
            return torch.onnx.ONNXProgram(ir.load(path), None)

        monkeypatch.setattr(torch.onnx, "export", export)
        return calls

    return replay
