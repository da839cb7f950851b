"""Procedural lyrics as Kokoro phoneme strings: English lines from word lists (phonemised by espeak-ng) and
Japanese lines from romanised words (converted here, mora by mora). No text corpus is involved."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np

from bsmamba2.data.synth.samples.assets import AssetError

EN_WORDS = {
    "pron": ("I", "you", "we", "they", "she", "he"),
    "verb": ("love", "need", "feel", "hold", "find", "call", "know", "want", "miss", "see", "chase", "keep",
             "fall for", "wait for", "dream of", "run to", "sing to", "follow", "remember", "believe in"),
    "adj": ("golden", "broken", "endless", "quiet", "burning", "silver", "lonely", "electric", "gentle", "wild",
            "shining", "restless", "falling", "distant", "tender", "bright", "cold", "sweet", "empty", "open"),
    "noun": ("heart", "light", "night", "sky", "fire", "rain", "road", "dream", "sun", "moon", "ocean", "city",
             "river", "summer", "shadow", "morning", "voice", "home", "star", "wave", "storm", "song", "time",
             "world", "skin", "eyes", "hands", "lights", "stars", "streets"),
    "place": ("tonight", "forever", "again", "away", "alone", "together", "right now", "all night", "so high",
              "tomorrow", "inside", "one more time"),
    "excl": ("oh", "yeah", "hey", "ooh", "whoa", "baby", "na na na", "la la la"),
}  # fmt: skip
EN_TEMPLATES = (
    "pron verb the adj noun", "pron verb you place", "under the adj noun", "pron verb the noun place",
    "excl pron verb the noun", "all the adj noun", "pron verb your adj noun", "in the adj noun place",
    "excl excl pron verb you", "pron verb you like the noun", "adj noun adj noun", "pron verb the noun of noun",
    "take me to the noun", "when the noun is adj", "pron verb place", "we are adj place",
)  # fmt: skip

JA_WORDS = ("sora", "yume", "kimi", "ai", "hana", "kokoro", "namida", "hikari", "kaze", "yoru", "asa", "umi",
            "hoshi", "michi", "koe", "te", "mune", "tooku", "mada", "ima", "itsumo", "dakara", "sakura", "natsu",
            "fuyu", "aoi", "akai", "shiroi", "yasashii", "sabishii", "aitai", "wasurenai", "hashiru", "utau",
            "nemuru", "shinjite", "dakishimete", "kanjiru", "kagayaku", "furu", "saku", "tsunagu", "mirai",
            "kioku", "negai", "egao", "tsubasa", "kimochi", "owari", "hajimari", "setsunai", "mabushii", "sekai",
            "haruka", "yukkuri", "ashita", "kinou", "zutto", "motto", "kitto", "hitori", "futari", "kirei")  # fmt: skip
JA_PARTICLES = ("wa", "ga", "no", "ni", "wo", "to", "de", "mo", "yo", "ne", "e")

# romaji syllable -> Kokoro (misaki) phonemes; the vowel u is the unrounded ɯ, r the tap ɾ
_JA_SPECIAL = {"shi": "ɕi", "chi": "ʨi", "tsu": "ʦɨ", "fu": "ɸɯ", "ji": "ʥi", "su": "sɨ", "zu": "zɨ", "hi": "çi",
               "ni": "ɲi", "wo": "o", "sha": "ɕa", "shu": "ɕɯ", "sho": "ɕo", "cha": "ʨa", "chu": "ʨɯ", "cho": "ʨo",
               "ja": "ʥa", "ju": "ʥɯ", "jo": "ʥo", "za": "ʣa", "ze": "ʣe", "zo": "ʣo", "wa": "βa"}  # fmt: skip
_JA_CONS = {"k": "k", "g": "ɡ", "s": "s", "z": "z", "t": "t", "d": "d", "n": "n", "h": "h", "b": "b", "p": "p",
            "m": "m", "y": "j", "r": "ɾ", "w": "β"}  # fmt: skip
_JA_VOWEL = {"a": "a", "i": "i", "u": "ɯ", "e": "e", "o": "o"}
_PALATAL = {"k": "kʲ", "g": "ɡʲ", "m": "mʲ", "r": "ɾʲ", "b": "bʲ", "p": "pʲ"}  # before i

VOWELS = set("aeiouæɑɒɔəɚɛɜɪʊʌɐᵻɨɯAIOWYE")
# espeak's two-letter diphthongs -> misaki's one-letter ones (the phoneme style Kokoro v1.0 was trained on)
_DIPHTHONGS = {"eɪ": "A", "aɪ": "I", "oʊ": "O", "aʊ": "W", "ɔɪ": "Y", "əʊ": "O"}


def romaji_to_phonemes(word: str) -> str:
    """A romanised Japanese word -> Kokoro phonemes (geminates -> ʔ, syllabic n -> ɴ)."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "n" and (i + 1 == len(word) or word[i + 1] not in "aiueoy"):
            out.append("ɴ")
            i += 1
            continue
        if i + 1 < len(word) and word[i] == word[i + 1] and word[i] not in "aiueon":
            out.append("ʔ")
            i += 1
            continue
        for size in (3, 2):
            if word[i : i + size] in _JA_SPECIAL:
                out.append(_JA_SPECIAL[word[i : i + size]])
                i += size
                break
        else:
            c, v = word[i], word[i + 1 : i + 2]
            if c in _JA_VOWEL:
                out.append(_JA_VOWEL[c])
                i += 1
            elif c in _JA_CONS and v in _JA_VOWEL:
                out.append((_PALATAL.get(c, _JA_CONS[c]) if v == "i" else _JA_CONS[c]) + _JA_VOWEL[v])
                i += 2
            else:
                i += 1  # not a syllable we know: skip the letter
    return "".join(out)


