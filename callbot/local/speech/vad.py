"""Streaming voice activity detection over 16-bit mono PCM (webrtcvad), Voice Live ``server_vad`` style.

Pure: time is the audio position (samples consumed), never the clock, so the same audio gives the same
events however it is chunked. 24 kHz input is converted to 16 kHz for webrtcvad (which takes 8/16/32/48 kHz);
8 and 16 kHz are analysed as they are. Analysis is in 20 ms frames.

Events (:class:`VadEvent`) carry positions in ms from the start of the stream, like Voice Live's
``audio_start_ms`` / ``audio_end_ms``:

* ``speech_started``: the first speech frame of ``min_speech_ms`` consecutive ones, minus
  ``prefix_padding_ms`` (clamped at 0 and at the end of the previous segment: segments never overlap).
* ``speech_stopped``: the end of the last speech frame, reported once ``silence_duration_ms`` of non-speech
  followed. webrtcvad holds speech over for a few frames, so this lags the true end by ~50-150 ms.
  ``audio`` holds the segment at the input rate, from the padded start to the point of detection
  (so it includes the trailing silence, which the recogniser likes). A segment longer than
  ``max_segment_ms`` is cut there (stopped, then started again if speech continues).

The first ``ignore_initial_ms`` of a stream never count as speech: webrtcvad false-triggers while its noise
estimate settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import webrtcvad

from callbot.audio.resample import Resampler

FRAME_MS = 20
SUPPORTED_RATES = (8000, 16000, 24000)


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A speech boundary; ``audio`` (the segment's PCM at the input rate) is set on ``speech_stopped``."""

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int
    audio: bytes | None = None


