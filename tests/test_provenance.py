"""Output records (``bsmamba2.provenance``): outputs are kept only when input, model and settings all match,
through the API (``Separator.separate_file``) and the CLI (``bsmamba2 separate``), which share the decision."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import cli, provenance
from bsmamba2.api import Separator
from bsmamba2.errors import UserError
from tests.conftest import ScaleModel

FAST = ["--segment", "0.25", "--no-overlap", "--bit-depth", "float"]


def _vocals(folder: Path) -> np.ndarray:
    return sf.read(str(folder / "vocals.wav"), dtype="float32")[0]


def test_api_writes_each_song_to_its_own_track_folder(tmp_path: Path, write_audio) -> None:
    """The README's loop over songs into one folder: every song gets its own stems (not the first's)."""
    sep = Separator(ScaleModel((0.5,)), segment=0.05)
    songs = [write_audio(f"in/{name}.wav", seconds=0.1, seed=i) for i, name in enumerate(("a", "b"))]
    for song in songs:
        paths = sep.separate_file(song, tmp_path / "out", bit_depth="float")
        assert paths["vocals"] == tmp_path / "out" / song.stem / "vocals.wav"
    for song in songs:
        x = sf.read(str(song), dtype="float32")[0]
        np.testing.assert_allclose(_vocals(tmp_path / "out" / song.stem), 0.5 * x, atol=1e-6)
    named = sep.separate_file(songs[0], tmp_path / "out", track="first", bit_depth="float")
    assert named["vocals"].parent == tmp_path / "out" / "first"


def test_api_redoes_outputs_when_input_model_or_settings_change(tmp_path: Path, write_audio) -> None:
    src = write_audio("song.wav", seconds=0.1)
    out = tmp_path / "out"
    half = Separator(ScaleModel((0.5,)), segment=0.05)
    vocals = half.separate_file(src, out, bit_depth="float")["vocals"]
    first = vocals.stat().st_mtime_ns
    assert half.plan_file(src, out, bit_depth="float").up_to_date  # same everything: kept
    assert half.separate_file(src, out, bit_depth="float")["vocals"].stat().st_mtime_ns == first

    quarter = Separator(ScaleModel((0.25,)), segment=0.05)  # another model
    plan = quarter.plan_file(src, out, bit_depth="float")
    assert set(plan.todo) == {"vocals", "instrumental"} and plan.reasons["vocals"] == "model changed"
    quarter.separate_file(src, out, bit_depth="float")
    x = sf.read(str(src), dtype="float32")[0]
    np.testing.assert_allclose(_vocals(out / "song"), 0.25 * x, atol=1e-6)

    assert quarter.plan_file(src, out, bit_depth="16").reasons["vocals"] == "settings changed"
    assert Separator(ScaleModel((0.25,)), segment=0.1).plan_file(src, out, bit_depth="float").todo

    y = 0.1 * x  # the input changes (new content, other mtime)
    sf.write(str(src), y, 44100, subtype="FLOAT")
    os.utime(src, ns=(first + 10**9, first + 10**9))
    assert quarter.plan_file(src, out, bit_depth="float").reasons["vocals"] == "input changed"
    quarter.separate_file(src, out, bit_depth="float")
    np.testing.assert_allclose(_vocals(out / "song"), 0.25 * y, atol=1e-6)


def test_outputs_without_a_record_are_redone(tmp_path: Path, write_audio) -> None:
    src = write_audio("song.wav", seconds=0.1)
    sep = Separator(ScaleModel((0.5,)), segment=0.05)
    paths = sep.separate_file(src, tmp_path, bit_depth="float")
    (tmp_path / "song" / provenance.SIDECAR).unlink()  # e.g. made by an older version
    plan = sep.plan_file(src, tmp_path, bit_depth="float")
    assert plan.todo == paths and plan.reasons["vocals"] == "no record of how it was made"


def test_the_sidecar_records_input_model_and_settings(tmp_path: Path, write_audio) -> None:
    src = write_audio("song.wav", seconds=0.1)
    sep = Separator(ScaleModel((0.5,)), segment=0.05)
    sep.separate_file(src, tmp_path, stems=["vocals"], bit_depth="float")
    data = json.loads((tmp_path / "song" / provenance.SIDECAR).read_text())
    (entry,) = data["outputs"].values()
    assert list(data["outputs"]) == ["vocals.wav"]
    assert entry["input"] == {"path": str(src.resolve()), "size": src.stat().st_size,
                              "mtime_ns": src.stat().st_mtime_ns}  # fmt: skip
    assert entry["model"] == sep.model_id != Separator(ScaleModel((0.4,))).model_id
    assert entry["settings"]["bit_depth"] == "float" and entry["settings"]["segment"] == 0.05
    sep.separate_file(src, tmp_path, stems=["instrumental"], bit_depth="float")  # entries accumulate
    data = json.loads((tmp_path / "song" / provenance.SIDECAR).read_text())
    assert sorted(data["outputs"]) == ["instrumental.wav", "vocals.wav"]


def test_an_output_path_that_is_a_folder_is_an_error(tmp_path: Path, write_audio, tiny_model_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    src = write_audio("song.wav", seconds=0.1)
    (tmp_path / "out" / "song" / "vocals.wav").mkdir(parents=True)
    with pytest.raises(UserError, match="is a folder"):
        Separator(ScaleModel((0.5,)), segment=0.05).separate_file(src, tmp_path / "out")
    argv = ["separate", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), *FAST]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err and "failed 1" in err and "Traceback" not in err


def _run(model: Path, src: Path, out: Path, *extra: str) -> int:
    return cli.main(["separate", str(src), "-o", str(out), "--model", str(model), *FAST, *extra])


def test_cli_skips_only_when_input_model_and_settings_match(
    tiny_model_path: Path, tmp_path: Path, write_audio, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    src = write_audio("song.wav", seconds=0.2)
    out = tmp_path / "out"
    assert _run(tiny_model_path, src, out) == 0
    assert _run(tiny_model_path, src, out) == 0
    assert "skipped 1" in capsys.readouterr().err

    other = tmp_path / "copy.safetensors"  # a different model (other weights) under the same settings
    from bsmamba2.checkpoints import load_model, save_model

    model = load_model(tiny_model_path)
    for p in model.parameters():
        p.data.mul_(0.5)
    save_model(model, other)
    before = _vocals(out / "song")
    with caplog.at_level("INFO"):
        assert _run(other, src, out) == 0
    assert "separated 1, skipped 0" in capsys.readouterr().err
    assert "model changed" in caplog.text
    assert not np.array_equal(before, _vocals(out / "song"))

    caplog.clear()
    with caplog.at_level("INFO"):
        assert _run(other, src, out, "--segment", "0.5") == 0
    assert "settings changed" in caplog.text and "separated 1" in capsys.readouterr().err

    sf.write(str(src), np.zeros((100, 2), np.float32), 44100, subtype="FLOAT")  # a new song, same name
    assert _run(other, src, out, "--segment", "0.5") == 0
    assert "separated 1" in capsys.readouterr().err and _vocals(out / "song").shape == (100, 2)


def test_module_digest_hashes_every_tensor_as_recorded_sidecars_did(tiny_model_path: Path) -> None:
    """The digest is the config then, per state-dict entry, its name, dtype, shape and bytes in C order (the
    byte stream of the records already written, now fetched in one copy): it follows any weight change."""
    import copy
    import hashlib

    import torch

    from bsmamba2.checkpoints import load_model

    model = load_model(tiny_model_path)
    h = hashlib.sha256(model.cfg.to_json().encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    assert provenance.module_digest(model) == f"sha256:{h.hexdigest()}"
    other = copy.deepcopy(model)
    assert provenance.module_digest(other) == provenance.module_digest(model)
    with torch.no_grad():
        other.mask_estimators[0].to_freqs[-1][0][2].bias[-1] += 1e-3
    assert provenance.module_digest(other) != provenance.module_digest(model)
