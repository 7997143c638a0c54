"""The caller's side of a simulated call: scripted turns on a live line, what came back, and the measurements.

A script is a list of `Turn`s (`callbot.local.caller.script`: say, pause, barge-in, press keys, expect an ending).

`run_script` plays it on a `SimulatedCall` line (one 20 ms frame every 20 ms, silence in between), groups the bot's
audio into bursts (a gap of 400 ms, or a StopAudio, ends one), prints a live transcript and measures: time to
answer, end of caller speech -> first bot audio per turn, and for barge-ins caller speech start -> StopAudio.
Given ``agent_heard`` (the local-only channel of `callbot.local.caller.heard`), it also shows what the agent heard
after each turn and judges it against what was said. Every wait is bounded, and the script stops as soon as
the call ends (callbot hung up or closed the media socket): the report says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callbot.local.caller.call import SimulatedCall
from callbot.local.caller.heard import AgentHeard, HeardTracker, heard_matches
from callbot.local.caller.messages import CALLBOT_HUNG_UP, PhoneError, Utterance
from callbot.local.caller.script import Turn, parse_script
from callbot.local.caller.telephone import TelephoneLeg, playout, write_wav

__all__ = ["BotMonitor", "Burst", "CallReport", "Transcript", "Turn", "TurnResult", "parse_script", "run_script"]

if TYPE_CHECKING:
    from callbot.local.speech import Speaker

BURST_GAP_S = 0.4
KEY_SPACING_S = 0.15  # between key presses, as a person types on a keypad
END_WAIT_S = 30.0  # an expected ending (transfer, hang-up) must come this long after the last reply at most
CALLER_VOICE = ("en-us", 175, 60)
"""The simulated caller's espeak voice, words per minute and pitch (recognised exactly by the stand-in)."""


def caller_speaker() -> Speaker:
    from callbot.local.speech import Speaker  # the 'local' extra

    return Speaker(CALLER_VOICE[0], rate_wpm=CALLER_VOICE[1], pitch=CALLER_VOICE[2])


@dataclass
class Burst:
    """Bot audio without a gap of `BURST_GAP_S`: one reply as the caller heard it."""

    start: float
    last: float
    audio: bytearray = field(default_factory=bytearray)
    stopped_at: float | None = None  # a StopAudio ended it


@dataclass
class TurnResult:
    turn: Turn
    utterance: Utterance
    reply: Burst | None = None
    stop_at: float | None = None  # barge-ins: the StopAudio that followed the caller's speech
    audio_after_stop: bool = False
    heard: str | None = None  # what the agent heard (None: not known)

    @property
    def recognised(self) -> bool | None:
        """Whether the agent heard what was said; None when unknown or not judged (recorded audio)."""
        if self.heard is None or self.turn.audio is not None or self.turn.keys is not None:
            return None
        return heard_matches(self.turn.text, self.heard)

    @property
    def answered(self) -> bool:
        return self.reply is not None

    @property
    def response_s(self) -> float | None:
        return None if self.reply is None else self.reply.start - self.utterance.speech_end_at

    @property
    def barge_in_s(self) -> float | None:
        return None if self.stop_at is None else self.stop_at - self.utterance.speech_at

    @property
    def stopped_bot(self) -> bool:
        return self.stop_at is not None and not self.audio_after_stop


class Transcript:
    """Timestamped lines (seconds since ``t0``), each passed to ``sink`` as it is added."""

    def __init__(self, t0: float, sink: Callable[[str], None] | None = None) -> None:
        self.t0 = t0
        self.sink = sink
        self.lines: list[str] = []

    def add(self, at: float, who: str, text: str) -> None:
        line = f"[{at - self.t0:6.2f}s] {who}{':' if who != '**' else ''} {text}"
        self.lines.append(line)
        if self.sink is not None:
            self.sink(line)


BotText = Callable[[Burst], Awaitable[str]]


