"""A recorded call as a two-channel WAV, as the caller heard it (`callbot export-wav`, `callbot replay --wav`)."""

from __future__ import annotations

import argparse
import binascii
import sys
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callbot.audio import ulaw_to_pcm16
from callbot.bridge.transport import CallerAudio
from callbot.recording import ACS_IN, ACS_OUT, Recording, RecordingError, load_recording
from callbot.replay import Message, recorded_messages, recording_transport
from callbot.wav_timeline import place_bot, place_caller


@dataclass
class WavSummary:
    path: Path
    sample_rate: int
    seconds: float
    caller_frames: int
    bot_frames: int
    cuts: int  # StopAudio messages that cut the bot channel


def _ulaw_b64(b64: str) -> bytes:
    return ulaw_to_pcm16(binascii.a2b_base64(b64))


def render(recording: Recording, bot: Sequence[Message] | None = None) -> tuple[np.ndarray[Any, Any], int, int, int]:
    """(samples x 2 int16: caller left, bot right), caller frames, bot frames, cuts. `bot` defaults to the recorded
    outbound messages (pass a replay's messages to hear the current code). A Twilio call is exported as its wire
    carried it, mu-law 8 kHz decoded to 16-bit PCM, in either model-audio mode."""
    transport = recording_transport(recording)
    if recording.transport == "twilio":
        decode: Callable[[str], bytes] = _ulaw_b64
        caller = [(r.t, decode(str(body["audioData"]["data"]))) for r in recording.records
                  if r.dir == ACS_IN and (raw := r.media()) is not None
                  and (body := transport.describe(raw)).get("kind") == "AudioData"]
    else:
        decode = binascii.a2b_base64
        caller = [(r.t, decode(a.b64)) for r in recording.records
                  if r.dir == ACS_IN and (raw := r.media()) is not None
                  and isinstance(a := transport.parse(raw), CallerAudio)]
    sent: list[tuple[float, bytes | None]] = [
        (m.t, None if m.kind == "StopAudio" else decode(str(m.body["audioData"]["data"])))
        for m in (recorded_messages(recording) if bot is None else bot)
        if m.channel == ACS_OUT and m.kind in ("StopAudio", "AudioData")]
    rate = recording.sample_rate
    channels = (place_caller(caller, rate), place_bot(sent, rate))
    total = max((s + len(p) // 2 for segs in channels for s, p in segs), default=0)
    out = np.zeros((total, 2), dtype="<i2")
    for index, segments in enumerate(channels):
        for start, pcm in segments:
            samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
            out[start:start + len(samples), index] = samples
    return out, len(caller), sum(1 for _, p in sent if p is not None), sum(1 for _, p in sent if p is None)


def export_wav(recording: Recording, out: str | Path, *, bot: Sequence[Message] | None = None) -> WavSummary:
    """Write what the caller heard as a two-channel 16-bit WAV (caller left, bot right). Blocking file I/O."""
    samples, caller_frames, bot_frames, cuts = render(recording, bot)
    path = Path(out)
    with wave.open(str(path), "wb") as wav:
        wav.setparams((2, 2, recording.sample_rate, 0, "NONE", "not compressed"))
        wav.writeframes(samples.tobytes())
    rate = recording.sample_rate
    return WavSummary(path, rate, len(samples) / rate, caller_frames, bot_frames, cuts)


def wav_line(summary: WavSummary) -> str:
    return (f"wrote {summary.path}: {summary.seconds:.2f} s at {summary.sample_rate} Hz, caller left "
            f"({summary.caller_frames} frames), bot right ({summary.bot_frames} frames, {summary.cuts} cut(s))\n")


def cmd_export_wav(args: argparse.Namespace) -> int:
    try:
        recording = load_recording(args.file)
    except (OSError, RecordingError) as exc:
        sys.stderr.write(f"callbot: cannot read {args.file}: {exc}\n")
        return 2
    try:
        if not args.out.parent.is_dir():  # checked first: wave on Python 3.11 also prints an ignored error
            raise FileNotFoundError(f"the directory {args.out.parent} does not exist")
        summary = export_wav(recording, args.out)
    except OSError as exc:
        sys.stderr.write(f"callbot: cannot write {args.out}: {exc.strerror or exc}\n")
        return 2
    sys.stdout.write(wav_line(summary))
    return 0