def count_syllables(phonemes: str) -> int:
    """Vowel nuclei in a phoneme string (runs of vowel letters, length marks included)."""
    return len(re.findall(f"[{''.join(sorted(VOWELS))}][{''.join(sorted(VOWELS))}ː]*", phonemes))


def english_text(rng: np.random.Generator) -> str:
    """One line of English lyrics from a template and the word lists."""
    words = []
    for tok in str(rng.choice(EN_TEMPLATES)).split():
        pool = EN_WORDS.get(tok)
        words.append(str(rng.choice(pool)) if pool else tok)
    return " ".join(words)


def japanese_phonemes(rng: np.random.Generator, morae: int) -> str:
    """A Japanese line of about ``morae`` syllables: words joined by particles, as Kokoro phonemes."""
    words: list[str] = []
    while sum(count_syllables(w) for w in words) < morae:
        words.append(romaji_to_phonemes(str(rng.choice(JA_WORDS))))
        if rng.random() < 0.5:
            words.append(romaji_to_phonemes(str(rng.choice(JA_PARTICLES))))
    return " ".join(words)


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """English text -> Kokoro phonemes through ``espeak-ng --ipa`` (diphthongs folded to misaki letters)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AssetError("English lyrics need espeak-ng: apt-get install espeak-ng")
    ipa = subprocess.run(
        [exe, "-q", "--ipa", "-v", voice, text], capture_output=True, text=True, check=True
    ).stdout
    ipa = " ".join(ipa.split())
    for a, b in _DIPHTHONGS.items():
        ipa = ipa.replace(a, b)
    return ipa


def espeak_wave(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """espeak-ng's own formant voice speaking ``text``: (mono float32, sample rate)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AssetError("espeak-ng voices need espeak-ng: apt-get install espeak-ng")
    wav = subprocess.run([exe, "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text],
                         capture_output=True, check=True).stdout  # fmt: skip
    # a streamed RIFF WAV (its sizes are not filled in, which libsndfile refuses): 16-bit mono PCM
    at = wav.find(b"data")
    if wav[:4] != b"RIFF" or at < 0:
        raise AssetError(f"espeak-ng gave no WAV for voice {voice!r}: apt-get install espeak-ng")
    sr = int.from_bytes(wav[24:28], "little")
    pcm = np.frombuffer(wav[at + 8 : at + 8 + (len(wav) - at - 8) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, sr
