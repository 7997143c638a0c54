"""What `CALLBOT_TWILIO_MODEL_AUDIO` costs: the round-trip quality of the `pcm16` mode's conversion, and the adapter's
CPU per call-second in each mode. `python -m callbot.benchmark.g711_quality [--seconds 60]`.

Quality: a chirp (100 Hz to 3.6 kHz, -6 dBFS) and offline-TTS speech (`callbot.local.speech.tts`, espeak-ng at 8 kHz) as
mu-law go through decode -> resample 8k->24k -> resample 24k->8k -> encode (the path a caller's audio would take if
the model echoed it back in `pcm16` mode), and are compared with the original: SNR of the decoded round trip against
the decoded original (aligned by the resamplers' group delay), and the share of mu-law bytes that come back
identical. `g711_ulaw` passes bytes through: byte-exact by construction.

CPU: the adapter's own path for a long synthetic call (every 20 ms a Twilio `media` message parsed into what goes to
the model, and a 20 ms bot frame turned into `media` + `mark`), `time.process_time` per call-second, the two modes
alternated ABAB in one run so that a noisy neighbour touches both alike.
"""

from __future__ import annotations

import argparse
import base64
import math
import sys
import time

import numpy as np
import orjson

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.twilio.adapter import TwilioTransport

RATE = 8000
SPEECH = ("Thank you for calling. Our opening hours are nine to six, Monday to Saturday. "
          "Would you like me to look up an order for you?")


def chirp(seconds: float = 3.0, f0: float = 100.0, f1: float = 3600.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t)
    return bytes(pcm16_to_ulaw((0.5 * 32767 * np.sin(phase)).astype("<i2").tobytes()))


def speech() -> bytes:
    from callbot.local.speech.tts import Speaker

    return bytes(pcm16_to_ulaw(Speaker().synthesize(SPEECH, sample_rate=RATE)))


def round_trip(ulaw: bytes) -> bytes:
    """decode -> 8k->24k -> 24k->8k -> encode, streaming in 20 ms frames as the adapter does."""
    up, down = Resampler(RATE, 24000), Resampler(24000, RATE)
    out = bytearray()
    for i in range(0, len(ulaw), 160):
        out += pcm16_to_ulaw(down.process(up.process(ulaw_to_pcm16(ulaw[i:i + 160]))))
    out += pcm16_to_ulaw(down.process(up.flush()) + down.flush())
    return bytes(out)


def quality(ulaw: bytes) -> tuple[float, float]:
    """(SNR dB of the decoded round trip against the decoded original, % of mu-law bytes identical)."""
    back = round_trip(ulaw)
    delay = round((Resampler(RATE, 24000).delay_ms + Resampler(24000, RATE).delay_ms) * RATE / 1000)
    a = np.frombuffer(ulaw_to_pcm16(ulaw), "<i2").astype(np.float64)
    b = np.frombuffer(ulaw_to_pcm16(back[delay:delay + len(ulaw)]), "<i2").astype(np.float64)
    n = min(a.size, b.size)
    noise = float(np.sum((a[:n] - b[:n]) ** 2))
    snr = 10 * math.log10(float(np.sum(a[:n] ** 2)) / noise) if noise else math.inf
    same = 100.0 * sum(x == y for x, y in zip(ulaw[:n], back[delay:delay + n], strict=False)) / n
    return snr, same


def cpu_per_call_second(mode: str, seconds: float) -> float:
    """ms of CPU the adapter spends per second of call (caller in and bot out, 50 frames a second each way)."""
    t = TwilioTransport("bench", mode)  # type: ignore[arg-type]
    start = orjson.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                               "channels": 1}}}).decode()
    t.parse(start)
    ulaw = chirp(1.0)
    frames_in = [orjson.dumps({"event": "media", "streamSid": "MZ1", "media": {
        "track": "inbound", "chunk": str(i), "timestamp": str(i * 20),
        "payload": base64.b64encode(ulaw[i * 160:(i + 1) * 160]).decode()}}).decode() for i in range(50)]
    bot = ulaw[:160] if mode == "g711_ulaw" else Resampler(RATE, 24000).process(ulaw_to_pcm16(ulaw[:160]))
    n = int(seconds * 50)
    began = time.process_time()
    for i in range(n):
        t.parse(frames_in[i % 50])
        t.audio_message(bot)
    return (time.process_time() - began) * 1000 / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="synthetic call length per CPU run")
    parser.add_argument("--rounds", type=int, default=3, help="ABAB rounds")
    args = parser.parse_args(argv)
    for name, audio in (("chirp 100 Hz-3.6 kHz", chirp()), ("speech (espeak-ng, 8 kHz)", speech())):
        snr, same = quality(audio)
        sys.stdout.write(f"pcm16 round trip, {name}: SNR {snr:.1f} dB against the decoded original, "
                         f"{same:.1f} % of mu-law bytes identical; g711_ulaw: byte-exact\n")
    runs: dict[str, list[float]] = {"g711_ulaw": [], "pcm16": []}
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode].append(cpu_per_call_second(mode, args.seconds))
    for mode, values in runs.items():
        sys.stdout.write(f"adapter CPU, {mode}: {min(values):.3f} ms per call-second (best of {len(values)}; "
                         f"runs {', '.join(f'{v:.3f}' for v in values)})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
