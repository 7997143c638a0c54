"""The caller's speech on a simulated line: cut into frames, resolved with its timings after its last frame."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from callbot.local.caller.line import Utterances
from callbot.local.caller.messages import PhoneError

FRAME = 320  # 20 ms of 16-bit PCM at 8 kHz


def loud(frames: int) -> bytes:
    t = np.arange(frames * FRAME // 2) / 8000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


async def test_an_utterance_goes_out_frame_by_frame_and_resolves_after_its_last_frame_with_where_speech_was() -> None:
    speech = Utterances()
    pcm = bytes(2 * FRAME) + loud(3) + bytes(FRAME) + b"\x01\x00" * 10  # a short last frame
    done = speech.add(pcm)
    frames, sent_at = [], []
    while (frame := speech.next_frame(FRAME)) is not None:
        assert not done.done()
        frames.append(frame)
        await asyncio.sleep(0.002)
        speech.sent()
        sent_at.append(asyncio.get_running_loop().time())
    assert b"".join(frames) == pcm and len(frames) == 7 and len(frames[-1]) == 20
    utterance = done.result()
    assert utterance.started_at < utterance.speech_at < utterance.speech_end_at < utterance.ended_at
    # speech is frames 2-4: it starts when frame 2 went out and ends when frame 4 did
    assert utterance.speech_end_at - utterance.speech_at == pytest.approx(sent_at[4] - sent_at[2], abs=1e-3)
    assert speech.next_frame(FRAME) is None  # nothing more to say: the line sends silence


async def test_utterances_play_in_order_and_those_not_sent_fail_when_the_line_stops() -> None:
    speech = Utterances()
    first, second, third = speech.add(loud(1)), speech.add(loud(2)), speech.add(loud(1))
    assert speech.next_frame(FRAME) is not None
    speech.sent()
    assert first.done() and not second.done()
    assert speech.next_frame(FRAME) is not None  # half of the second
    speech.fail()
    for future in (second, third):
        with pytest.raises(PhoneError, match="ended before the utterance was sent"):
            future.result()
    assert first.exception() is None and speech.next_frame(FRAME) is None


async def test_say_fails_in_words_when_the_line_does_not_send_the_speech_in_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callbot.local.caller.line.SAY_MARGIN_S", 0.05)
    speech = Utterances()  # no line takes its frames: a stalled socket
    with pytest.raises(PhoneError, match=r"did not send the caller's speech in time \(media socket stalled\)"):
        await speech.say(loud(1), 8000, "media")
