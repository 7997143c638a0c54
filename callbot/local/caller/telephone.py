"""The telephone leg between a caller and ACS, and WAV files of simulated calls.

`TelephoneLeg`: what the PSTN does to a caller's voice before ACS upsamples it for media streaming: band-limit
to 8 kHz, G.711 u-law encode, decode, back to the media rate. Stateful per call and per direction (the
resamplers carry their filter history across 20 ms frames, so frame edges are seamless); 4 ms of delay.

`playout`: the bot's audio as a phone plays it: frames in arrival order, silence when the buffer ran dry,
and whatever was still buffered dropped at a ``StopAudio``, as ACS does.
"""

from __future__ import annotations

import wave
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16

TELEPHONE_RATE = 8000


class TelephoneLeg:
    """16-bit PCM at ``sample_rate`` -> 8 kHz -> G.711 u-law -> 8 kHz -> ``sample_rate``, streaming."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._down = Resampler(sample_rate, TELEPHONE_RATE)
        self._up = Resampler(TELEPHONE_RATE, sample_rate)

    @property
    def delay_ms(self) -> float:
        return float(self._down.delay_ms + self._up.delay_ms)

    def process(self, pcm: bytes) -> bytes:
        """Any amount of audio in; for 20 ms frames, exactly one frame out per frame in."""
        return self._up.process(ulaw_to_pcm16(pcm16_to_ulaw(self._down.process(pcm))))

    def frames(self, pcm: bytes, frame_bytes: int) -> bytes:
        """A whole buffer through the leg, 20 ms at a time (as a call would)."""
        out = bytearray()
        for offset in range(0, len(pcm), frame_bytes):
            out += self.process(pcm[offset : offset + frame_bytes])
        return bytes(out)


def speech_bounds(pcm: bytes, frame_bytes: int, level: float = 300.0) -> tuple[int, int]:
    """Indices of the first and one past the last frame whose RMS exceeds ``level`` ((0, 0): none)."""
    loud = []
    for i, offset in enumerate(range(0, len(pcm), frame_bytes)):
        x = np.frombuffer(pcm[offset : offset + frame_bytes][: frame_bytes // 2 * 2], dtype="<i2")
        if x.size and float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) > level:
            loud.append(i)
    return (loud[0], loud[-1] + 1) if loud else (0, 0)


def playout(events: Iterable[tuple[float, str, bytes]], start: float, sample_rate: int) -> bytes:
    """The bot channel as heard: ``events`` are ``(monotonic time, kind, audio)`` of received media messages
    (``AudioData`` / ``StopAudio``); ``start`` is time zero of the channel."""
    out = bytearray()
    cursor = 0  # samples
    for at, kind, audio in events:
        arrival = max(0, round((at - start) * sample_rate))
        if kind == "AudioData" and audio:
            position = max(cursor, arrival)
            if position > len(out) // 2:
                out += bytes(2 * position - len(out))
            out[2 * position :] = audio
            cursor = position + len(audio) // 2
        elif kind == "StopAudio" and cursor > arrival:
            del out[2 * arrival :]
            cursor = arrival
    return bytes(out)


def read_wav(path: str | Path, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV file as mono 16-bit PCM at ``sample_rate`` (channels averaged, rate converted)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = wav.readframes(wav.getnframes())
    samples = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype("<i2")
    if rate == sample_rate:
        return samples.tobytes()
    resampler = Resampler(rate, sample_rate)
    out = resampler.process(samples.tobytes()) + resampler.flush()
    skip = round(resampler.delay_ms * sample_rate / 1000)  # drop the filter delay: time-aligned
    return out[2 * skip : 2 * (skip + round(samples.size * sample_rate / rate))]


def write_wav(path: str | Path, sample_rate: int, *channels: bytes) -> float:
    """Write 16-bit PCM channels (shorter ones padded with silence) as one WAV; returns its duration (s)."""
    arrays = [np.frombuffer(c[: len(c) // 2 * 2], dtype="<i2") for c in channels]
    length = max((a.size for a in arrays), default=0)
    frames = np.zeros((length, len(arrays)), dtype="<i2")
    for index, array in enumerate(arrays):
        frames[: array.size, index] = array
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(len(arrays))
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(frames.tobytes())
    return length / sample_rate
