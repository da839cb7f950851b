"""Tiny stand-ins for the samples engine's sources, written by the tests: a SoundFont with one looped sine
on every General MIDI program, a Hydrogen drum kit of synthetic hits, and a vocal bank of two sessions."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

SF_RATE = 22050
LOOP = 2205  # 44 cycles of a 440 Hz sine at 22.05 kHz: an exact loop, original pitch A4 (MIDI 69)


def _chunk(tag: bytes, data: bytes) -> bytes:
    pad = b"\0" if len(data) % 2 else b""
    return tag + struct.pack("<I", len(data)) + data + pad


def _list(tag: bytes, chunks: list[bytes]) -> bytes:
    return _chunk(b"LIST", tag + b"".join(chunks))


def _name(s: str) -> bytes:
    return s.encode()[:19].ljust(20, b"\0")


def write_soundfont(path: Path, programs: range = range(128)) -> Path:
    """An sf2 whose presets (bank 0, ``programs``) all play one instrument: a looped 440 Hz sine."""
    t = np.arange(LOOP * 4)
    wave = (0.5 * np.sin(2 * np.pi * 440 * t / SF_RATE) * 32767).astype("<i2")
    smpl = wave.tobytes() + b"\0" * 92  # 46 zero samples after each sample, as the format asks
    info = _list(b"INFO", [_chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", b"EMU8000\0"),
                           _chunk(b"INAM", b"tiny sine\0")])  # fmt: skip
    sdta = _list(b"sdta", [_chunk(b"smpl", smpl)])
    phdr = b"".join(
        struct.pack("<20sHHHIII", _name(f"p{p}"), p, 0, i, 0, 0, 0) for i, p in enumerate(programs)
    )
    phdr += struct.pack("<20sHHHIII", _name("EOP"), 0, 0, len(programs), 0, 0, 0)
    pbag = b"".join(struct.pack("<HH", i, 0) for i in range(len(programs) + 1))
    pgen = struct.pack("<HH", 41, 0) * len(programs) + struct.pack("<HH", 0, 0)  # 41: instrument 0
    inst = struct.pack("<20sH", _name("sine"), 0) + struct.pack("<20sH", _name("EOI"), 1)
    ibag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 2, 0)
    igen = struct.pack("<HH", 54, 1) + struct.pack("<HH", 53, 0) + struct.pack("<HH", 0, 0)  # loop, sample 0
    mod = b"\0" * 10
    n = len(wave)
    shdr = struct.pack("<20sIIIIIBbHH", _name("sine"), 0, n, LOOP, 3 * LOOP, SF_RATE, 69, 0, 0, 1)
    shdr += struct.pack("<20sIIIIIBbHH", _name("EOS"), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    pdta = _list(b"pdta", [_chunk(b"phdr", phdr), _chunk(b"pbag", pbag), _chunk(b"pmod", mod), _chunk(b"pgen", pgen),
                           _chunk(b"inst", inst), _chunk(b"ibag", ibag), _chunk(b"imod", mod), _chunk(b"igen", igen),
                           _chunk(b"shdr", shdr)])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_chunk(b"RIFF", b"sfbk" + info + sdta + pdta))
    return path


def _hit(sr: int, f: float, decay: float, noise: float, seed: int) -> np.ndarray:
    t = np.arange(int(0.3 * sr)) / sr
    rng = np.random.default_rng(seed)
    x = (np.sin(2 * np.pi * f * t) * (1 - noise) + noise * rng.standard_normal(len(t))) * np.exp(-t / decay)
    return (0.8 * x).astype(np.float32)


def write_drumkit(folder: Path, sr: int = 44100) -> Path:
    """A Hydrogen-style kit: Kick (2 velocity layers), Snare, Closed HH, Open HH as WAV files."""
    folder.mkdir(parents=True, exist_ok=True)
    sounds = {"kick_soft.wav": (60, 0.08, 0.05), "kick_hard.wav": (55, 0.12, 0.1), "snare.wav": (200, 0.06, 0.7),
              "hat.wav": (8000, 0.02, 0.95), "open.wav": (7000, 0.2, 0.95)}  # fmt: skip
    for i, (name, (f, d, z)) in enumerate(sounds.items()):
        sf.write(folder / name, _hit(sr, f, d, z, i), sr)
    inst = [("Kick", [("kick_soft.wav", 0.0, 0.5), ("kick_hard.wav", 0.5, 1.0)]), ("Snare", [("snare.wav", 0.0, 1.0)]),
            ("Closed HH", [("hat.wav", 0.0, 1.0)]), ("Open HH", [("open.wav", 0.0, 1.0)])]  # fmt: skip
    body = "".join(
        f"<instrument><id>{k}</id><name>{name}</name><volume>1</volume>"
        + "".join(f"<layer><filename>{fn}</filename><min>{lo}</min><max>{hi}</max><gain>1</gain></layer>" for fn, lo, hi in layers)
        + "</instrument>"
        for k, (name, layers) in enumerate(inst)
    )  # fmt: skip
    xml = ('<?xml version="1.0" encoding="UTF-8"?><drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">'
           f"<name>Tiny Kit</name><instrumentList>{body}</instrumentList></drumkit_info>")  # fmt: skip
    (folder / "drumkit.xml").write_text(xml)
    return folder


def _sung(notes: list[tuple[float, float, float]], dur: float, sr: int) -> np.ndarray:
    """A buzzy tone following ``notes`` (a stand-in for a sung line)."""
    y = np.zeros(int(dur * sr), np.float32)
    for t, d, m in notes:
        a, b = int(t * sr), min(len(y), int((t + d) * sr))
        tt = np.arange(b - a) / sr
        f = 440 * 2 ** ((m - 69) / 12)
        env = np.minimum(1, tt / 0.02) * np.minimum(1, (d - tt) / 0.03)
        y[a:b] += (
            0.2 * env * np.sign(np.sin(2 * np.pi * f * tt)) * 0.5 + 0.1 * np.sin(2 * np.pi * f * tt)
        ).astype(np.float32)
    return y


def write_bank(folder: Path, sr: int = 24000) -> Path:
    """Two sessions: lines of 1.2 / 2.0 / 3.1 s (one with a harmony), breaths and backing vowels."""
    items = []
    sessions = [{"id": "a", "key": 0, "mode": "major", "tempo": 120.0, "voice": "test", "lang": "en"},
                {"id": "b", "key": 9, "mode": "minor", "tempo": 96.0, "voice": "test2", "lang": "ja"}]  # fmt: skip
    for s in sessions:
        beat = 60 / s["tempo"]
        base = 60 + s["key"] % 12
        for j, n in enumerate((2, 4, 6)):
            notes = [(0.1 + k * beat, beat * 0.95, float(base + 2 * (k % 3))) for k in range(n)]
            dur = notes[-1][0] + notes[-1][1] + 0.1
            fid = f"{s['id']}-l{j}"
            items.append({"id": fid, "session": s["id"], "kind": "lead", "file": f"{s['id']}/{fid}.ogg", "dur": dur,
                          "notes": [list(x) for x in notes]})  # fmt: skip
            if j == 1:
                hn = [(a, b, m + 4) for a, b, m in notes]
                items.append({"id": fid + "h", "session": s["id"], "kind": "harmony", "of": fid, "dur": dur,
                              "file": f"{s['id']}/{fid}h.ogg", "notes": [list(x) for x in hn]})  # fmt: skip
        items.append(
            {
                "id": f"{s['id']}-b0",
                "session": s["id"],
                "kind": "breath",
                "file": f"{s['id']}/{s['id']}-b0.ogg",
                "dur": 0.3,
            }
        )
        for m in (60, 62, 64, 65, 67, 69, 71):
            items.append({"id": f"{s['id']}-v{m}", "session": s["id"], "kind": "backing", "pitch": float(m),
                          "file": f"{s['id']}/{s['id']}-v{m}.ogg", "dur": 1.5})  # fmt: skip
    for it in items:
        p = folder / it["file"]
        p.parent.mkdir(parents=True, exist_ok=True)
        if it["kind"] in ("lead", "harmony"):
            y = _sung([tuple(x) for x in it["notes"]], it["dur"], sr)
        elif it["kind"] == "breath":
            y = (0.05 * np.random.default_rng(0).standard_normal(int(0.3 * sr))).astype(np.float32)
        else:
            y = _sung([(0.0, 1.5, it["pitch"])], 1.5, sr)
        sf.write(p, y, sr, format="OGG", subtype="OPUS")
    (folder / "index.json").write_text(
        json.dumps({"version": 1, "sample_rate": sr, "sessions": sessions, "items": items})
    )
    return folder


def write_assets(root: Path) -> Path:
    """``root`` as a complete assets folder (SoundFont, drumkits/, vocals/)."""
    write_soundfont(root / "tiny.sf2")
    write_drumkit(root / "drumkits" / "tiny")
    write_bank(root / "vocals")
    return root
