"""``bsmamba2 stream IN [-o OUT_DIR]``: separate a stream block by block, as a live front end would.

IN is a sound file, or ``-`` for raw interleaved PCM on stdin (``--rate``, ``--channels``, ``--pcm f32|s16``,
little-endian). The input is pushed in ``--io-block`` pieces (10 ms by default) through a
``StreamingSeparator``: a causal model streams frame by frame; any other model runs in block mode
(``--block`` seconds + ``--lookahead``). Every output block is appended to OUT_DIR/<stem>.<format> as it
comes; the files are written under hidden temp names beside their targets and renamed into place when the
stream ends (an error or Ctrl-C leaves no partial file; existing outputs are replaced). By default the
latency's leading silence is dropped so the stems line up with the input (``--keep-delay`` keeps the stream
exactly as produced). At the end it prints the real-time factor (processing time ÷ audio time) and the
latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bsmamba2 import audio
from bsmamba2.api import DEFAULT_MODEL
from bsmamba2.audio import DEFAULT_MP3_BITRATE
from bsmamba2.audio.formats import BIT_DEPTHS, FORMATS, check_format
from bsmamba2.device import BACKEND_HELP, BACKENDS, PRECISIONS, describe, resolve_device, resolve_precision
from bsmamba2.errors import UserError
from bsmamba2.streaming.separator import DEFAULT_CAUSAL_MODEL, StreamingSeparator

# sample type, full scale
PCM: dict[str, tuple[np.dtype[Any], float]] = {
    "f32": (np.dtype("<f4"), 1.0),
    "s16": (np.dtype("<i2"), 32768.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="a sound file, or - for raw PCM on stdin")
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("streamed"), help="output folder (default streamed/)"
    )
    parser.add_argument(
        "-m", "--model", default=None,
        help="model file (default: the bundled causal model if this build has one, else the bundled model in block mode)",
    )  # fmt: skip
    parser.add_argument("--rate", type=int, default=None, help="stdin: sample rate in Hz (required for -)")
    parser.add_argument("--channels", type=int, default=2, choices=(1, 2), help="stdin: channels (default 2)")
    parser.add_argument("--pcm", default="f32", choices=tuple(PCM), help="stdin: sample type (default f32)")
    parser.add_argument("--io-block", type=float, default=10.0, help="input block in ms (default 10)")
    parser.add_argument(
        "--block",
        type=float,
        default=None,
        help="block mode (models that are not causal): block length, s (default 1)",
    )
    parser.add_argument(
        "--lookahead", type=float, default=0.25, help="block mode: lookahead, s (default 0.25)"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default cpu)")
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="autocast precision (default fp32)"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads (default: torch's); small blocks often run best on 1, above all on a busy machine",
    )  # fmt: skip
    parser.add_argument("--format", default="wav", choices=FORMATS, help="output format (default wav)")
    parser.add_argument(
        "--bit-depth", default=None, choices=BIT_DEPTHS, help="wav/flac output samples (default float)"
    )
    parser.add_argument(
        "--bitrate", type=int, default=None, metavar="KBPS",
        help=f"mp3 constant bitrate in kbps (default {DEFAULT_MP3_BITRATE})",
    )  # fmt: skip
    parser.add_argument("--keep-delay", action="store_true", help="write the latency's leading silence too")


def file_blocks(path: str, block_ms: float) -> tuple[int, int, Iterator[np.ndarray]]:
    """(rate, channels, (C, ≤ block_ms) float32 blocks) of a sound file, read a second at a time."""
    head = audio.info(path)
    block = max(1, round(block_ms * head.sample_rate / 1000))

    def blocks() -> Iterator[np.ndarray]:
        for piece in audio.read_blocks(path, head.frames, head.sample_rate):
            for i in range(0, piece.shape[-1], block):
                yield piece[:, i : i + block]

    return head.sample_rate, head.channels, blocks()


def stdin_blocks(channels: int, pcm: str, block: int) -> Iterator[np.ndarray]:
    """(C, ≤ block) float32 blocks of raw interleaved PCM from stdin, until end of input."""
    dtype, scale = PCM[pcm]
    frame_bytes = channels * dtype.itemsize
    rest = b""
    while True:
        data = sys.stdin.buffer.read(block * frame_bytes - len(rest))
        if not data:
            break
        data, whole = rest + data, (len(rest) + len(data)) // frame_bytes * frame_bytes
        data, rest = data[:whole], data[whole:]
        if data:
            x = np.frombuffer(data, dtype).reshape(-1, channels).T.astype(np.float32)
            yield x / np.float32(scale) if scale != 1.0 else x
    if rest:
        print(f"bsmamba2 stream: ignored {len(rest)} trailing bytes (not a whole frame)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.bit_depth is None:
        args.bit_depth = "float"  # a stream's samples as the model gives them (mp3 ignores it)
    elif args.format == "mp3":
        raise UserError(
            f"--bit-depth is for wav and flac; mp3 takes --bitrate KBPS (default {DEFAULT_MP3_BITRATE})"
        )
    check_format(args.format, args.bit_depth, args.bitrate)
    if args.io_block <= 0:
        raise UserError(f"--io-block must be positive (ms), got {args.io_block}")
    if args.input == "-":
        if args.rate is None or args.rate <= 0:
            raise UserError("reading PCM from stdin needs --rate (Hz)")
        rate, channels = args.rate, args.channels
        blocks = stdin_blocks(channels, args.pcm, max(1, round(args.io_block * rate / 1000)))
    else:
        rate, channels, blocks = file_blocks(args.input, args.io_block)
        if channels > 2:
            raise UserError(f"{args.input}: has {channels} channels; streams are mono or stereo")
    sep = _separator(args, rate, channels)
    skip = 0 if args.keep_delay else round(sep.latency * rate / sep.model_rate)
    writers: dict[str, audio.AtomicWriter] = {}
    busy, seconds = 0.0, 0.0
    try:
        for n in sep.stems:  # inside the try: a writer that cannot start removes the ones before it
            writers[n] = audio.AtomicWriter(
                args.out / f"{n}.{args.format}", rate, channels, args.bit_depth, args.bitrate
            )
        for x in blocks:
            seconds += x.shape[-1] / rate
            t0 = time.perf_counter()
            out = sep.push(x)
            busy += time.perf_counter() - t0
            skip = _write(writers, out, skip)
        t0 = time.perf_counter()
        out = sep.flush()
        busy += time.perf_counter() - t0
        _write(writers, out, skip)
        paths = [w.commit() for w in writers.values()]
    except BaseException:
        for w in writers.values():
            w.abort()  # a writer already committed keeps its file: only a failed rename gets here after it
        raise
    rtf = busy / seconds if seconds else float("nan")
    print(
        f"streamed {seconds:.2f} s in {busy:.2f} s of processing: real-time factor {rtf:.3f}; "
        f"latency {sep.latency} samples = {sep.latency_ms:.1f} ms at {sep.model_rate} Hz"
        + ("" if rate == sep.model_rate else " (plus the resamplers' delay)")
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _separator(args: argparse.Namespace, rate: int, channels: int) -> StreamingSeparator:
    from bsmamba2.checkpoints import load_model  # the model stack only once the arguments are good

    path = (
        Path(args.model)
        if args.model
        else (DEFAULT_CAUSAL_MODEL if DEFAULT_CAUSAL_MODEL.exists() else DEFAULT_MODEL)
    )
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    dtype = resolve_precision(dev, args.precision)
    model = load_model(path, device=dev, backend=args.backend)
    block = None if model.cfg.causal else (1.0 if args.block is None else args.block)
    if model.cfg.causal and args.block is not None:
        raise UserError(f"{path.name} is causal: it streams frame by frame (drop --block)")
    mode = (
        "causal stream"
        if block is None
        else f"block mode, {block:g} s blocks + {args.lookahead:g} s lookahead"
    )
    print(f"model {path.name} on {describe(dev, dtype)}: {mode}", file=sys.stderr)
    return StreamingSeparator(
        model, sample_rate=rate, channels=channels, dtype=dtype, block=block, lookahead=args.lookahead
    )


def _write(writers: dict[str, audio.AtomicWriter], out: dict[str, Tensor], skip: int) -> int:
    """Append each stem's new samples, dropping the first ``skip`` of the stream; returns what is left to skip."""
    n = next(iter(out.values())).shape[-1]
    drop = min(skip, n)
    for name, w in writers.items():
        if n > drop:
            w.write(out[name][:, drop:].numpy())
    return skip - drop
