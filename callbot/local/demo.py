"""``callbot demo``: one offline phone call, end to end, in one process.

callbot (the real app under uvicorn, on a free loopback port) with its built-in offline Voice Live stand-in, and
the phone simulator playing ACS (or Twilio Media Streams, ``--twilio``) and a caller: the caller's speech goes through a
telephone leg (8 kHz G.711; over Twilio it is mu-law 8 kHz on the wire),
callbot answers, the stand-in recognises and replies, the caller interrupts a reply and the bot stops, and at the
end the caller asks for a person: the model calls ``transfer_to_human`` and ACS transfers the call. The
security checks stay on (ACS-signed JWTs against the simulator's JWKS, per-call URL tokens, webhook secret)
with throw-away keys. The bot's lines are what the stand-in said (cut where the caller stopped hearing them);
"recognised" means the stand-in's transcription of a caller turn matches the scripted text (as `callbot dial`
judges it: `callbot.local.caller.heard.heard_matches`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbot.config import Settings
from callbot.local.acs.network import PhoneNetwork
from callbot.local.caller.call import SimulatedCall
from callbot.local.caller.heard import heard_matches
from callbot.local.caller.simulator import Burst, CallReport, Transcript, Turn, run_script, write_call_wav
from callbot.local.twilio import TwilioNetwork
from callbot.local.voicelive.faq import SAMPLE_FAQ
from callbot.local.voicelive.standin import Standin, StandinEvent
from callbot.server import serve_in_process

log = logging.getLogger(__name__)

BAKERY_INSTRUCTIONS = "You are the phone assistant of Contoso Bakery. Answer briefly, from this FAQ only.\n" + \
    SAMPLE_FAQ
BAKERY_GREETING = "Thanks for calling Contoso Bakery. How can I help?"
DEMO_SCRIPT = (
    Turn("what are your opening hours"),
    Turn("do you deliver"),
    Turn("where are you", barge_in_s=1.5),
    Turn("i want to speak to a person", ends_with="transfer"),
)
DEMO_TRANSFER_TARGET = "+14255550100"  # the colleague the demo's caller is handed to (the ACS stand-in's)
WAV_NAME = "demo-call.wav"
RECORDINGS_DIR = "demo-recordings"  # under the output directory


@dataclass
class DemoResult:
    report: CallReport
    heard: list[str]  # per scripted turn: what the stand-in recognised
    wav_path: Path
    wav_seconds: float
    recordings: list[Path] = field(default_factory=list)

    @property
    def recognised(self) -> list[bool]:
        return [heard_matches(r.turn.text, h) for h, r in zip(self.heard, self.report.turns, strict=True)]

    @property
    def ok(self) -> bool:
        return all(self.recognised) and self.report.ok


def recording_supported() -> bool:
    return importlib.util.find_spec("callbot.recording") is not None


def demo_settings(port: int, phone: PhoneNetwork, secret: str, out_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "azure_voicelive_endpoint": None,  # always offline, whatever the environment says
        "azure_voicelive_api_key": None,
        "acs_endpoint": None,
        "callbot_public_url": f"http://127.0.0.1:{port}",
        "callbot_webhook_secret": secret,
        "callbot_signing_key": secrets.token_urlsafe(32),
        "callbot_eventgrid_audience": None,
        "callbot_instructions": BAKERY_INSTRUCTIONS,
        "callbot_instructions_file": None,
        "callbot_greeting": BAKERY_GREETING,
        "callbot_media_format": "pcm24k",
        "callbot_turn_detection": "server_vad",
        "callbot_vad_silence_ms": 500,
        "callbot_recordings_dir": out_dir / RECORDINGS_DIR if recording_supported() else None,
        "callbot_transfer_target": DEMO_TRANSFER_TARGET,
        **{k.lower(): v for k, v in phone.env().items()},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def standin_lines(events: list[StandinEvent], sample_rate: int) -> Callable[[Burst], Any]:
    """Bot lines from the stand-in's replies: the reply being played when the burst started, cut in proportion
    to what the caller heard when it was stopped."""

    async def text(burst: Burst) -> str:
        replies = [e for e in events if e.kind == "reply" and e.at <= burst.start]
        if not replies:
            return "(unknown audio)"
        reply = replies[-1]
        heard_ms = len(burst.audio) // 2 * 1000 // sample_rate
        if burst.stopped_at is None or not reply.audio_ms or heard_ms >= reply.audio_ms:
            return reply.text
        words = reply.text.split()
        return " ".join(words[: max(1, round(len(words) * heard_ms / reply.audio_ms))]) + " ..."

    return text


async def run_demo(
    out_dir: Path,
    *,
    sink: Callable[[str], None] | None = None,
    turns: tuple[Turn, ...] | list[Turn] = DEMO_SCRIPT,
    twilio: bool = False,
    **overrides: Any,
) -> DemoResult:
    """Run the demo call; the transcript goes to ``sink`` line by line. ``twilio``: the call comes in through the
    Twilio stand-in (Media Streams, mu-law 8 kHz) rather than ACS. ``overrides``: callbot settings."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    started = time.time()
    secret = secrets.token_urlsafe(24)
    events: list[StandinEvent] = []
    async with PhoneNetwork(telephone_leg=True) as phone, TwilioNetwork() as twilio_network:
        twilio_env = {k.lower(): v for k, v in twilio_network.env().items()}

        def make(port: int) -> Settings:
            return demo_settings(port, phone, secret, out_dir, **twilio_env, **overrides)

        async with serve_in_process(make) as served:
            url, services = served.url, served.services
            standin: Standin = services.standin
            standin.add_listener(events.append)
            call: SimulatedCall = await (twilio_network.place_call(url) if twilio else phone.place_call(url, secret))

            async def agent_heard() -> list[str]:  # the stand-in runs here: what it recognised, with no channel
                return [e.text for e in events if e.kind == "heard"]

            report = await run_script(call, list(turns), transcript=Transcript(call.connected_at, sink),
                                      bot_text=standin_lines(events, call.sample_rate),
                                      agent_heard=agent_heard)  # fmt: skip
            if not call.ended.is_set():
                await call.hang_up()
            with contextlib.suppress(TimeoutError):  # the call winds down (and its recording closes)
                async with asyncio.timeout(5.0):
                    await services.registry.wait_idle()
    wav_path = out_dir / WAV_NAME
    seconds = await asyncio.to_thread(write_call_wav, call, wav_path)
    recordings = await asyncio.to_thread(_new_recordings, out_dir / RECORDINGS_DIR, started - 1)
    return DemoResult(report, [r.heard or "" for r in report.turns], wav_path, seconds, recordings)


def _new_recordings(directory: Path, since: float) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.jsonl") if p.stat().st_mtime >= since)
