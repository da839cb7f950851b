"""``bsmamba2 evaluate`` end to end: a model (through ``Separator``) and the baselines on a tiny corpus, and
its argument errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from faults import enospc, one_line_error

from bsmamba2 import audio, cli
from bsmamba2.api import Separator
from bsmamba2.evaluate import metrics, runner

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


# ---- bad references, and what the tables count -----------------------------------------------------------


def _corpus_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _md_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """{(segment, stem): [uSDR mean, cSDR median, uSDR median, cSDR mean, tracks]} of summary.md's first table
    (the stems; the region and leakage tables follow it)."""
    rows = {}
    table = md.split("| segment | stem |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[1] not in ("stem", "---"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _as_md(x: object) -> str:
    """How summary.json's value must read in summary.md."""
    if x is None:
        return "–"
    if isinstance(x, str):
        return x  # "inf" / "-inf"
    return f"{x:.2f}"


def test_nan_reference_is_a_named_error_and_not_counted(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _corpus_copy(tiny_corpus, tmp_path / "data")
    vocals = data / "test" / "B" / "vocals.wav"
    x, sr = audio.read(vocals)
    x[0, 1000] = np.nan
    sf.write(str(vocals), x.T, sr, subtype="FLOAT")
    out = tmp_path / "eval"
    argv = ["evaluate", "--baseline", "mixture", "--data", str(data), "--out", str(out)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "vocals.wav" in err and "NaN" in err and "B" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == ["B"] and "vocals.wav" in summary["errors"]["B"]
    assert summary["runs"][0]["stems"]["vocals"]["tracks"] == 1  # only A was averaged
    md = (out / "summary.md").read_text()
    assert "1 track scored" in md and "1 failed" in md
    assert all(cells[-1] == "1" for cells in _md_rows(md).values())


@pytest.mark.parametrize("baseline", ["mixture", "oracle-irm"])
def test_summary_json_and_markdown_agree(tiny_corpus: Path, tmp_path: Path, baseline: str) -> None:
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--baseline", baseline, "--data", str(tiny_corpus), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = _md_rows((out / "summary.md").read_text())
    assert rows
    for run in summary["runs"]:
        for stem, a in run["stems"].items():
            keys = ("usdr_mean", "csdr_median", "usdr_median", "csdr_mean")
            n, nc = a["tracks"], a["csdr_tracks"]
            counted = str(n) if n == nc else f"{n} (cSDR {nc})"
            assert rows[("–", stem)] == [*map(_as_md, (a[k] for k in keys)), counted], stem


def test_unwritable_out_folder_is_one_line_before_any_work(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the output folder should be")
    argv = ["evaluate", "--baseline", "mixture", "--data", str(tiny_corpus), "--out", str(blocker / "eval")]
    assert cli.main(argv) == 1
    assert "file.txt" in one_line_error(capsys.readouterr().err, "evaluate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_full_disk_while_writing_results(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bsmamba2.evaluate import report

    def full(path: Path, data: object) -> None:
        raise enospc(path)

    monkeypatch.setattr(report, "write_json", full)
    monkeypatch.setattr(runner, "write_json", full)
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--baseline", "mixture", "--data", str(tiny_corpus), "--out", str(out)]) == 1
    assert "No space left on device" in one_line_error(capsys.readouterr().err, "evaluate")


def test_vocal_leakage_in_json_and_markdown(tiny_corpus: Path, tmp_path: Path) -> None:
    # the tiny corpus plus an instrumental song: A's accompaniment, vocals exactly zero, meta.json without phrases
    data = _corpus_copy(tiny_corpus, tmp_path / "data")
    song = data / "test" / "C"
    shutil.copytree(data / "test" / "A", song)
    vocals, _ = audio.read(song / "vocals.wav")
    mix, _ = audio.read(song / "mixture.wav")
    sf.write(str(song / "vocals.wav"), np.zeros_like(vocals).T, SR, subtype="FLOAT")
    sf.write(str(song / "mixture.wav"), (mix - vocals).T, SR, subtype="FLOAT")
    (song / "meta.json").write_text(json.dumps({"sample_rate": SR, "phrases": []}))
    for baseline, expected in (("mixture", 0.0), ("oracle-irm", None)):
        out = tmp_path / baseline
        assert cli.main(["evaluate", "--baseline", baseline, "--data", str(data), "--out", str(out)]) == 0
        tracks = {t: json.loads((out / "baseline" / "tracks" / f"{t}.json").read_text()) for t in "ABC"}
        leaks = {t: r["vocal_leakage"] for t, r in tracks.items()}
        assert [leaks[t]["silence_from"] for t in "ABC"] == ["meta.json", "below -60 dBFS", "meta.json"]
        assert leaks["A"]["silent_seconds"] == pytest.approx(2.5 - 1.3)  # outside A's one phrase
        assert leaks["C"]["instrumental"] and leaks["C"]["silent_seconds"] == 2.5
        # B's pauses (0.1, 0.2 and 0.05 s) are shorter than the threshold detector's 0.2 s runs: no data
        assert leaks["B"]["silent_seconds"] == 0 and leaks["B"]["leakage_db"] is None
        assert [tracks[t]["regions_from"] for t in "ABC"] == [
            "meta.json",
            "energy detector",
            "energy detector",
        ]
        run = json.loads((out / "summary.json").read_text())["runs"][0]["vocal_leakage"]
        assert (run["silent"]["tracks"], run["silent"]["tracks_without"]) == (2, 1)
        assert run["instrumental"]["tracks"] == 1
        md = (out / "summary.md").read_text()
        assert "| – | 2 with silence (1 without) |" in md and "| – | 1 instrumental |" in md
        if expected is not None:  # the mixture as the estimate: exactly as loud as the mixture
            assert all(leaks[t]["leakage_db"] == pytest.approx(expected, abs=1e-6) for t in "AC")
            assert run["silent"]["windows_above_share"] == 1.0
        else:  # ideal masks of a silent reference are zero: the floor
            assert leaks["C"]["leakage_db"] == -120.0 and run["instrumental"]["windows_above"] == 0


def test_summary_names_the_vocal_bank_of_v2_songs(tiny_corpus: Path, tmp_path: Path) -> None:
    """Tracks whose meta.json names a vocal bank (corpus v2) put it in summary.json and the table's title; other
    data leaves both alone."""
    plain = tmp_path / "plain"
    assert (
        cli.main(["evaluate", "--baseline", "mixture", "--data", str(tiny_corpus), "--out", str(plain), "-q"])
        == 0
    )
    assert "vocal_banks" not in json.loads((plain / "summary.json").read_text())
    assert "vocal bank" not in (plain / "summary.md").read_text()
    root = _corpus_copy(tiny_corpus, tmp_path / "v2")
    meta_path = root / "test" / "A" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "vocal_bank": "0123456789abcdef"}))
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--baseline", "mixture", "--data", str(root), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "summary.json").read_text())["vocal_banks"] == ["0123456789abcdef"]
    assert (out / "summary.md").read_text().splitlines()[0].endswith("; vocal bank 0123456789abcdef)")
