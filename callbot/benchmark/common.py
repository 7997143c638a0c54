"""What the load processes share: the frame tags, the scenario constants and the child-process plumbing.

Frame tags. Every caller frame starts with a 15-byte tag (call index, sequence number, send time in microseconds of
CLOCK_MONOTONIC, which is system-wide on Linux, so the other process can subtract it); every bot frame with an 18-byte
tag (call index, response number, frame index, send time of the delta that carried it). Both lengths are multiples of
3, so a frame's base64 is the tag's base64 followed by the (precomputed) base64 of the rest: no per-frame encoding of
the whole frame. callbot forwards caller audio as the same base64 text and re-frames bot audio on the same 20 ms
boundaries (every response starts on a frame boundary and every delta is whole frames), so each tag survives the trip.

Child processes talk JSON lines: commands on stdin, events on stdout; large results go to a file named in the config.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import re
import resource
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson

SAMPLE_RATE = 24000  # callbot's default media format (pcm24k); Voice Live's pcm16 output is 24 kHz too
FRAME_BYTES = SAMPLE_RATE * 2 // 50
FRAME_S = 0.02
LEAD_FRAMES = 6  # callbot's default playback lead (120 ms) in frames: released at once when a response starts
SETTLE_FRAMES = 10  # bot frames of a response before pacing is judged (the lead burst and the first deltas)
LATE_S = 0.040  # a caller frame forwarded later than this, or a bot frame this far behind its pace, is late
DELTA_FRAMES = 5  # 100 ms of audio per response.audio.delta
DELTA_INTERVAL_S = 0.02  # ... sent every 20 ms: five times faster than real time, like the service
RESPONSE_S = 3.0  # bot answer length without barge-in
PAUSE_S = 1.0  # silence after an answer has played (without barge-in)
BARGE_EXTRA_S = 2.0  # with barge-in every T s: answers last T + this, so the bot is always cut mid-sentence
RESUME_S = 0.4  # after a barge-in: speech_stopped, then the next answer
API_KEY_HEADER = "api-key"

_CALLER_TAG = struct.Struct("<HIQx")  # call, seq, sent_us  (15 bytes -> 20 base64 chars)
_BOT_TAG = struct.Struct("<HHIQxx")  # call, response, frame, delta_sent_us  (18 bytes -> 24 base64 chars)
CALLER_TAG_CHARS = 20
BOT_TAG_CHARS = 24
FRAME_B64_CHARS = FRAME_BYTES * 4 // 3  # a frame's base64 (960 bytes, a multiple of 3: no padding)
assert _CALLER_TAG.size == 15 and _BOT_TAG.size == 18 and FRAME_BYTES % 3 == 0


def speaking_us(first_us: int, frames: int, barged_us: int | None, t0: int, t1: int) -> int:
    """How long one answer played inside the window [t0, t1): its frames at the real-time pace from its first delta,
    cut where a barge-in stopped it (microseconds)."""
    end = first_us + round(frames * FRAME_S * 1e6)
    if barged_us is not None:
        end = min(end, barged_us)
    return max(0, min(end, t1) - max(first_us, t0))


class BenchError(RuntimeError):
    """The benchmark could not run (a process did not start, a call could not be placed, ...)."""


_URL_SECRET = re.compile(r"([?&](?:secret|token)=)[^&\s'\"]+", re.IGNORECASE)


def describe(exc: BaseException) -> str:
    """A short description of a failure, safe to show: no URL secrets (webhook secret, per-call tokens)."""
    status = getattr(exc, "status", None)
    text = f"HTTP {status}" if isinstance(status, int) else _URL_SECRET.sub(r"\1<redacted>", str(exc))
    return f"{type(exc).__name__}: {text[:300]}"


def now_us() -> int:
    return int(time.monotonic() * 1_000_000)


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def tone_body(length: int, period: int = 55) -> bytes:
    """`length` bytes of a quiet square-ish wave (the content is irrelevant; it is not silence)."""
    sample = struct.pack("<h", 800) * (period // 2) + struct.pack("<h", -800) * (period - period // 2)
    raw = sample * (length // len(sample) + 1)
    return raw[:length]


CALLER_BODY_B64 = _b64(tone_body(FRAME_BYTES - _CALLER_TAG.size))
BOT_BODY_B64 = _b64(tone_body(FRAME_BYTES - _BOT_TAG.size, period=91))


def caller_frame_b64(call: int, seq: int, sent_us: int) -> str:
    return _b64(_CALLER_TAG.pack(call, seq, sent_us)) + CALLER_BODY_B64


def read_caller_tag(b64: str) -> tuple[int, int, int]:
    """(call, seq, sent_us) from a caller frame's base64 (raises binascii.Error / struct.error if not tagged)."""
    call, seq, sent_us = _CALLER_TAG.unpack(binascii.a2b_base64(b64[:CALLER_TAG_CHARS]))
    return call, seq, sent_us


