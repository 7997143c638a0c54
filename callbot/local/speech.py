"""Offline speech building blocks for the Voice Live stand-in and the phone simulator.

Everything runs locally with models shipped inside packages (no downloads):

* :class:`Speaker` (:mod:`callbot.local.tts`): espeak-ng text-to-speech, deterministic 16-bit PCM at any rate.
* :class:`Recognizer` (:mod:`callbot.local.asr`): pocketsphinx speech-to-text, generic or phrase-constrained.
* :class:`SpeechDetector` / :class:`VadEvent` (:mod:`callbot.local.vad`): streaming webrtcvad turn detection
  with Voice Live's ``audio_start_ms`` / ``audio_end_ms`` semantics and the segment's audio.

Install with the ``local`` extra (``webrtcvad-wheels``, ``pocketsphinx``, ``espeakng-loader``).
"""

from callbot.local.asr import Recognizer
from callbot.local.tts import Speaker
from callbot.local.vad import SpeechDetector, VadEvent

__all__ = ["Recognizer", "Speaker", "SpeechDetector", "VadEvent"]
