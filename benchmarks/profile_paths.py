"""Where the time goes, for the speed issues (12, 15): torch.profiler tables of one path at a time.

    python benchmarks/profile_paths.py cpu --model bundled --dtype bf16 --threads 2 --seconds 4
    python benchmarks/profile_paths.py stream --threads 2 --pushes 300          # 10 ms blocks, causal model
    python benchmarks/profile_paths.py gpu --seconds 240                        # one song through Separator

``cpu``: the offline forward of a model (bundled or paper config) on a stereo noise clip, batch 1.
``stream``: ``CausalStream.push`` of 441-sample (10 ms) blocks after a warm-up.
``gpu``: ``Separator.separate`` of one song on CUDA at the CLI's defaults, first call and second call timed,
then the second call profiled with CUDA activity.

Prints the operator table (self time, top ``--rows``) and writes it to ``--out`` (default $OUT or ./bench_out)
as ``profile_<mode>.txt``. A profile is for finding costs; the timed tables come from the bench_* scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 44100


def cpu_model(name: str) -> torch.nn.Module:
    from bsmamba2.checkpoints import load_model
    from bsmamba2.config import ModelConfig
    from bsmamba2.model import build_model

    if name == "paper":
        torch.manual_seed(0)
        return build_model(ModelConfig.paper()).eval()
    path = ROOT / "bsmamba2" / "assets" / ("default.safetensors" if name == "bundled" else name)
    return load_model(path, device="cpu").eval()


def run_cpu(args: argparse.Namespace) -> str:
    model = cpu_model(args.model)
    wave = 0.1 * torch.randn(1, 2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    bf16 = args.dtype == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(wave[..., : SR // 2])
        t = time.perf_counter()
        model(wave)
        plain = time.perf_counter() - t
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(wave)
    head = (
        f"cpu {args.model} {args.dtype} threads={torch.get_num_threads()}: {plain / args.seconds:.3f} s per s"
    )
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)


def run_stream(args: argparse.Namespace) -> str:
    from bsmamba2.checkpoints import load_model
    from bsmamba2.streaming import CausalStream

    model = load_model(ROOT / "bsmamba2" / "assets" / "causal.safetensors", device="cpu")
    stream = CausalStream(model)
    noise = 0.1 * torch.randn(2, 441 * (args.pushes + 200), generator=torch.Generator().manual_seed(1))
    blocks = noise.split(441, dim=1)
    with torch.inference_mode():
        for b in blocks[:200]:
            stream.push(b)
        t = time.perf_counter()
        for b in blocks[200:]:
            stream.push(b)
        per = (time.perf_counter() - t) / args.pushes
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in blocks[200 : 200 + min(100, args.pushes)]:
                stream.push(b)
    head = (
        f"stream 10 ms threads={torch.get_num_threads()}: {1000 * per:.2f} ms per push, RTF {per / 0.01:.3f}"
    )
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)


def run_gpu(args: argparse.Namespace) -> str:
    from bsmamba2.api import Separator

    t0 = time.perf_counter()
    sep = Separator.from_pretrained(None, device="cuda", batch_size=args.batch)
    torch.cuda.synchronize()
    load = time.perf_counter() - t0
    wave = 0.1 * torch.randn(2, int(args.seconds * SR), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(2):
        t = time.perf_counter()
        sep.separate(wave, SR)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sep.separate(wave, SR)
        torch.cuda.synchronize()
    head = (
        f"gpu one {args.seconds:g} s song, batch {args.batch}: load {load:.2f} s, first call {times[0]:.2f} s, "
        f"second {times[1]:.2f} s"
    )
    avg = prof.key_averages()
    return "\n".join(
        [head, avg.table(sort_by="self_cuda_time_total", row_limit=args.rows),
         avg.table(sort_by="self_cpu_time_total", row_limit=args.rows)]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("mode", choices=["cpu", "stream", "gpu"])
    ap.add_argument("--model", default="bundled", help="cpu: bundled, paper, or a file under bsmamba2/assets")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--pushes", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = {"cpu": run_cpu, "stream": run_stream, "gpu": run_gpu}[args.mode](args)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = (
        f"{args.mode}_{args.model}_{args.dtype}_t{args.threads}"
        if args.mode == "cpu"
        else f"{args.mode}_t{args.threads}"
    )
    (args.out / f"profile_{tag}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