def read_caller_tags(b64: str, frame_bytes: int) -> list[tuple[int, int, int]]:
    """Every caller frame's (call, seq, sent_us) in an append of one or more `frame_bytes` frames
    (CALLBOT_MODEL_APPEND_MS 40 joins two); raises binascii.Error / struct.error if not tagged."""
    if len(b64) * 3 // 4 <= frame_bytes:
        return [read_caller_tag(b64)]
    raw = binascii.a2b_base64(b64)
    return [_CALLER_TAG.unpack_from(raw, at) for at in range(0, len(raw), frame_bytes)]


def bot_frames_b64(call: int, response: int, first_frame: int, count: int, sent_us: int) -> str:
    """`count` tagged bot frames as one base64 string (a response.audio.delta payload)."""
    pack = _BOT_TAG.pack
    return "".join(_b64(pack(call, response, first_frame + i, sent_us)) + BOT_BODY_B64 for i in range(count))


MULAW_FRAME_BYTES = 160  # Twilio's 20 ms of mu-law 8 kHz: not a multiple of 3, so frames are base64-encoded whole
MULAW_CALLER_BODY = tone_body(MULAW_FRAME_BYTES - _CALLER_TAG.size)
MULAW_BOT_BODY = tone_body(MULAW_FRAME_BYTES - _BOT_TAG.size, period=91)


def caller_frame_mulaw(call: int, seq: int, sent_us: int) -> str:
    """A tagged 160-byte caller frame's base64 (its first 20 characters are the tag's, as for PCM frames)."""
    return _b64(_CALLER_TAG.pack(call, seq, sent_us) + MULAW_CALLER_BODY)


def bot_frames_mulaw(call: int, response: int, first_frame: int, count: int, sent_us: int) -> str:
    """`count` tagged 160-byte bot frames as one base64 string (a g711_ulaw response.audio.delta payload)."""
    pack = _BOT_TAG.pack
    return _b64(b"".join(pack(call, response, first_frame + i, sent_us) + MULAW_BOT_BODY for i in range(count)))


def read_bot_tags(raw: bytes, frame_bytes: int) -> list[tuple[int, int, int, int]]:
    """The tags of the whole frames in decoded bot audio (a Twilio media payload)."""
    size = _BOT_TAG.size
    return [_BOT_TAG.unpack(raw[i:i + size]) for i in range(0, len(raw) - size + 1, frame_bytes)]


def read_bot_tag(b64: str) -> tuple[int, int, int, int]:
    """(call, response, frame, delta_sent_us) from a bot frame's base64."""
    call, response, frame, sent_us = _BOT_TAG.unpack(binascii.a2b_base64(b64[:BOT_TAG_CHARS]))
    return call, response, frame, sent_us


# -- child processes -------------------------------------------------------------------------------------------


def emit(kind: str, **fields: Any) -> None:
    """One event line on stdout for the orchestrator."""
    sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
    sys.stdout.flush()


async def commands() -> AsyncIterator[dict[str, Any]]:
    """The orchestrator's commands (JSON lines on stdin) until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = orjson.loads(line)
        if isinstance(command, dict):
            yield command


def raise_file_limit() -> None:
    """Hundreds of calls need more sockets than a default soft limit of 1024; children inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_child(main: Callable[[dict[str, Any]], Coroutine[Any, Any, None]]) -> None:
    """Entry point of a load process: config is argv[1] (JSON); runs on uvloop when it is installed."""
    config = orjson.loads(sys.argv[1])
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(config))
    else:
        uvloop.run(main(config))


def write_result(path: str, result: dict[str, Any]) -> None:
    with open(path, "wb") as fh:
        fh.write(orjson.dumps(result))
