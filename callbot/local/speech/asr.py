"""Offline speech recognition: pocketsphinx 5 with the en-us model shipped inside the package.

Two modes:

* generic (``Recognizer()``): pocketsphinx's large en-us language model. Decent on natural speech, poor on
  espeak's synthetic speech (~25-40% words right).
* phrases (``Recognizer(["what are your opening hours", ...])``): a trigram language model built in-process
  from the phrases (fixed-discount back-off, so reordered or partial phrases over the same words still
  decode) and a dictionary holding only their words. espeak speech of the phrases comes back exactly.

Words missing from the CMU dictionary are transcribed with espeak-ng's grapheme-to-phoneme rules (IPA mapped
to ARPAbet), so names like "contoso" still work; a word neither can handle is skipped (logged).

Audio preparation matters more than decoder settings: espeak (and any generated audio) contains runs of
exact digital zeros whose log energy wrecks the features. Every utterance is therefore padded with 300 ms
and given a deterministic low-level noise floor (sigma 30 LSB, about -60 dBFS) before decoding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

from callbot.local.speech.tts import convert_rate, text_to_ipa

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The only rate the packaged acoustic model accepts; other rates are converted."""

_PAD_MS = 300
_NOISE_SIGMA = 30.0
_NOISE_SEED = 20240611
_DISCOUNT_MASS = 0.2  # back-off mass of the phrase LM: low = close to the phrases, still open to other orders
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

# IPA (as espeak-ng writes it for English) -> ARPAbet; matched longest first
_IPA_TO_ARPABET: Mapping[str, str] = MappingProxyType({
    "aɪɚ": "AY ER", "aɪə": "AY ER", "aʊɚ": "AW ER",
    "eɪ": "EY", "aɪ": "AY", "ɔɪ": "OY", "aʊ": "AW", "oʊ": "OW", "əʊ": "OW", "tʃ": "CH", "dʒ": "JH",
    "ɑː": "AA", "ɔː": "AO", "ɜː": "ER", "iː": "IY", "uː": "UW", "n̩": "AH N", "l̩": "AH L", "m̩": "AH M",
    "ɚ": "ER", "ɝ": "ER", "ə": "AH", "ʌ": "AH", "ɐ": "AH", "æ": "AE", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO",
    "ɛ": "EH", "e": "EY", "ɪ": "IH", "ᵻ": "IH", "i": "IY", "ʊ": "UH", "u": "UW", "o": "OW", "a": "AE",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F", "v": "V", "θ": "TH",
    "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "m": "M", "n": "N", "ŋ": "NG",
    "l": "L", "ɬ": "L", "ɹ": "R", "r": "R", "w": "W", "ʍ": "W", "j": "Y", "ɾ": "T", "ʔ": "T", "x": "K",
    "ç": "HH",
})  # fmt: skip
_IPA_KEY_LENGTHS = sorted({len(k) for k in _IPA_TO_ARPABET}, reverse=True)


