"""Offline speech building blocks for the Voice Live stand-in and the phone simulator.

Everything runs locally with models shipped inside packages (no downloads):

* :class:`Speaker` (:mod:`callbot.local.speech.tts`): espeak-ng text-to-speech, deterministic 16-bit PCM at any rate.
* :class:`Recognizer` (:mod:`callbot.local.speech.asr`): pocketsphinx speech-to-text, generic or phrase-constrained.
* :class:`SpeechDetector` / :class:`VadEvent` (:mod:`callbot.local.speech.vad`): streaming webrtcvad turn detection
  with Voice Live's ``audio_start_ms`` / ``audio_end_ms`` semantics and the segment's audio.

Install with the ``local`` extra (``webrtcvad-wheels``, ``pocketsphinx``, ``espeakng-loader``).
"""

from callbot.local.speech.asr import Recognizer
from callbot.local.speech.tts import Speaker
from callbot.local.speech.vad import SpeechDetector, VadEvent

__all__ = ["Recognizer", "Speaker", "SpeechDetector", "VadEvent"]
