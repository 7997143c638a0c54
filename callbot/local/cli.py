"""``callbot dial`` (the phone simulator against a running callbot) and ``callbot demo`` (one offline call)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import ValidationError

if TYPE_CHECKING:
    from callbot.local.caller.simulator import Turn

log = logging.getLogger(__name__)

DIAL_WAV = "dial-call.wav"
DIAL_BOT_WAV = "dial-bot.wav"
DEFAULT_DIAL_TEXT = "what are your opening hours"


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dial = sub.add_parser("dial", help="phone simulator: play ACS and a caller against a running callbot",
                          description="Places a call to callbot as ACS would (IncomingCall webhook, ACS REST "
                          "answer/hang-up/transfer with HMAC check, signed media socket, key presses as DtmfData) "
                          "using the local development profile that 'callbot serve' trusts when no ACS is "
                          "configured, and speaks as the caller. The transcript shows key presses, a transfer "
                          "('** transferred to ...': the call is then the target's) and the agent hanging "
                          "up.")  # fmt: skip
    dial.add_argument("url", help="callbot's base URL, e.g. http://127.0.0.1:8000")
    source = dial.add_mutually_exclusive_group()
    source.add_argument("--say", action="append", metavar="TEXT", help="say TEXT (repeat for more turns; default: "
                        f"{DEFAULT_DIAL_TEXT!r})")  # fmt: skip
    source.add_argument("--wav", type=Path, metavar="FILE", help="play a 16-bit PCM WAV file as the caller")
    source.add_argument("--script", type=Path, metavar="FILE", help="a script of turns: 'say TEXT', 'pause SECONDS', "
                        "'barge-in SECONDS TEXT', 'press KEYS' (keypad: 0-9 * # A-D, e.g. 'press 1 2 3 #'; every # "
                        "on the line is a key) lines, and last 'expect transfer' or 'expect hangup': the call must "
                        "end that way (exit 0 only then)")  # fmt: skip
    dial.add_argument("--out", type=Path, default=Path("."), help=f"where {DIAL_WAV} and {DIAL_BOT_WAV} are written")
    dial.add_argument("--secret", help="webhook secret (default: CALLBOT_WEBHOOK_SECRET, else the local profile's)")
    dial.add_argument("--greeting-wait", type=float, default=5.0, metavar="S",
                      help="how long to wait for a greeting before speaking (default 5)")  # fmt: skip
    dial.add_argument("--no-telephone-leg", action="store_true", help="send the caller's audio without G.711")
    dial.add_argument("--twilio", action="store_true", help="call through the local Twilio stand-in instead of ACS: "
                      "the signed voice webhook (/api/twilio/voice), its TwiML, a Media Stream of mu-law 8 kHz, "
                      "Twilio's REST API for hang-up and transfer (credentials: TWILIO_ACCOUNT_SID / "
                      "TWILIO_AUTH_TOKEN, else the local profile's)")  # fmt: skip
    dial.add_argument("--verbose", action="store_true", help="log at INFO")
    dial.set_defaults(func=cmd_dial)

    demo = sub.add_parser("demo", help="one offline end-to-end phone call: callbot + Voice Live stand-in + phone "
                          "simulator", description="Runs callbot with its offline Voice Live stand-in and the phone "
                          "simulator in one process on free ports; a scripted 4-turn call with one barge-in that ends "
                          "with the caller asking for a person and being transferred. Exit status 0 only if every "
                          "caller turn was recognised and answered, the barge-in stopped the bot and the call was "
                          "transferred.")  # fmt: skip
    demo.add_argument("--out", type=Path, default=Path("."), help="where demo-call.wav and demo-recordings/ go "
                      "(default: the current directory)")  # fmt: skip
    demo.add_argument("--script", type=Path, metavar="FILE", help="another script of turns (as for dial)")
    demo.add_argument("--twilio", action="store_true", help="carry the call over Twilio Media Streams (the local "
                      "Twilio stand-in: mu-law 8 kHz) instead of ACS")  # fmt: skip
    demo.add_argument("--verbose", action="store_true", help="log at INFO")
    demo.set_defaults(func=cmd_demo)


def _check_extras(command: str) -> None:
    try:
        import callbot.local.speech  # noqa: F401  (webrtcvad, pocketsphinx, espeak-ng)
    except ImportError as exc:
        raise SystemExit(f"callbot {command} needs the offline speech parts: pip install 'callbot[local]' "
                         f"({exc.name or exc} is missing)") from None


def _script_turns(args: argparse.Namespace) -> list[Turn]:
    from callbot.local.caller.simulator import Turn, parse_script

    if args.script is not None:
        try:
            return parse_script(args.script.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"callbot: {args.script}: {exc}") from None
    return [Turn(text) for text in (getattr(args, "say", None) or [DEFAULT_DIAL_TEXT])]


# -- dial ----------------------------------------------------------------------------------------------------------


def cmd_dial(args: argparse.Namespace) -> int:
    from callbot.config import load_settings
    from callbot.local.caller.simulator import Turn
    from callbot.local.profile import ProfileError, load_profile
    from callbot.logs import setup_logging

    _check_extras("dial")
    setup_logging("INFO" if args.verbose else "WARNING")
    problem = _url_problem(args.url)
    if problem:
        sys.stderr.write(f"callbot dial: {problem}\n")
        return 2
    try:
        settings = load_settings()  # the same environment / .env as 'callbot serve': secret, audience, vocabulary
    except ValidationError as exc:
        raise SystemExit(f"callbot: invalid configuration: {exc.error_count()} error(s); see 'callbot serve'") from None
    try:
        profile = load_profile()
    except (ProfileError, OSError) as exc:
        raise SystemExit(f"callbot: {exc}") from None
    secret = args.secret or (settings.callbot_webhook_secret.get_secret_value() if settings.callbot_webhook_secret
                             else profile.webhook_secret)  # fmt: skip
    turns = [Turn(f"<{args.wav.name}>")] if args.wav is not None else _script_turns(args)
    if args.twilio:
        _out(f"dialling {args.url} as Twilio (local profile {profile.path}; Twilio REST on {profile.twilio_url})")
    else:
        _out(f"dialling {args.url} as ACS (local profile {profile.path}; ACS REST on {profile.acs_url})")
    return asyncio.run(_dial(args, settings, profile, secret, turns))


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be callbot's base URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not callbot's base URL: expected http://HOST:PORT or https://HOST, e.g. http://127.0.0.1:8000"
    return None


def _failure(exc: BaseException, url: str) -> str:
    """One line for a call that could not be placed or carried on."""
    if isinstance(exc, TimeoutError):
        return f"call failed: no reply from callbot at {url} in time"
    if isinstance(exc, OSError):
        return f"call failed: {exc.strerror or exc} (is callbot running at {url}?)"
    return f"call failed: {exc or type(exc).__name__}"


async def _dial(args: argparse.Namespace, settings: object, profile: object, secret: str, turns: list[Turn]) -> int:
    import aiohttp

    from callbot.assets import APOLOGY_TEXT
    from callbot.config import Settings
    from callbot.local.acs.network import PhoneError, PhoneNetwork
    from callbot.local.caller.call import SimulatedCall
    from callbot.local.caller.heard import AgentHeard, fetch_heard
    from callbot.local.caller.simulator import Burst, Transcript, Turn, run_script, write_call_wav
    from callbot.local.caller.telephone import read_wav
    from callbot.local.profile import LocalProfile
    from callbot.local.speech.asr import Recognizer
    from callbot.local.twilio import TwilioNetwork
    from callbot.local.voicelive.faq import bot_phrases

    assert isinstance(settings, Settings) and isinstance(profile, LocalProfile)
    tools = {"end_call"} if settings.callbot_end_call_tool else set()
    own = [APOLOGY_TEXT]  # callbot's own words: when Voice Live cannot be reached, before a transfer, a slow tool
    if settings.callbot_transfer_target:
        tools.add("transfer_to_human")
        own.append(settings.callbot_transfer_message)
    if settings.callbot_tools_file is not None:
        own.append(settings.callbot_tool_hold_message)
    vocabulary = [*bot_phrases(settings.instructions(), settings.callbot_greeting, [t.text for t in turns], tools),
                  *(line for line in own if line)]
    recognizer = asyncio.create_task(Recognizer.create(vocabulary))
    network: PhoneNetwork | TwilioNetwork
    if args.twilio:
        network = TwilioNetwork.from_profile(profile, settings)
    else:
        network = await asyncio.to_thread(PhoneNetwork.from_profile, profile, resource_id=settings.acs_resource_id,
                                          telephone_leg=not args.no_telephone_leg)  # fmt: skip
    try:
        await network.start()
        call: SimulatedCall
        agent_heard: AgentHeard | None = None
        if isinstance(network, TwilioNetwork):
            twilio, twilio_call = network, await network.place_call(args.url.rstrip("/"))
            call = twilio_call

            async def agent_heard() -> list[str] | None:
                return await twilio.fetch_heard(twilio_call)
        else:
            acs, acs_call = network, await network.place_call(args.url.rstrip("/"), secret)
            call = acs_call

            async def agent_heard() -> list[str] | None:  # what callbot's Voice Live heard (offline stand-in only)
                assert acs.http is not None
                return await fetch_heard(acs.http, acs_call.answered.callback_uri, acs.authorization())
        if args.wav is not None:
            audio = await asyncio.to_thread(read_wav, args.wav, call.sample_rate)
            turns = [Turn(turns[0].text, audio=audio)]

        async def heard(burst: Burst) -> str:  # offline ASR of the bot's audio as the caller heard it
            text = await (await recognizer).transcribe_async(bytes(burst.audio), call.sample_rate)
            return text or "(not recognised)"

        report = await run_script(call, turns, transcript=Transcript(call.connected_at, _out), bot_text=heard,
                                  greeting_wait_s=args.greeting_wait, agent_heard=agent_heard)  # fmt: skip
        if call.transferred_to is None:  # a transferred call goes on between the caller and the target
            await call.hang_up()
    except (PhoneError, OSError, aiohttp.ClientError) as exc:  # TimeoutError is an OSError
        _out(_failure(exc, args.url))
        return 2
    finally:
        recognizer.cancel()
        await network.stop()
    _out()
    for line in report.summary():
        _out(line)
    try:
        await asyncio.to_thread(args.out.mkdir, parents=True, exist_ok=True)
        seconds = await asyncio.to_thread(write_call_wav, call, args.out / DIAL_WAV, args.out / DIAL_BOT_WAV)
        _out(f"wrote {args.out / DIAL_WAV} (caller left, bot right, {call.sample_rate // 1000} kHz, {seconds:.1f} s) "
             f"and {args.out / DIAL_BOT_WAV}")  # fmt: skip
    except OSError as exc:
        _out(f"cannot write {args.out / DIAL_WAV}: {exc.strerror or exc}")
    if report.ended_early is not None:
        _out(f"call ended early: {report.ended_early}")
        return 2
    expected = " (as the script expected)" if report.ended_as_expected else ""
    _out(f"call ended: {call.end_reason or 'the caller hung up'}{expected}")
    return 0 if report.ok else 1


# -- demo ----------------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from callbot.logs import setup_logging

    _check_extras("demo")
    from callbot.local.acs.network import PhoneError
    from callbot.local.demo import DEMO_SCRIPT, run_demo

    setup_logging("INFO" if args.verbose else "WARNING")
    turns = _script_turns(args) if args.script is not None else list(DEMO_SCRIPT)
    line = ("over Twilio Media Streams (mu-law 8 kHz both ways, the local Twilio stand-in)" if args.twilio else
            "caller audio through an 8 kHz G.711 telephone leg")  # fmt: skip
    _out("callbot demo: an offline phone call. Voice Live stand-in: webrtcvad + pocketsphinx + espeak-ng with a "
         f"FAQ responder (deterministic, not an LLM); {line}.")  # fmt: skip
    _out()
    try:
        result = asyncio.run(run_demo(args.out, sink=_out, turns=turns, twilio=args.twilio))
    except (PhoneError, TimeoutError, OSError) as exc:
        _out(f"FAIL: the demo call failed: {exc or type(exc).__name__}")
        return 1
    _out()
    for line in result.report.summary():
        _out(line)
    _out(f"wrote {result.wav_path} (caller left, bot right, {result.report.call.sample_rate // 1000} kHz, "
         f"{result.wav_seconds:.1f} s)")  # fmt: skip
    for path in result.recordings:
        _out(f"call recording: {path}")
    if result.ok:
        _out("PASS: every caller turn was recognised and answered, the barge-in stopped the bot, and the call was "
             "transferred")
        return 0
    _out("FAIL: see above")
    return 1
