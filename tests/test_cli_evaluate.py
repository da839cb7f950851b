"""``bsmamba2 evaluate`` end to end: a model (through ``Separator``) and the baselines on a tiny corpus, and
its argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bsmamba2 import audio, cli
from bsmamba2.api import Separator
from bsmamba2.evaluate import metrics

SR = 44100


def test_evaluate_cli_end_to_end(tiny_model_path: Path, tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_model_path), "--data", str(tiny_corpus), "--out", str(out)]
    assert cli.main([*args, "--segment", "0.5", "1", "--save-estimates"]) == 0
    printed = capsys.readouterr().out
    assert (
        "uSDR (mean)" in printed and "| 0.5 s | vocals |" in printed and "| 1 s | instrumental |" in printed
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [r["segment"] for r in summary["runs"]] == [0.5, 1.0]
    track = json.loads((out / "segment_0.5s" / "tracks" / "A.json").read_text())
    assert track["regions_from"] == "meta.json" and len(track["vocal_regions"]) == 1
    assert len(track["stems"]["vocals"]["csdr_frames"]) == 2  # 2.5 s -> two full 1 s frames
    b = json.loads((out / "segment_1s" / "tracks" / "B.json").read_text())
    assert b["regions_from"] == "energy detector"
    assert (out / "segment_1s" / "estimates" / "B" / "vocals.wav").exists()
    assert (out / "summary.md").read_text().startswith("## tiny")


def test_evaluate_baselines(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    from bsmamba2.data import musdb

    out = tmp_path / "floor"
    assert cli.main(["evaluate", "--baseline", "mixture", "--data", str(tiny_corpus), "--out", str(out)]) == 0
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    mixes = [musdb.load_track(t, ["vocals"]) for t in musdb.find_tracks(tiny_corpus, "test", ["vocals"])]
    expected = np.mean([metrics.usdr(refs["vocals"], mix) for mix, refs in mixes])
    assert run["stems"]["vocals"]["usdr_mean"] == pytest.approx(expected, abs=1e-6)
    out2 = tmp_path / "ceiling"
    assert (
        cli.main(["evaluate", "--baseline", "oracle-irm", "--data", str(tiny_corpus), "--out", str(out2)])
        == 0
    )
    ceiling = json.loads((out2 / "summary.json").read_text())["runs"][0]["stems"]["vocals"]["usdr_mean"]
    assert ceiling > expected + 5


def test_evaluate_errors(tmp_path: Path, tiny_model_path: Path, capsys) -> None:
    assert cli.main(["evaluate", "--model", str(tiny_model_path), "--data", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert cli.main(["evaluate", "--data", str(tmp_path)]) == 2  # needs --model or --baseline


def test_evaluate_goes_through_separator(
    tiny_model_path: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, float]] = []
    real = Separator.separate

    def spy(self: Separator, waveform, sample_rate: int, **kw):  # type: ignore[no-untyped-def]
        calls.append((sample_rate, self.segment))
        return real(self, waveform, sample_rate, **kw)

    monkeypatch.setattr(Separator, "separate", spy)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_model_path), "--data", str(tiny_corpus), "--out", str(out)]
    args += ["--device", "cpu", "--precision", "fp32", "--segment", "0.5", "2", "--save-estimates"]
    assert cli.main(args) == 0
    assert sorted(calls) == sorted([(SR, 0.5), (SR, 2.0)] * 2)  # 2 tracks x 2 chunk lengths
    # the saved estimates are Separator's output (the paper's non-overlapping chunks), residual included
    monkeypatch.setattr(Separator, "separate", real)
    sep = Separator.from_pretrained(tiny_model_path, device="cpu", precision="fp32", segment=2.0, overlap=0.0)
    mix, _ = audio.read(tiny_corpus / "test" / "A" / "mixture.wav")
    ref = sep.separate(mix, SR)
    for stem in ("vocals", "instrumental"):
        saved, _ = audio.read(out / "segment_2s" / "estimates" / "A" / f"{stem}.wav")
        np.testing.assert_array_equal(saved, ref[stem].numpy())


def test_quiet_evaluate_prints_the_table_only(
    tiny_model_path: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", str(tiny_model_path), "--data", str(tiny_corpus), "--segment", "1"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr()
    assert "track" in loud.err and "chunk" in loud.err and "results in" in loud.err  # the bars, the folder
    assert cli.main(["-q", *args, "--out", str(tmp_path / "b")]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == loud.out.replace(str(tmp_path / "a"), str(tmp_path / "b"))
