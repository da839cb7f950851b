"""ONNX Runtime against torch on the CPU: seconds of processing per second of audio (lower is faster).

Both engines run through the same chunk engine (``bsmamba2.apply.apply_model``: 8 s chunks, no overlap,
batch 1) on the same random stereo signal, so only the network differs: torch's plain-PyTorch chunked SSD in
fp32 (and bf16 autocast where the CPU runs bf16 natively) against the exported graph in ONNX Runtime in fp32
and, where the CPU has VNNI, with int8 dynamic quantisation of its matrix products
(``onnxruntime.quantization.quantize_dynamic``). Each row also gives the stems' agreement with torch fp32 as
an SNR in dB. ONNX Runtime's CPU provider has no bf16 kernels (MatMul, Add and Exp in bf16 all fail with
NOT_IMPLEMENTED in onnxruntime 1.32), so a bf16 graph is not measured. The load average of the machine is
recorded before and after: on a shared machine it says how much the numbers can be trusted.

Memory: ONNX Runtime's CPU peak grows by about 21 MB per STFT frame for the paper config (bundled model: 5 MB,
against about 2 MB in torch), so 8 s chunks of the paper config (801 frames) need about 17 GB and were killed
by the OOM killer on a 24 GB machine; ``--chunk 2`` keeps it near 4 GB.

    python benchmarks/bench_onnx.py [--seconds 16] [--threads 2] [--only bundled]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SMOKE, Deadline, Report, attempt, cpu_flags  # noqa: E402

SR = 44100
CHUNK_S = 8.0  # the paper's chunk (OFFICIAL_SPEC §7); --chunk changes it for both engines


def configs() -> list[tuple[str, Callable[[], nn.Module]]]:
    """(name, builder of the torch model on the reference SSD) for the bundled and the paper config."""
    from bsmamba2.api import DEFAULT_MODEL
    from bsmamba2.checkpoints import load_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    def paper() -> nn.Module:
        torch.manual_seed(0)
        return build_model(ModelConfig.tiny() if SMOKE else ModelConfig.paper(), backend="chunked").eval()

    return [
        ("bundled default (6.8M)", lambda: load_model(DEFAULT_MODEL, backend="chunked")),
        ("paper (48.1M, random weights)", paper),
    ]


def timed(
    model: nn.Module, song: torch.Tensor, dtype: torch.dtype | None, chunk_s: float = CHUNK_S
) -> tuple[float, torch.Tensor]:
    """(seconds, stems) of one pass over ``song`` in chunks of ``chunk_s`` after a warm-up on a quarter chunk."""
    from bsmamba2.apply import apply_model

    seg = int((0.5 if SMOKE else chunk_s) * SR)
    with torch.inference_mode():
        apply_model(model, song[:, : seg // 4], segment=seg // 4, overlap=0.0, batch_size=1, dtype=dtype)
        t = time.perf_counter()
        out = apply_model(model, song, segment=seg, overlap=0.0, batch_size=1, dtype=dtype)
        return time.perf_counter() - t, out


def snr_db(est: torch.Tensor, ref: torch.Tensor) -> float:
    err = (est - ref).pow(2).sum().clamp_min(1e-30)
    return float(10 * torch.log10(ref.pow(2).sum() / err))


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the graph's MatMuls (weights per channel), metadata kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    proto = onnx.load(str(dst))
    if {p.key for p in proto.metadata_props} != set(meta):
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(dst))
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=16.0, help="audio length (default 16 s: two chunks)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines (default 2)")
    ap.add_argument(
        "--chunk", type=float, default=CHUNK_S, help=f"chunk length in seconds (default {CHUNK_S:g})"
    )
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 3600)))
    ap.add_argument("--only", default="", help="run only the configs whose name contains this text")
    ap.add_argument("--keep", type=Path, default=None, help="keep the exported .onnx files in this folder")
    args = ap.parse_args(argv)
    from bsmamba2.device import tune_cpu_allocator
    from bsmamba2.onnx.exporter import export_onnx
    from bsmamba2.onnx.runtime import OnnxModel

    tune_cpu_allocator()  # as `bsmamba2 separate` does
    torch.set_num_threads(args.threads)
    if SMOKE:
        args.seconds = 1.0
    rep = Report("onnx")
    import onnxruntime

    rep.extra["onnxruntime"] = onnxruntime.__version__
    rep.extra["load_before"] = os.getloadavg()
    dl = Deadline(args.budget)
    flags = cpu_flags()
    native_bf16 = bool({"amx_bf16", "avx512_bf16"} & flags)
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    rep.extra["cpu_flags"] = sorted(
        {"amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_int8"} & flags
    )
    song = 0.1 * torch.randn(2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    folder.mkdir(parents=True, exist_ok=True)

    def row(name: str, engine: str, precision: str, sec: float, out: torch.Tensor, ref: torch.Tensor) -> None:
        rep.add(
            "onnx",
            dict(
                model=name,
                engine=engine,
                precision=precision,
                threads=args.threads,
                audio_s=args.seconds,
                seconds=sec,
                s_per_audio_s=sec / args.seconds,
                snr_vs_torch_fp32_db=None if out is ref else snr_db(out, ref),
            ),
        )

    for name, build in configs():
        if args.only not in name or not dl.ok(30):
            continue
        state: dict[str, Any] = {}

        def torch_runs(
            name: str = name, build: Callable[[], nn.Module] = build, state: dict[str, Any] = state
        ) -> None:
            model = build()
            state["model"] = model
            sec, ref = timed(model, song, None, args.chunk)
            state["ref"] = ref
            row(name, "torch", "fp32", sec, ref, ref)
            if native_bf16:
                sec, out = timed(model, song, torch.bfloat16, args.chunk)
                row(name, "torch", "bf16 autocast", sec, out, ref)

        attempt(rep, f"{name} torch", torch_runs)
        if "ref" not in state:
            continue
        path = folder / f"{name.split()[0]}.onnx"

        def onnx_runs(name: str = name, path: Path = path, state: dict[str, Any] = state) -> None:
            t = time.perf_counter()
            export_onnx(state.pop("model"), path, source=name)  # the torch model is not needed after this
            rep.add(
                "export", dict(model=name, export_s=time.perf_counter() - t, mb=path.stat().st_size / 1e6)
            )
            sec, out = timed(OnnxModel(path), song, None, args.chunk)
            row(name, "onnxruntime", "fp32", sec, out, state["ref"])
            if vnni:
                q = quantize_int8(path, path.with_name(path.stem + ".int8.onnx"))
                sec, out = timed(OnnxModel(q), song, None, args.chunk)
                row(name, "onnxruntime", "int8 dynamic (MatMul)", sec, out, state["ref"])

        attempt(rep, f"{name} onnxruntime", onnx_runs)
    load_after = os.getloadavg()
    rep.extra["load_after"] = load_after
    before = rep.extra["load_before"]
    rep.notes.append(
        f"{args.seconds:g} s of audio in {args.chunk:g} s chunks, no overlap, batch 1, {args.threads} threads for "
        f"both engines; onnxruntime {onnxruntime.__version__}. Load average (1/5/15 min) before: "
        f"{before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, after: {load_after[0]:.1f}/{load_after[1]:.1f}/"
        f"{load_after[2]:.1f} on {os.cpu_count()} cores. SNR: the stems against torch fp32's."
    )
    if not native_bf16:
        rep.notes.append("No AMX / AVX512-BF16 on this CPU: torch bf16 autocast is skipped.")
    rep.table(
        "onnx",
        [
            "model",
            "engine",
            "precision",
            "threads",
            "audio_s",
            "seconds",
            "s_per_audio_s",
            "snr_vs_torch_fp32_db",
        ],
        "CPU inference: seconds of processing per second of audio",
    )
    rep.table(
        "export", ["model", "export_s", "mb"], "Export (bsmamba2.onnx.export_onnx, with its self-check)"
    )
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
