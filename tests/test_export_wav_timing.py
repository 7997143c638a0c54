"""`callbot export-wav` places caller frames where they were spoken, even after a delivery stall (issue 13, item 6)."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from callbot.acs import media
from callbot.cli import main
from callbot.local.acs.network import audio_message
from callbot.local.voicelive.protocol import tone
from callbot.recording import FORMAT, VERSION
from callbot.wav_timeline import place_caller

RATE = 16000
FRAME_MS = 20
LATENCY_MS = 5  # a frame arrives this long after its last sample was spoken
SPEECH = (50, 80)  # caller frames [50, 80) are speech: spoken from 1000 ms to 1600 ms
STALL = (900.0, 1200.0)  # frames due in this window arrive together at its end (a delivery stall)
STOP_MS = 1300.0  # callbot's StopAudio: Voice Live heard the barge-in once the burst had arrived


def due_ms(frame: int) -> float:
    """When caller frame ``frame`` arrives without a stall (it is sent once its 20 ms are spoken)."""
    return FRAME_MS * (frame + 1) + LATENCY_MS


def line(t: float, direction: str, text: str) -> bytes:
    return orjson.dumps({"t": round(t, 3), "dir": direction, "kind": orjson.loads(text)["kind"], "text": text})


def stalled_barge_in(path: Path) -> None:
    """A recording: the bot answers from 0 s; the caller barges in at 1.0 s, during a 300 ms stall of the caller's
    frames; callbot stops the bot at 1.3 s. Caller speech is a 220 Hz tone, the bot a 660 Hz one."""
    records: list[tuple[float, bytes]] = []
    speech = tone(FRAME_MS * (SPEECH[1] - SPEECH[0]), "pcm16_16000hz", frequency=220.0)
    frame_bytes = RATE * FRAME_MS // 1000 * 2
    for frame in range(100):
        inside = SPEECH[0] <= frame < SPEECH[1]
        pcm = speech[(frame - SPEECH[0]) * frame_bytes : (frame - SPEECH[0] + 1) * frame_bytes] if inside else bytes(
            frame_bytes)  # fmt: skip
        due = due_ms(frame)
        arrival = STALL[1] + frame * 0.01 if STALL[0] <= due < STALL[1] else due  # the burst: back to back
        records.append((arrival, line(arrival, "acs_in", audio_message(pcm))))
    answer = tone(2000, "pcm16_16000hz", frequency=660.0)
    for index in range(round(STOP_MS) // FRAME_MS):
        sent = FRAME_MS * index
        chunk = answer[index * frame_bytes : (index + 1) * frame_bytes]
        records.append((sent + 0.5, line(sent + 0.5, "acs_out", media.encode_audio_bytes(chunk))))
    records.append((STOP_MS, line(STOP_MS, "acs_out", media.STOP_AUDIO)))
    header = orjson.dumps({"format": FORMAT, "version": VERSION, "call_id": "stall",
                           "settings": {"callbot_media_format": "pcm16k"}})  # fmt: skip
    path.write_bytes(b"\n".join([header, *(data for _, data in sorted(records, key=lambda r: r[0]))]) + b"\n")


def read_wav(path: Path) -> np.ndarray[Any, Any]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)


def loud_ms(channel: np.ndarray[Any, Any]) -> tuple[float, float]:
    """First and last sample above a speech level, in ms."""
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > 1000)
    return loud[0] * 1000 / RATE, (loud[-1] + 1) * 1000 / RATE


def test_after_a_caller_stall_the_wav_shows_the_barge_in_before_the_bot_stops_at_the_right_times(
    tmp_path: Path,
) -> None:
    recording, out = tmp_path / "stall.jsonl", tmp_path / "stall.wav"
    stalled_barge_in(recording)
    assert main(["export-wav", str(recording), str(out)]) == 0
    samples = read_wav(out)
    caller_start, caller_end = loud_ms(samples[:, 0])
    _, bot_end = loud_ms(samples[:, 1])
    # a frame that came on time starts at its arrival; the stalled ones where they would have arrived
    spoken_start, spoken_end = due_ms(SPEECH[0]), due_ms(SPEECH[1] - 1) + FRAME_MS
    assert abs(bot_end - STOP_MS) <= 20, f"the bot stops at {bot_end:.0f} ms, StopAudio was at {STOP_MS:.0f} ms"
    assert caller_start < bot_end, f"the caller barged in at {caller_start:.0f} ms, after the bot stopped"
    assert abs((bot_end - caller_start) - (STOP_MS - spoken_start)) <= 20, "the barge-in offset is kept"
    assert abs(caller_start - spoken_start) <= 20, f"caller speech starts at {caller_start:.0f} ms"
    assert abs(caller_end - spoken_end) <= 20, f"after the stall the caller is late: {caller_end:.0f} ms"
    assert round((caller_end - caller_start) / FRAME_MS) == SPEECH[1] - SPEECH[0], "every speech frame, once"


def test_caller_frames_never_start_after_their_arrival_never_overlap_and_a_pause_in_sending_stays_a_pause() -> None:
    rng = np.random.default_rng(3)
    arrivals = [due_ms(i) + rng.uniform(0, 8) for i in range(150)]  # jitter
    arrivals[40:55] = [arrivals[54] + 0.01 * k for k in range(15)]  # a stall: 15 frames in one burst
    arrivals[100:] = [t + 1000 for t in arrivals[100:]]  # the caller sent nothing for a second
    frame = bytes(RATE * FRAME_MS // 1000 * 2)
    placed = place_caller([(t, frame) for t in arrivals], RATE)
    starts = [start * 1000 / RATE for start, _ in placed]
    assert all(start <= t + 1000 / RATE for start, t in zip(starts, arrivals, strict=True)), "never after arrival"
    assert all(b - a >= FRAME_MS for a, b in zip(starts, starts[1:], strict=False)), "back to back at most"
    assert all(abs(starts[i] - due_ms(i)) <= 8 for i in range(40, 55)), "the burst goes back where it was due"
    assert starts[100] - (starts[99] + FRAME_MS) >= 1000 - 8, "the pause is kept"
