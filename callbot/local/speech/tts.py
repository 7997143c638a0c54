"""Offline text-to-speech: espeak-ng (bundled by ``espeakng-loader``) through ctypes.

Used by the offline Voice Live stand-in (the bot's voice) and the phone simulator (the caller's voice).
espeak-ng is light (RTF ~0.003 including the per-call reload below) and its speech is intelligible to
pocketsphinx once a phrase language model is given (see :mod:`callbot.local.speech.asr`).

Why the library is loaded afresh for every synthesis
    libespeak-ng is a C singleton full of ``static`` state that survives ``espeak_Terminate`` and
    ``espeak_Initialize``: the pitch-flutter phase, the glottal cycle counter, the output AGC. The same text
    synthesised twice in one process therefore gives different samples (different lengths even). To keep
    "same text -> same bytes" (recordings, replay, tests), each synthesis ``dlopen``s the library, initialises
    it, synthesises, terminates and ``dlclose``s it, so all statics start from their load-time values.
    That costs ~4-5 ms per call and leaks ~2 KB inside espeak per call (its own Terminate leak).
    This only resets the library if nothing else in the process holds it open (e.g. another user of
    ``espeakng_loader.load_library``); then output is still valid speech, just not bit-identical.

Why there is a module-level lock
    Because the C library is one process-wide singleton, every use of it, from any :class:`Speaker` in any
    thread, must be serialised. The lock is the only module-level object; it holds no data.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import espeakng_loader

from callbot.audio.resample import Resampler

log = logging.getLogger(__name__)

ESPEAK_RATE = 22050
"""espeak-ng's native output rate (Hz)."""

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM_RATE = 1
_PARAM_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PHONEMES_IPA = 0x02

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_LIBRARY_LOCK = threading.Lock()  # see the module docstring: serialises all use of the C singleton


def convert_rate(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole 16-bit mono buffer, time-aligned: the filter delay is removed and the result has
    ``round(n * dst_rate / src_rate)`` samples."""
    if src_rate == dst_rate or not pcm:
        return bytes(pcm)
    resampler = Resampler(src_rate, dst_rate)
    out = resampler.process(pcm) + resampler.flush()
    skip = round(resampler.delay_ms * dst_rate / 1000)
    want = round(len(pcm) // 2 * dst_rate / src_rate)
    body = out[2 * skip : 2 * (skip + want)]
    return body + bytes(2 * want - len(body))


def _bind(lib: ctypes.CDLL) -> None:
    """Declare the C signatures of the functions used (ctypes would otherwise guess ``int``)."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes  # CPython's loader primitives; ctypes itself has no public unload

    handle = lib._handle
    if hasattr(_ctypes, "dlclose"):
        _ctypes.dlclose(handle)
    elif hasattr(_ctypes, "FreeLibrary"):  # Windows
        _ctypes.FreeLibrary(handle)


@contextmanager
def espeak_session(voice: str, rate_wpm: int, pitch: int | None = None) -> Iterator[ctypes.CDLL]:
    """A freshly loaded, initialised espeak-ng with ``voice`` selected, held under the process-wide lock.

    Blocking; call from a worker thread in async code. Raises :class:`ValueError` for an unknown voice and
    :class:`RuntimeError` if espeak cannot start.
    """
    with _LIBRARY_LOCK:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        try:
            _bind(lib)
            data = espeakng_loader.get_data_path().encode()
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
            if rate != ESPEAK_RATE:
                raise RuntimeError(f"espeak-ng failed to initialise (returned {rate})")
            try:
                if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise ValueError(f"unknown espeak-ng voice {voice!r}")
                lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
                if pitch is not None:
                    lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
                if hasattr(lib, "espeak_ng_SetRandSeed"):
                    lib.espeak_ng_SetRandSeed(1)  # breathy variants draw noise from rand()
                yield lib
            finally:
                lib.espeak_Terminate()
        finally:
            _unload(lib)


class Speaker:
    """Synthesises speech with espeak-ng: 16-bit mono PCM at any rate, deterministic for a given text.

    ``voice`` is an espeak-ng voice name, optionally with a variant (``"en-us"``, ``"en"`` (British), ``"en-us+f3"``);
    ``rate_wpm`` is 80-450 words per minute; ``pitch`` 0-99 (espeak default 50).
    Instances hold only settings and are safe to share between threads and tasks.
    """

    def __init__(self, voice: str = "en-us", rate_wpm: int = 160, pitch: int | None = None) -> None:
        if not 80 <= rate_wpm <= 450:
            raise ValueError(f"rate_wpm must be within 80-450, got {rate_wpm}")
        if pitch is not None and not 0 <= pitch <= 99:
            raise ValueError(f"pitch must be within 0-99, got {pitch}")
        if not voice or "\0" in voice:
            raise ValueError("voice must be a non-empty espeak-ng voice name")
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch

    def __repr__(self) -> str:
        return f"Speaker(voice={self.voice!r}, rate_wpm={self.rate_wpm}, pitch={self.pitch})"

    def synthesize(self, text: str, sample_rate: int = 24000) -> bytes:
        """Speak ``text`` into 16-bit LE mono PCM at ``sample_rate``. Blocking (~1-5 ms + 0.3% of the
        audio's duration); empty text gives ``b""``. Text is read as plain text (no SSML, no phoneme input)."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        text = text.replace("\0", " ").strip()
        if not text:
            return b""
        native = self._synthesize_native(text)
        return convert_rate(native, ESPEAK_RATE, sample_rate)

    async def synthesize_async(self, text: str, sample_rate: int = 24000) -> bytes:
        """:meth:`synthesize` in a worker thread."""
        return await asyncio.to_thread(self.synthesize, text, sample_rate)

    def _synthesize_native(self, text: str) -> bytes:
        chunks: list[bytes] = []

        def on_audio(wav: ctypes._Pointer[ctypes.c_short], n_samples: int, _events: int | None) -> int:
            if wav and n_samples > 0:
                chunks.append(ctypes.string_at(wav, 2 * n_samples))
            return 0  # 0: continue

        callback = _SynthCallback(on_audio)  # kept referenced until the library is unloaded
        encoded = text.encode("utf-8") + b"\0"
        with espeak_session(self.voice, self.rate_wpm, self.pitch) as lib:
            lib.espeak_SetSynthCallback(callback)
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        log.debug("synthesised %d chars into %d samples", len(text), sum(len(c) for c in chunks) // 2)
        return b"".join(chunks)


def text_to_ipa(texts: list[str], voice: str = "en-us") -> list[str]:
    """espeak-ng's IPA transcription of each text (words separated by spaces), in one library session.

    The grapheme-to-phoneme fallback for words missing from pocketsphinx's dictionary. Blocking.
    """
    out: list[str] = []
    with espeak_session(voice, 160) as lib:
        for text in texts:
            encoded = ctypes.create_string_buffer(text.replace("\0", " ").encode())
            pointer = ctypes.c_void_p(ctypes.addressof(encoded))
            parts: list[str] = []
            while pointer.value:  # espeak advances the pointer clause by clause, NULL at the end
                chunk = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
                if chunk:
                    parts.append(chunk.decode("utf-8", "replace").strip())
            out.append(" ".join(p for p in parts if p))
    return out
