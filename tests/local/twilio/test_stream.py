"""The Twilio stand-in's Media Stream: the caller's media as Twilio paces and numbers it, key presses, the playout
model (marks echoed once played, at once when nothing is queued, all of them on clear), skipped junk, and
`run_script` on a Twilio call."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import time
from collections.abc import AsyncIterator, Callable

import pytest

from callbot.audio import pcm16_to_ulaw, ulaw_to_pcm16
from callbot.local.caller.messages import CALLER_HUNG_UP
from callbot.local.caller.simulator import Transcript, Turn, run_script
from callbot.local.twilio import TwilioCall, TwilioNetwork
from tests.local.twilio.peer import PeerStream, running_peer

TOKEN = "fedcba9876543210fedcba9876543210"


def tone(seconds: float, frequency: float = 440.0, amplitude: int = 8000) -> bytes:
    """16-bit PCM at 8 kHz."""
    n = round(seconds * 8000)
    return struct.pack(f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * frequency * i / 8000))
                                   for i in range(n)))  # fmt: skip


def media(stream_sid: str, mulaw: bytes) -> dict[str, object]:
    return {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(mulaw).decode()}}


async def until(call: TwilioCall, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():
            call.changed.clear()
            await call.changed.wait()


@pytest.fixture
async def placed() -> AsyncIterator[tuple[TwilioCall, PeerStream]]:
    async with running_peer(TOKEN) as peer, TwilioNetwork(auth_token=TOKEN) as network:
        call = await network.place_call(peer.url)
        stream = await peer.next_stream()
        await stream.next("start")
        yield call, stream


async def test_the_line_sends_160_byte_mulaw_frames_every_20_ms_numbered_like_twilio(
        placed: tuple[TwilioCall, PeerStream]) -> None:  # fmt: skip
    call, stream = placed
    call.start_line()
    speech = tone(0.3)
    said = asyncio.create_task(call.say(speech))
    frames = [await stream.next("media") for _ in range(50)]
    arrived = time.monotonic()
    await said
    payloads = [base64.b64decode(f["media"]["payload"]) for f in frames]
    assert all(len(p) == 160 for p in payloads)
    assert [f["media"]["chunk"] for f in frames] == [str(i) for i in range(1, 51)]
    assert [f["sequenceNumber"] for f in frames] == [str(i) for i in range(2, 52)]  # start was 1
    stamps = [int(f["media"]["timestamp"]) for f in frames]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [20] * 49
    assert {f["media"]["track"] for f in frames} == {"inbound"} and {f["streamSid"] for f in frames} == {
        call.stream_sid}
    spoken = [p for p in payloads if p != b"\xff" * 160]
    assert b"".join(spoken) == pcm16_to_ulaw(speech)  # the caller's speech, G.711-encoded, frame-aligned
    assert payloads.count(b"\xff" * 160) == 35  # mu-law silence, never 0x00
    assert arrived - call.line_started_at >= 49 * 0.02 - 0.01  # real time: 50 frames take 49 frame periods


async def test_a_key_press_is_a_dtmf_message(placed: tuple[TwilioCall, PeerStream]) -> None:
    call, stream = placed
    await call.press_key("5")
    message = await stream.next("dtmf")
    assert message["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert message["streamSid"] == call.stream_sid and message["sequenceNumber"] == "2"


async def test_a_mark_is_echoed_once_the_audio_before_it_has_played(placed: tuple[TwilioCall, PeerStream]) -> None:
    call, stream = placed
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "idle"}})
    assert (await stream.next("mark"))["mark"] == {"name": "idle"}  # nothing queued: echoed at once
    audio = pcm16_to_ulaw(tone(1.0))
    for offset in range(0, len(audio), 800):  # 100 ms messages, all at once (faster than real time)
        await stream.send(media(call.stream_sid, audio[offset:offset + 800]))
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "after-1s"}})
    sent = time.monotonic()
    echo = await stream.next("mark")
    assert echo["mark"] == {"name": "after-1s"} and echo["streamSid"] == call.stream_sid
    assert time.monotonic() - sent >= 0.9  # it played (in real time) first
    played = [r for r in call.received if r.kind == "AudioData"]
    assert len(played) == 50 and b"".join(r.audio for r in played) == ulaw_to_pcm16(audio)
    starts = [r.at for r in played]
    assert all(b - a == pytest.approx(0.02, abs=1e-6) for a, b in zip(starts, starts[1:], strict=False))
    assert [name for _, name in call.echoed] == ["idle", "after-1s"]


async def test_clear_drops_the_queued_audio_and_echoes_pending_marks_at_once(
        placed: tuple[TwilioCall, PeerStream]) -> None:  # fmt: skip
    call, stream = placed
    await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(3.0))))
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "m1"}})
    await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(1.0))))
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "m2"}})
    await until(call, lambda: len(call.marks) == 2 and any(r.kind == "AudioData" for r in call.received))
    await stream.send({"event": "clear", "streamSid": call.stream_sid})
    assert [(await stream.next("mark"))["mark"]["name"] for _ in range(2)] == ["m1", "m2"]
    stop = next(r for r in call.received if r.kind == "StopAudio")
    played = [r for r in call.received if r.kind == "AudioData"]
    assert len(played) < 100 and all(r.at <= stop.at for r in played)  # the rest of the 4 s never played
    assert call.playout.queued_bytes == 0 and not call.playout.pending_marks
    await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(0.1))))  # later audio plays again
    await until(call, lambda: call.received[-1].kind == "AudioData" and call.received[-1].at > stop.at)


async def test_once_the_stream_stops_nothing_queued_plays_and_no_mark_is_echoed(
        placed: tuple[TwilioCall, PeerStream]) -> None:  # fmt: skip
    call, stream = placed
    await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(3.0))))
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "after-3s"}})
    await until(call, lambda: len(call.marks) == 1 and any(r.kind == "AudioData" for r in call.received))
    await call.stop_stream("transferred to +14255550100")  # the call was redirected, as for a transfer
    await stream.next("stop")
    await asyncio.sleep(0.2)  # ten frame periods: the rest of the 3 s would go on playing
    assert call.ended_at is not None
    played = [r for r in call.received if r.kind == "AudioData"]
    assert played and all(r.at <= call.ended_at for r in played), "nothing played after the stream stopped"
    assert call.playout.queued_bytes == 0 and call.echoed == [] and call.playout.cleared == 0
    call.playout.media(pcm16_to_ulaw(tone(0.1)))  # what was still in flight on the socket: the stream is over
    call.playout.mark("late")
    call.playout.clear()
    await asyncio.sleep(0.1)
    assert call.playout.queued_bytes == 0 and call.echoed == [] and call.playout.cleared == 0
    assert [r for r in call.received if r.kind == "AudioData"] == played and not call.playout.pending_marks


async def test_messages_that_are_not_twilios_are_skipped_and_counted(placed: tuple[TwilioCall, PeerStream]) -> None:
    call, stream = placed
    for junk in ("not json", "[1, 2]", {"event": "media", "streamSid": call.stream_sid, "media": {"payload": "!!"}},
                 {"event": "bogus", "streamSid": call.stream_sid}, {"event": "clear", "streamSid": "MZother"},
                 {"event": "mark", "streamSid": call.stream_sid}):  # fmt: skip
        await stream.send(junk)
    await stream.ws.send_bytes(b"\x00\x01")
    await stream.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "still-here"}})
    assert (await stream.next("mark"))["mark"]["name"] == "still-here"
    assert call.malformed == 7 and not call.ended.is_set() and call.playout.cleared == 0


async def test_the_caller_hanging_up_sends_stop_and_closes_the_stream(placed: tuple[TwilioCall, PeerStream]) -> None:
    call, stream = placed
    call.start_line()
    await stream.next("media")
    await call.hang_up()
    await stream.next("stop")
    await asyncio.wait_for(stream.closed.wait(), 10)
    assert call.end_reason == CALLER_HUNG_UP and call.network.rest.calls[call.call_sid].status == "completed"


async def _bot(call: TwilioCall, stream: PeerStream, replies: list[float]) -> None:
    """A bot on the peer: a greeting, then after each caller utterance a reply of the given length; speech from the
    caller while a reply plays clears it (barge-in)."""
    await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(0.4, 300))))
    loud, quiet, speaking_until = 0, 0, 0.0
    while replies:
        message = await stream.next("media", timeout=30)
        is_loud = base64.b64decode(message["media"]["payload"]) != b"\xff" * 160
        loud, quiet = (loud + 1, 0) if is_loud else (loud, quiet + 1)
        if is_loud and loud == 3 and time.monotonic() < speaking_until:
            await stream.send({"event": "clear", "streamSid": call.stream_sid})
        if loud and quiet == 10:  # 200 ms after the caller stopped: answer
            seconds = replies.pop(0)
            speaking_until = time.monotonic() + seconds
            await stream.send(media(call.stream_sid, pcm16_to_ulaw(tone(seconds, 300))))
            loud = 0


async def test_run_script_plays_a_call_over_twilio_with_replies_and_a_barge_in(
        placed: tuple[TwilioCall, PeerStream]) -> None:  # fmt: skip
    call, stream = placed
    bot = asyncio.create_task(_bot(call, stream, [0.6, 3.0, 0.5]))
    turns = [Turn("one", audio=tone(0.5)), Turn("two", audio=tone(0.5)), Turn("three", audio=tone(0.5),
                                                                               barge_in_s=0.8)]
    report = await run_script(call, turns, transcript=Transcript(call.connected_at), greeting_wait_s=5)
    await asyncio.wait_for(bot, 10)
    assert report.greeting is not None and all(t.answered for t in report.turns)
    barge = report.turns[2]
    assert barge.stop_at is not None and barge.stopped_bot
    assert report.ok
