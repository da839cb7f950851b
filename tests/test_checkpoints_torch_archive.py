"""Reading torch.save archives without torch.load (bsmamba2.checkpoints.torch_archive): same tensors."""

from __future__ import annotations

import collections
import zipfile
from pathlib import Path

import torch

from bsmamba2.checkpoints.torch_archive import safe_torch_load


def test_safe_load_matches_torch_load(tmp_path: Path) -> None:
    base = torch.randn(4, 5)
    obj = {
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "bf16": torch.randn(7).bfloat16(),
        "uint16": torch.tensor([1, 2, 3]).to(torch.uint16),  # written with _rebuild_tensor_v3
        "slice": base[:, 1:3],  # non-contiguous view sharing a storage with "base"
        "base": base,
        "stride0": torch.full((1,), 2.0).expand(3, 3),
        "empty": torch.zeros(0, 3),
        "misc": [1, 2.5, "s", None, (1, 2), {3}, b"bytes", torch.float16, torch.Size([2, 3])],
        "dd": collections.defaultdict(list, a=[1]),
    }
    path = tmp_path / "mix.pt"
    torch.save(obj, path)
    got = safe_torch_load(path)
    want = torch.load(path, weights_only=False)  # our own file: safe to load the normal way
    for k in ("param", "bf16", "slice", "base", "stride0", "empty"):
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert torch.equal(got["uint16"].long(), want["uint16"].long()) and got["uint16"].dtype == torch.uint16
    assert got["misc"] == want["misc"] and got["dd"] == {"a": [1]}


def test_big_endian_archive(tmp_path: Path) -> None:
    """A checkpoint written on a big-endian machine (byteorder record "big") loads with the right values."""
    t = torch.randn(5, 3)
    little = tmp_path / "little.pt"
    torch.save({"w": t}, little)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = (
                    torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, 4).flip(1).numpy().tobytes()
                )
            dst.writestr(info.filename, data)
    assert torch.equal(safe_torch_load(big)["w"], t)
