"""The restricted unpickler (bsmamba2.checkpoints.unpickler, inert): no pickled code ever runs, unknown
objects come back as inert data."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from official_samples import (
    HPARAMS,
    SMALL,
    assert_landed,
    converted,
    lightning_ckpt,
    random_state,
    spec_shapes,
    write_small_official,
)

from bsmamba2.checkpoints import unpickler
from bsmamba2.checkpoints.inert import Inert, to_plain
from bsmamba2.checkpoints.lazy_tensor import LazyTensor
from bsmamba2.checkpoints.torch_archive import open_torch_archive, safe_torch_load
from bsmamba2.errors import CheckpointError


def test_hyper_parameters_become_plain_data(tmp_path: Path) -> None:
    path, _, _ = write_small_official(tmp_path)
    with open_torch_archive(path) as archive:
        ckpt = archive.load()
    assert isinstance(ckpt["hyper_parameters"], Inert)
    assert type(ckpt["hyper_parameters"]).qualname() == "omegaconf.dictconfig.DictConfig"
    assert to_plain(ckpt["hyper_parameters"]) == HPARAMS
    assert isinstance(ckpt["state_dict"]["model.final_norm.gamma"], LazyTensor)


class ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class SystemPayload(ExecPayload):
    def __reduce__(self) -> Any:
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload(ExecPayload):
    def __reduce__(self) -> Any:
        return (builtins.open, (str(self.marker), "w"))


class TensorSubclassPayload(ExecPayload):
    """Hides the call inside torch's tensor-subclass rebuild record."""

    def __reduce__(self) -> Any:
        return (
            torch._tensor._rebuild_from_type_v2,
            (builtins.exec, torch.Tensor, (f"open({str(self.marker)!r}, 'w')",), {}),
        )


PAYLOADS = [ExecPayload, SystemPayload, OpenPayload, TensorSubclassPayload]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_malicious_hyper_parameters_do_not_run(tmp_path: Path, payload: type[ExecPayload]) -> None:
    marker = tmp_path / "pwned"
    with contextlib.suppress(Exception):  # the payload is live under plain pickle (it may fail after running)
        pickle.loads(pickle.dumps(payload(marker), protocol=2))
    assert marker.exists()
    marker.unlink()

    raw = random_state(spec_shapes(**SMALL), seed=6)
    path = tmp_path / "evil.ckpt"
    torch.save(lightning_ckpt(raw, None, {"cfg": payload(marker)}), path)
    cfg, state = converted(path)
    assert not marker.exists()
    assert_landed(state, raw)
    assert isinstance(safe_torch_load(path)["hyper_parameters"]["cfg"], Inert)
    assert not marker.exists()


def test_malicious_tensor_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw: dict[str, Any] = dict(random_state(spec_shapes(**SMALL), seed=7))
    raw["final_norm.gamma"] = SystemPayload(marker)
    path = tmp_path / "evil.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="not tensors .*final_norm.gamma"):
        converted(path)
    assert not marker.exists()


def test_build_opcode_cannot_tamper_with_shared_functions() -> None:
    """GLOBAL torch._utils._rebuild_tensor_v2, then BUILD (None, {"__defaults__": (7,)}): setattr on what
    find_class handed out must not reach the module-level function used by every later load."""
    before = unpickler._rebuild_tensor_v2.__defaults__
    name = b"__defaults__"
    data = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"  # PROTO 2, GLOBAL
        + b"N}X"
        + len(name).to_bytes(4, "little")
        + name
        + b"(K\x07ts\x86b."  # TUPLE2 (None, {name: (7,)}), BUILD
    )
    try:
        with contextlib.suppress(pickle.UnpicklingError, TypeError):  # refusing the BUILD is fine too
            unpickler.RestrictedUnpickler(io.BytesIO(data), lambda *a: None).load()
        assert unpickler._rebuild_tensor_v2.__defaults__ == before
    finally:
        unpickler._rebuild_tensor_v2.__defaults__ = before