def normalize_words(text: str) -> list[str]:
    """Lower-case words of ``text`` without punctuation (apostrophes inside words are kept)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def ipa_to_arpabet(ipa: str) -> str:
    """Map an espeak-ng IPA string to space-separated ARPAbet phones; stress marks and unknown symbols
    are dropped."""
    phones: list[str] = []
    i = 0
    while i < len(ipa):
        for size in _IPA_KEY_LENGTHS:
            arpa = _IPA_TO_ARPABET.get(ipa[i : i + size])
            if arpa is not None:
                phones.append(arpa)
                i += size
                break
        else:
            i += 1  # stress (ˈ ˌ), length (ː), spaces, anything unknown
    return " ".join(phones)


def _cmudict_entries(words: set[str]) -> dict[str, list[str]]:
    """Pronunciations of ``words`` from the packaged CMU dictionary (all variants)."""
    found: dict[str, list[str]] = {}
    with open(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            head, _, phones = line.partition(" ")
            word = head.split("(", 1)[0]
            if word in words:
                found.setdefault(word, []).append(phones.strip())
    return found


def _pronunciations(words: set[str], g2p_voice: str) -> dict[str, list[str]]:
    prons = _cmudict_entries(words)
    missing = sorted(words - prons.keys())
    if missing:
        for word, ipa in zip(missing, text_to_ipa(missing, g2p_voice), strict=True):
            phones = ipa_to_arpabet(ipa)
            if phones:
                prons[word] = [phones]
                log.debug("pronunciation of %r from espeak: %s", word, phones)
            else:
                log.warning("no pronunciation for %r; it is left out of the phrase model", word)
    return prons


def _prepare(pcm16: bytes, sample_rate: int) -> bytes:
    """16 kHz audio with padding and a fixed noise floor (see the module docstring)."""
    audio = np.frombuffer(convert_rate(pcm16, sample_rate, SAMPLE_RATE), dtype="<i2")
    pad = np.zeros(SAMPLE_RATE * _PAD_MS // 1000, dtype=np.float64)
    x = np.concatenate((pad, audio.astype(np.float64), pad))
    x += np.random.default_rng(_NOISE_SEED).normal(0.0, _NOISE_SIGMA, x.size)
    return np.rint(x).clip(-32768, 32767).astype("<i2").tobytes()


class Recognizer:
    """Speech-to-text over pocketsphinx; see the module docstring for the two modes.

    Construction loads models (generic: ~0.3-0.5 s, phrases: ~0.1 s): build it once, in a worker thread from
    async code (:meth:`create`). Decoding is serialised per instance, so one instance may be shared.
    """

    def __init__(self, phrases: Sequence[str] | None = None, *, g2p_voice: str = "en-us") -> None:
        self._lock = threading.Lock()
        self.phrases: tuple[str, ...] | None = None
        self.vocabulary: frozenset[str] | None = None
        if phrases is None:
            self._decoder: Any = pocketsphinx.Decoder(loglevel="FATAL")
            return
        sentences = [normalize_words(p) for p in phrases]
        prons = _pronunciations({w for s in sentences for w in s}, g2p_voice)
        kept = [[w for w in s if w in prons] for s in sentences]
        kept = [s for s in kept if s]
        if not kept:
            raise ValueError("none of the phrases has a word that can be pronounced")
        self.phrases = tuple(" ".join(s) for s in kept)
        self.vocabulary = frozenset(prons)
        self._decoder = self._phrase_decoder(self.phrases, prons)

    @staticmethod
    def _phrase_decoder(sentences: Iterable[str], prons: dict[str, list[str]]) -> Any:
        lm = ArpaBoLM(text="".join(s + "\n" for s in sentences), add_start=True, discount_mass=_DISCOUNT_MASS)
        lm.compute()
        with tempfile.TemporaryDirectory(prefix="callbot-asr-") as tmp:
            dict_path = os.path.join(tmp, "phrases.dict")
            lm_path = os.path.join(tmp, "phrases.arpa")
            with open(dict_path, "w", encoding="utf-8") as f:
                for word, variants in sorted(prons.items()):
                    for i, phones in enumerate(variants):
                        f.write(f"{word}{'' if i == 0 else f'({i + 1})'} {phones}\n")
            lm.write_file(lm_path)
            return pocketsphinx.Decoder(loglevel="FATAL", lm=lm_path, dict=dict_path)

    @classmethod
    async def create(cls, phrases: Sequence[str] | None = None, *, g2p_voice: str = "en-us") -> Recognizer:
        """Construct in a worker thread (model loading blocks)."""
        return await asyncio.to_thread(cls, phrases, g2p_voice=g2p_voice)

    def transcribe(self, pcm16: bytes, sample_rate: int) -> str:
        """Recognise one utterance of 16-bit mono PCM at ``sample_rate``: lower-case words separated by
        spaces, ``""`` when nothing was recognised. Blocking (phrase mode ~0.03 s per second of audio,
        generic ~0.3 s)."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if len(pcm16) < 2:
            return ""
        audio = _prepare(pcm16[: len(pcm16) // 2 * 2], sample_rate)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(audio, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        if hyp is None:
            return ""
        words = str(hyp.hypstr).split()
        return " ".join(w for w in words if not w.startswith(("<", "[", "+")))

    async def transcribe_async(self, pcm16: bytes, sample_rate: int) -> str:
        """:meth:`transcribe` in a worker thread."""
        return await asyncio.to_thread(self.transcribe, pcm16, sample_rate)