class BotMonitor:
    """Groups the bot audio received on a call into bursts, live; `on_burst` runs (as a task) as each ends."""

    def __init__(self, call: SimulatedCall, on_burst: Callable[[Burst], Coroutine[Any, Any, None]] | None = None
                 ) -> None:  # fmt: skip
        self.call = call
        self.bursts: list[Burst] = []
        self._open: Burst | None = None
        self._index = 0
        self._on_burst = on_burst
        self._tasks: list[asyncio.Task[None]] = []

    def scan(self, now: float) -> None:
        received = self.call.received
        while self._index < len(received):
            r = received[self._index]
            self._index += 1
            if r.kind == "AudioData":
                if self._open is not None and r.at - self._open.last > BURST_GAP_S:
                    self._close()
                if self._open is None:
                    self._open = Burst(r.at, r.at)
                    self.bursts.append(self._open)
                self._open.last = r.at
                self._open.audio += r.audio
            elif r.kind == "StopAudio" and self._open is not None:
                self._open.stopped_at = r.at
                # StopAudio flushes what the phone had buffered: the burst is what played until then
                heard = 2 * max(0, round((r.at - self._open.start) * self.call.sample_rate))
                del self._open.audio[heard:]
                self._close()
        if self._open is not None and now - self._open.last > BURST_GAP_S:
            self._close()

    def _close(self) -> None:
        burst, self._open = self._open, None
        if burst is not None and self._on_burst is not None:
            self._tasks.append(asyncio.create_task(self._on_burst(burst)))

    async def run(self) -> None:
        while True:
            self.scan(time.monotonic())
            await asyncio.sleep(0.02)

    async def finish(self) -> None:
        self.scan(time.monotonic())
        self._close()
        await asyncio.gather(*self._tasks)

    @property
    def quiet_since(self) -> float | None:
        """When the bot went quiet (None: speaking)."""
        if self._open is not None:
            return None
        return self.bursts[-1].last if self.bursts else 0.0

    async def wait_reply(self, after: float, timeout: float) -> Burst | None:  # noqa: ASYNC109
        """The first burst starting after ``after`` (waiting up to ``timeout`` s for it); None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((b for b in self.bursts if b.start >= after), None)
            if found is not None or time.monotonic() >= deadline or self.call.ended.is_set():
                return found
            await asyncio.sleep(0.02)

    async def wait_quiet(self, quiet_s: float, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Until the bot has been silent for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.call.ended.is_set():
            since = self.quiet_since
            if since is not None and time.monotonic() - since >= quiet_s:
                return
            await asyncio.sleep(0.02)


@dataclass
class CallReport:
    call: SimulatedCall
    turns: list[TurnResult]
    bursts: list[Burst]
    transcript: Transcript
    greeting: Burst | None
    planned: int = 0  # turns in the script
    ended_early: str | None = None  # the call ended before the script was done: why
    heard_available: bool = False  # what the agent heard was known (the offline stand-in's channel)
    expected_end: str | None = None  # the script's `expect`: "transfer" or "hangup"

    @property
    def ended_as_expected(self) -> bool | None:
        """Whether the call ended the way the script expected (None: it expected nothing)."""
        if self.expected_end is None:
            return None
        if self.expected_end == "transfer":
            return self.call.transferred_to is not None
        return self.call.end_reason == CALLBOT_HUNG_UP

    @property
    def time_to_answer_s(self) -> float:
        return self.call.answered_at - self.call.placed_at

    @property
    def ok(self) -> bool:
        return (self.ended_early is None and all(t.answered for t in self.turns)
                and all(t.recognised is not False for t in self.turns)
                and all(t.stopped_bot for t in self.turns if t.turn.barge_in_s is not None)
                and self.ended_as_expected is not False)  # fmt: skip

    def summary(self) -> list[str]:
        lines = [f"time to answer: {self.time_to_answer_s * 1000:.0f} ms (IncomingCall -> answer)"]
        if self.greeting is not None:
            lines.append(f"greeting: first audio {self.greeting.start - self.call.connected_at:.2f} s after the "
                         "media socket opened")  # fmt: skip
        for number, result in enumerate(self.turns, start=1):
            said = f'turn {number} "{result.turn.text}"'
            if result.recognised is False:
                lines.append(f'{said}: NOT RECOGNISED: the agent heard "{result.heard}"')
            if result.response_s is None:
                lines.append(f"{said}: NOT ANSWERED")
            else:
                lines.append(f"{said}: end of caller speech -> first bot audio {result.response_s * 1000:.0f} ms")
            if result.turn.barge_in_s is not None:
                if result.barge_in_s is None:
                    lines.append(f"barge-in (turn {number}): NO StopAudio (was the bot speaking?)")
                else:
                    verdict = "" if result.stopped_bot else ", but bot audio went on"
                    lines.append(f"barge-in (turn {number}): caller speech start -> StopAudio "
                                 f"{result.barge_in_s * 1000:.0f} ms{verdict}")  # fmt: skip
        if len(self.turns) < self.planned:
            first, last = len(self.turns) + 1, self.planned
            which = f"turn {first}" if first == last else f"turns {first}-{last}"
            lines.append(f"{which}: NOT PLAYED (the call ended)")
        if self.ended_as_expected is False:
            wanted = "a transfer" if self.expected_end == "transfer" else "the agent hanging up"
            lines.append(f"call ending: expected {wanted}, but: {self.call.end_reason or 'the call was still up'}")
        if not self.heard_available and self.turns:
            lines.append("what the agent heard: not available (callbot offers it only with the offline stand-in)")
        return lines


async def run_script(
    call: SimulatedCall,
    turns: list[Turn],
    *,
    transcript: Transcript,
    bot_text: BotText | None = None,
    speaker: Speaker | None = None,
    greeting_wait_s: float = 5.0,
    reply_timeout_s: float = 10.0,
    quiet_s: float = 0.7,
    agent_heard: AgentHeard | None = None,
) -> CallReport:
    """Play ``turns`` on ``call``'s line and report (the call stays up: hang up afterwards). ``agent_heard``:
    what the agent has heard so far on the call (None: not available)."""
    speaker = speaker or caller_speaker()
    heard = HeardTracker(agent_heard, transcript.add)

    async def on_burst(burst: Burst) -> None:
        text = await bot_text(burst) if bot_text is not None else f"({len(burst.audio) // 2 / call.sample_rate:.1f} s)"
        transcript.add(burst.start, "bot", text + (" [stopped]" if burst.stopped_at is not None else ""))

    monitor = BotMonitor(call, on_burst)
    watcher = asyncio.create_task(monitor.run())
    ending = asyncio.create_task(_announce_end(call, transcript, monitor))
    call.start_line()
    results: list[TurnResult] = []
    try:
        greeting = await monitor.wait_reply(call.connected_at, greeting_wait_s)
        if greeting is not None:
            await monitor.wait_quiet(quiet_s)
        await heard.start()
        for turn in turns:
            pcm = turn.audio if turn.audio is not None or turn.keys else await speaker.synthesize_async(
                turn.text, call.sample_rate)
            if results:
                reply = await monitor.wait_reply(results[-1].utterance.speech_end_at, reply_timeout_s)
                await heard.collect(results[-1])
                if turn.barge_in_s is not None and reply is not None:
                    await asyncio.sleep(max(0.0, reply.start + turn.barge_in_s - time.monotonic()))
                else:
                    await monitor.wait_quiet(quiet_s)
            await asyncio.sleep(turn.pause_s)
            try:
                if turn.keys:
                    result = TurnResult(turn, await press(call, turn.keys))
                    transcript.add(result.utterance.started_at, "**", f"caller pressed {turn.text}")
                else:
                    result = TurnResult(turn, await call.say(pcm or b""))
            except PhoneError:  # the call ended (the report says why) or the line stalled
                if not call.ended.is_set():
                    raise
                break
            results.append(result)
            if not turn.keys:
                transcript.add(result.utterance.speech_at, "caller", turn.text)
            if turn.barge_in_s is not None:
                _judge_barge_in(call, result)
                if result.barge_in_s is not None:
                    transcript.add(result.stop_at or 0.0, "**", f"caller barged in: bot stopped after "
                                   f"{result.barge_in_s * 1000:.0f} ms")  # fmt: skip
        if results:
            await monitor.wait_reply(results[-1].utterance.speech_end_at, reply_timeout_s)
            await heard.collect(results[-1])
        await monitor.wait_quiet(quiet_s)
        expected = turns[-1].ends_with if turns else None
        if expected is not None and len(results) == len(turns):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), END_WAIT_S)
    finally:
        watcher.cancel()
        if not call.ended.is_set():
            ending.cancel()
        await asyncio.gather(watcher, ending, return_exceptions=True)
    await monitor.finish()
    for index, result in enumerate(results):
        until = results[index + 1].utterance.speech_at if index + 1 < len(results) else float("inf")
        result.reply = next((b for b in monitor.bursts if result.utterance.speech_end_at < b.start < until), None)
    first = results[0].utterance.speech_at if results else float("inf")
    greeting = next((b for b in monitor.bursts if b.start < first), None)
    early = call.end_reason if call.ended.is_set() and len(results) < len(turns) else None
    return CallReport(call, results, monitor.bursts, transcript, greeting, len(turns), early, heard.available,
                      turns[-1].ends_with if turns else None)


async def press(call: SimulatedCall, keys: str, spacing_s: float = KEY_SPACING_S) -> Utterance:
    """Press ``keys`` on the caller's keypad: one key press message per key (ACS DtmfData, Twilio dtmf),
    ``spacing_s`` apart (the line's audio frames go on meanwhile); `PhoneError` if the call has ended."""
    times: list[float] = []
    for index, key in enumerate(keys):
        if call.ended.is_set():
            raise PhoneError(f"the call ended before the caller pressed a key: {call.end_reason}")
        if index:
            await asyncio.sleep(spacing_s)
        await call.press_key(key)
        times.append(time.monotonic())
    return Utterance(times[0], times[-1], times[0], times[-1])


async def _announce_end(call: SimulatedCall, transcript: Transcript, monitor: BotMonitor) -> None:
    """When callbot ends the call, say so in the transcript (after the bot's last words): a transfer (and where to)
    or the agent hanging up."""
    await call.ended.wait()
    await monitor.finish()
    at = call.ended_at or time.monotonic()
    if call.transferred_to is not None:
        transcript.add(at, "**", f"transferred to {call.transferred_to}")
    elif call.end_reason == CALLBOT_HUNG_UP:
        transcript.add(at, "**", "the agent hung up")


def _judge_barge_in(call: SimulatedCall, result: TurnResult) -> None:
    speech = result.utterance
    stop = next((r for r in call.received if r.kind == "StopAudio" and r.at >= speech.speech_at - 0.02), None)
    if stop is None:
        return
    result.stop_at = stop.at
    result.audio_after_stop = any(r.kind == "AudioData" and stop.at < r.at <= speech.speech_end_at
                                  for r in call.received)  # fmt: skip


def call_channels(call: SimulatedCall) -> tuple[bytes, bytes]:
    """The caller channel (as ACS delivered it to callbot) and the bot channel (as the caller heard it, through
    the telephone leg when the call has one), from the moment the media socket opened (the transcript's time
    zero). Blocking (CPU)."""
    start = call.connected_at
    bot = playout(((r.at, r.kind, r.audio) for r in call.received), start, call.sample_rate)
    if call.leg is not None:
        bot = TelephoneLeg(call.sample_rate).frames(bot, call.frame_bytes)
    lead = round(((call.line_started_at or start) - start) * call.sample_rate)
    return bytes(2 * max(0, lead)) + bytes(call.caller_audio), bot


def write_call_wav(call: SimulatedCall, path: Path, bot_path: Path | None = None) -> float:
    """Two channels (caller left, bot right) at the media rate, and optionally the bot channel alone; returns
    the duration in seconds. Blocking (file I/O)."""
    caller, bot = call_channels(call)
    if bot_path is not None:
        write_wav(bot_path, call.sample_rate, bot)
    return write_wav(path, call.sample_rate, caller, bot)
