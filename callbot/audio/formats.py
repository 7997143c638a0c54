"""Audio formats as data: one table that framing, playback, truncation maths, the session config, the ACS stand-in
and the Voice Live stand-in all read, so no module assumes 16-bit PCM or repeats a rate.

Two kinds of entry:
- `MEDIA_FORMATS`: what a transport carries (`CALLBOT_MEDIA_FORMAT` for ACS: `pcm24k`, `pcm16k`; Twilio Media Streams:
  `ulaw8k`), with the ACS wire name and the Voice Live formats that carry it without conversion.
- `VOICELIVE_OUTPUT`: Voice Live's `output_audio_format` names and the audio each one is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

FRAME_MS = 20  # every transport here frames audio in 20 ms


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono audio as bytes: its rate and how one sample is coded."""

    sample_rate: int
    codec: str  # "pcm16" (16-bit little-endian), "ulaw" or "alaw" (G.711, one byte a sample)

    @property
    def sample_width(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    @property
    def silence_byte(self) -> int:
        """The byte that fills silence: 0x00 in PCM, 0xFF in mu-law, 0xD5 in A-law (a 0x00 there is a loud click)."""
        return {"pcm16": 0x00, "ulaw": 0xFF, "alaw": 0xD5}[self.codec]

    @property
    def bytes_per_ms(self) -> float:
        return self.sample_rate * self.sample_width / 1000

    def frame_bytes(self, ms: int = FRAME_MS) -> int:
        return int(self.bytes_per_ms * ms)

    def silence(self, ms: int = FRAME_MS) -> bytes:
        return bytes([self.silence_byte]) * self.frame_bytes(ms)


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """A format a transport streams, and how Voice Live is configured for it."""

    name: str
    audio: Audio
    acs_name: str | None  # ACS media streaming `audioFormat`, when ACS streams it
    voicelive_input: str  # session `input_audio_format`
    voicelive_output: str  # session `output_audio_format`

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate


PCM24K = Audio(24000, "pcm16")
PCM16K = Audio(16000, "pcm16")
PCM8K = Audio(8000, "pcm16")
ULAW8K = Audio(8000, "ulaw")
ALAW8K = Audio(8000, "alaw")

MEDIA_FORMATS: Mapping[str, MediaFormat] = MappingProxyType({
    "pcm24k": MediaFormat("pcm24k", PCM24K, "pcm24KMono", "pcm16", "pcm16"),
    "pcm16k": MediaFormat("pcm16k", PCM16K, "pcm16KMono", "pcm16", "pcm16_16000hz"),
    "ulaw8k": MediaFormat("ulaw8k", ULAW8K, None, "g711_ulaw", "g711_ulaw"),  # Twilio, passed through as G.711
})

VOICELIVE_OUTPUT: Mapping[str, Audio] = MappingProxyType({
    "pcm16": PCM24K,
    "pcm16_16000hz": PCM16K,
    "pcm16_8000hz": PCM8K,
    "g711_ulaw": ULAW8K,
    "g711_alaw": ALAW8K,
})

VOICELIVE_INPUT_CODECS: Mapping[str, str] = MappingProxyType({"pcm16": "pcm16", "g711_ulaw": "ulaw",
                                                              "g711_alaw": "alaw"})
VOICELIVE_INPUT_RATES = frozenset({8000, 16000, 24000})  # `input_audio_sampling_rate` of pcm16 input

ACS_FORMATS: Mapping[str, MediaFormat] = MappingProxyType(
    {f.acs_name: f for f in MEDIA_FORMATS.values() if f.acs_name is not None})


def voicelive_input(input_format: str, sampling_rate: int) -> Audio:
    """The audio a Voice Live session takes: G.711 is always 8 kHz; pcm16 at `input_audio_sampling_rate`."""
    codec = VOICELIVE_INPUT_CODECS[input_format]
    return Audio(8000 if codec != "pcm16" else sampling_rate, codec)