def threshold_to_mode(threshold: float) -> int:
    """Voice Live's 0..1 ``threshold`` as webrtcvad aggressiveness 0..3 (higher = needs clearer speech)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    return min(3, int(threshold * 4))


class SpeechDetector:
    """Streaming speech start/stop detection; one instance per audio stream. See the module docstring."""

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        min_speech_ms: int = 60,
        ignore_initial_ms: int = 300,
        max_segment_ms: int = 30000,
    ) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"sample_rate must be one of {SUPPORTED_RATES}, got {sample_rate}")
        for name, value in (
            ("prefix_padding_ms", prefix_padding_ms),
            ("silence_duration_ms", silence_duration_ms),
            ("min_speech_ms", min_speech_ms),
            ("ignore_initial_ms", ignore_initial_ms),
        ):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if max_segment_ms < 1000:
            raise ValueError(f"max_segment_ms must be at least 1000, got {max_segment_ms}")
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.min_speech_ms = min_speech_ms
        self.ignore_initial_ms = ignore_initial_ms
        self.max_segment_ms = max_segment_ms
        self._vad = webrtcvad.Vad(threshold_to_mode(threshold))
        self._vad_rate = 16000 if sample_rate == 24000 else sample_rate
        self._resampler = Resampler(sample_rate, self._vad_rate) if sample_rate != self._vad_rate else None
        self._frame_bytes = self._vad_rate * FRAME_MS // 1000 * 2
        self._min_frames = max(1, -(-min_speech_ms // FRAME_MS))
        self._silence_frames = max(1, -(-silence_duration_ms // FRAME_MS))
        self._ignore_frames = -(-ignore_initial_ms // FRAME_MS)
        self._max_samples = max_segment_ms * sample_rate // 1000
        self.reset()

    def reset(self) -> None:
        """Start a new stream at position 0."""
        if self._resampler is not None:
            self._resampler.reset()
        self._analysis = bytearray()  # analysis-rate audio not yet judged
        self._frames = 0  # frames judged so far
        self._samples_in = 0  # input samples consumed so far
        self._odd_byte = b""
        self._audio = bytearray()  # recent input audio: the prefix history, or the open segment
        self._audio_start = 0  # input sample index of _audio[0]
        self._floor = 0  # input sample where the previous segment ended: segments never overlap
        self._in_speech = False
        self._run = 0  # consecutive speech frames (outside speech) / non-speech frames (in speech)
        self._segment_start = 0  # input sample index where the open segment starts (padding included)
        self._last_speech_end = 0  # frame index just after the last speech frame of the open segment

    @property
    def position_ms(self) -> int:
        """Audio consumed so far, in ms."""
        return self._samples_in * 1000 // self.sample_rate

    @property
    def in_speech(self) -> bool:
        """Whether a segment is open (``speech_started`` sent, ``speech_stopped`` not yet)."""
        return self._in_speech

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Consume any amount of audio; returns the events it completes, in order."""
        data = self._odd_byte + bytes(pcm)
        cut = len(data) - len(data) % 2
        self._odd_byte = data[cut:]
        if cut == 0:
            return []
        data = data[:cut]
        self._audio += data
        self._samples_in += cut // 2
        self._analysis += self._resampler.process(data) if self._resampler is not None else data
        events: list[VadEvent] = []
        # a frame is judged once its input audio is all in, so chunking never changes what a cut contains
        while len(self._analysis) >= self._frame_bytes and self._sample_at(self._frames + 1) <= self._samples_in:
            frame = bytes(self._analysis[: self._frame_bytes])
            del self._analysis[: self._frame_bytes]
            event = self._judge(frame)
            if event is not None:
                events.append(event)
        self._trim()
        return events

    def finish(self) -> list[VadEvent]:
        """End of stream: closes an open segment (``speech_stopped`` at the end of its last speech)."""
        if not self._in_speech:
            return []
        return [self._stop(self._last_speech_end, self._sample_at(self._frames))]

    # -- internals -------------------------------------------------------------------------------------

    def _sample_at(self, frame: int) -> int:
        """Input sample index where analysis frame ``frame`` starts."""
        return frame * FRAME_MS * self.sample_rate // 1000

    def _ms(self, sample: int) -> int:
        return sample * 1000 // self.sample_rate

    def _slice(self, start: int, end: int) -> bytes:
        return bytes(self._audio[2 * (start - self._audio_start) : 2 * (end - self._audio_start)])

    def _trim(self) -> None:
        if self._in_speech:
            keep_from = self._segment_start
        else:
            lookback = self.prefix_padding_ms + self.min_speech_ms + 2 * FRAME_MS
            keep_from = max(self._floor, self._sample_at(self._frames) - lookback * self.sample_rate // 1000)
        excess = keep_from - self._audio_start
        if excess > 0:
            del self._audio[: 2 * excess]
            self._audio_start = keep_from

    def _judge(self, frame: bytes) -> VadEvent | None:
        index = self._frames
        self._frames += 1
        speech = self._vad.is_speech(frame, self._vad_rate)  # always: it adapts its noise estimate
        speech = speech and index >= self._ignore_frames
        if not self._in_speech:
            self._run = self._run + 1 if speech else 0
            if self._run >= self._min_frames:
                return self._start(index + 1 - self._run)
            return None
        if speech:
            self._run = 0
            self._last_speech_end = index + 1
        else:
            self._run += 1
        detection = self._sample_at(index + 1)
        if self._run >= self._silence_frames:
            return self._stop(self._last_speech_end, detection)
        if detection - self._segment_start >= self._max_samples:
            return self._stop(index + 1, detection)
        return None

    def _start(self, onset_frame: int) -> VadEvent:
        padding = self.prefix_padding_ms * self.sample_rate // 1000
        self._segment_start = max(self._floor, self._audio_start, self._sample_at(onset_frame) - padding)
        self._in_speech = True
        self._run = 0
        self._last_speech_end = self._frames
        return VadEvent("speech_started", self._ms(self._segment_start))

    def _stop(self, end_frame: int, detection: int) -> VadEvent:
        audio = self._slice(self._segment_start, detection)
        self._floor = detection
        self._in_speech = False
        self._run = 0
        return VadEvent("speech_stopped", end_frame * FRAME_MS, audio)
