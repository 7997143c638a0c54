"""What the caller's side of the simulator needs of a placed call, whichever network carries it.

`callbot.local.caller.simulator.run_script` (and its `BotMonitor`, transcript and WAV writer) works on any
`SimulatedCall`: an ACS call (`callbot.local.acs.network.PhoneCall`) or a Twilio Media Streams call
(`callbot.local.twilio.TwilioCall`). ``received`` is the bot's audio as the caller's phone plays it (``AudioData``:
16-bit PCM at ``sample_rate``) and the flushes of its buffer (``StopAudio``: ACS's StopAudio, Twilio's ``clear``),
with their times.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from callbot.local.caller.messages import Received, Utterance
from callbot.local.caller.telephone import TelephoneLeg


class SimulatedCall(Protocol):
    received: list[Received]
    sample_rate: int
    placed_at: float  # time.monotonic() the call was placed (webhook posted)
    answered_at: float  # ... callbot answered it
    connected_at: float  # ... the media socket opened (the transcript's time zero)
    line_started_at: float | None
    caller_audio: bytearray  # the caller's line as callbot got it, 16-bit PCM at sample_rate
    leg: TelephoneLeg | None  # the bot's audio passes this on its way to the caller's ear (None: none)
    ended: asyncio.Event
    end_reason: str | None
    ended_at: float | None
    transferred_to: str | None

    @property
    def frame_bytes(self) -> int: ...

    def start_line(self) -> None: ...

    async def say(self, pcm: bytes) -> Utterance: ...

    async def press_key(self, key: str) -> None: ...

    async def hang_up(self) -> None: ...
