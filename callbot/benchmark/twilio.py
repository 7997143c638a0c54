"""The Twilio side of `callbot bench --transport twilio` (its own process: `python -m callbot.benchmark.twilio CONFIG`).

Composes the local Twilio stand-in (`callbot.local.twilio.TwilioNetwork`: the REST API callbot hangs up through,
the signing of the voice webhook and of the stream handshake) with a lean Media Streams client per call
(`TwilioMediaCall`). Each call rings callbot as Twilio does (signed voice webhook, TwiML `<Connect><Stream>`
followed, `connected` and `start` with the token parameter), streams tagged 160-byte mu-law caller frames in real
time and measures the bot's `media` as the ACS side measures AudioData (`clear` is the StopAudio). The run itself
(phase slots, window, result) is the ACS side's (`callbot.benchmark.acs.serve`). callbot runs with
`CALLBOT_TWILIO_MODEL_AUDIO=g711_ulaw`, so the synthetic model's mu-law frames keep their tags end to end (pcm16
resamples them: its cost is in the G.711 quality table).
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp

from callbot.benchmark import common as c
from callbot.benchmark.acs import serve
from callbot.benchmark.acs_calls import MediaCall, Window
from callbot.benchmark.twilio_calls import TwilioMediaCall, place_twilio_call
from callbot.local.twilio import TwilioNetwork


async def main(cfg: dict[str, Any]) -> None:
    async with TwilioNetwork() as network:

        async def place(http: aiohttp.ClientSession, window: Window, idx: int) -> MediaCall:
            return await place_twilio_call(network, http, window, cfg["url"], idx)

        async def hang_up(call: MediaCall) -> None:
            assert isinstance(call, TwilioMediaCall)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await call.ws.send_str(call.stream.stop())  # the caller hung up: Twilio's stop, then the close
            await call.ws.close()
            network.rest.completed(call.call_sid)

        await serve(cfg, network.env(), place, hang_up)


if __name__ == "__main__":
    c.run_child(main)
