"""`callbot dial` as a user runs it (a subprocess) against the real app under uvicorn: how calls end and fail, what
the agent heard, and the local-only channel that tells it; `callbot export-wav` into a missing directory."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from callbot.config import Settings
from callbot.local.acs.network import PhoneNetwork
from callbot.local.caller.heard import heard_matches, heard_url
from callbot.local.profile import LocalProfile, serve_overrides
from callbot.local.speech.asr import normalize_words
from callbot.local.voicelive.faq import Responder, caller_phrases
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.server import InProcess
from tests.harness import WEBHOOK_SECRET, run_callbot
from tests.local.caller.test_simulator import FAQ, GREETING, free_port, subprocess_env
from tests.test_app_calls import phone_env

RECORDING = Path(__file__).parent.parent / "recordings" / "qa.jsonl"


@dataclasses.dataclass
class Dialled:
    code: int | None
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def local_profile(directory: Path) -> LocalProfile:
    """A local development profile on free ports (never the default 8765/8766 another dial may hold)."""
    profile = dataclasses.replace(LocalProfile.generate(), acs_port=free_port(), jwks_port=free_port())
    path = directory / "profile.json"
    path.write_text(profile.to_json())
    path.chmod(0o600)
    return profile


@asynccontextmanager
async def local_callbot(directory: Path, **settings: Any) -> AsyncIterator[InProcess]:
    """callbot as `callbot serve` runs in local development mode, trusting the dial's profile in ``directory``."""
    overrides = serve_overrides(Settings(_env_file=None), local_profile(directory), "127.0.0.1", 0)  # type: ignore[call-arg]
    overrides.pop("callbot_public_url")
    async with run_callbot(**{"callbot_turn_detection": "server_vad", **overrides, **settings}) as cb:
        yield cb


async def run_cli(directory: Path, *args: str, env: dict[str, str] | None = None) -> Dialled:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", *args, cwd=directory, env=env or subprocess_env(directory),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    return Dialled(proc.returncode, stdout.decode(), stderr.decode(), time.monotonic() - started)


def default_prompt_env(directory: Path) -> dict[str, str]:
    """The environment with neither a prompt nor a greeting set: callbot's defaults, as in the README."""
    env = subprocess_env(directory)
    del env["CALLBOT_INSTRUCTIONS"], env["CALLBOT_GREETING"]
    return env


# -- failing and ending ------------------------------------------------------------------------------------------


async def test_dial_to_a_port_nobody_listens_on_fails_at_once_in_one_line(tmp_path: Path) -> None:
    local_profile(tmp_path)
    result = await run_cli(tmp_path, "dial", f"http://127.0.0.1:{free_port()}")
    assert result.code == 2, result
    assert result.err == "", result.err
    assert result.lines[-1].startswith("call failed: ") and "is callbot running at" in result.lines[-1], result.out
    assert len(result.lines) == 2, result.out  # "dialling ..." and the reason
    assert result.seconds < 30, result


async def test_dial_notaurl_says_so_in_one_line(tmp_path: Path) -> None:
    result = await run_cli(tmp_path, "dial", "notaurl")
    assert result.code == 2 and result.out == "", result
    assert result.err.splitlines() == ["callbot dial: 'notaurl' is not callbot's base URL: expected http://HOST:PORT "
                                       "or https://HOST, e.g. http://127.0.0.1:8000"], result.err  # fmt: skip


async def test_dial_ends_promptly_with_the_reason_when_callbot_refuses_the_media_socket(tmp_path: Path) -> None:
    # callbot fetches ACS's signing keys from a port where nothing listens: the media socket's JWT fails (1008)
    async with local_callbot(tmp_path, callbot_acs_jwks_url=f"http://127.0.0.1:{free_port()}/calling/keys") as cb:
        result = await run_cli(tmp_path, "dial", cb.url, "--say", "what are your opening hours")
    assert result.code == 2, result
    assert result.lines[-1] == "call ended early: callbot refused the media socket (1008: policy violation; see " \
                               "callbot's log)", result.out  # fmt: skip
    assert "turn 1: NOT PLAYED (the call ended)" in result.lines, result.out
    assert "Traceback" not in result.out + result.err
    assert result.seconds < 30, result  # it hung until killed before: the caller's line had stopped under it


async def test_dial_ends_promptly_with_the_reason_when_voice_live_is_misconfigured(tmp_path: Path) -> None:
    # a Voice Live endpoint nothing answers at (an unusable URL is refused at start: see test_config)
    async with local_callbot(tmp_path, azure_voicelive_endpoint="http://127.0.0.1:1") as cb:
        result = await run_cli(tmp_path, "dial", cb.url, "--say", "what are your opening hours", "--greeting-wait", "3")
    assert result.code == 2, result
    assert result.lines[-1].startswith("call ended early: callbot "), result.out
    assert "Traceback" not in result.out + result.err
    assert result.seconds < 45, result


# -- what the agent heard ----------------------------------------------------------------------------------------


async def test_dial_fails_a_misheard_turn_and_shows_what_the_agent_heard(tmp_path: Path) -> None:
    # the FAQ has no delivery question: the stand-in's phrase model cannot hear "do you deliver"
    (tmp_path / "call.script").write_text("say what are your opening hours\nsay do you deliver\n")
    async with local_callbot(tmp_path, callbot_instructions=FAQ, callbot_greeting=GREETING) as cb:
        result = await run_cli(tmp_path, "dial", cb.url, "--script", "call.script", "--greeting-wait", "3")
    assert result.code == 1, result
    heard = [line.split("agent heard: ", 1)[1] for line in result.lines if "] agent heard: " in line]
    assert heard[0] == "what are your opening hours", result.out
    assert heard[1].endswith("  << NOT what the caller said") and "deliver" not in heard[1], result.out
    misheard = heard[1].removesuffix("  << NOT what the caller said")
    assert f'turn 2 "do you deliver": NOT RECOGNISED: the agent heard "{misheard}"' in result.lines, result.out
    assert not any("NOT RECOGNISED" in line for line in result.lines if line.startswith("turn 1 ")), result.out
    assert result.lines[-1] == "call ended: the caller hung up", result.out


async def test_dial_with_the_default_prompt_gets_real_answers_and_shows_what_was_heard(tmp_path: Path) -> None:
    # the README's `callbot serve` + `callbot dial` example: no prompt or greeting set anywhere
    async with local_callbot(tmp_path, callbot_greeting=Settings.model_fields["callbot_greeting"].default) as cb:
        assert cb.settings.instructions() == Settings.model_fields["callbot_instructions"].default
        result = await run_cli(tmp_path, "dial", cb.url, "--say", "what are your opening hours", "--say",
                               "do you deliver", env=default_prompt_env(tmp_path))  # fmt: skip
    assert result.code == 0, result
    assert any(line.endswith("bot: we are open from seven in the morning to six in the evening monday to saturday")
               for line in result.lines), result.out  # fmt: skip
    assert any("bot: yes we deliver within five miles" in line for line in result.lines), result.out
    heard = [line.split("agent heard: ", 1)[1] for line in result.lines if "] agent heard: " in line]
    assert heard == ["what are your opening hours", "do you deliver"], result.out
    assert result.lines[-1] == "call ended: the caller hung up", result.out


def test_the_stand_in_answers_the_default_prompt_from_the_sample_faq_and_a_custom_one_as_written() -> None:
    default = Settings.model_fields["callbot_instructions"].default
    assert Responder(default).reply("do you deliver").startswith("Yes, we deliver within five miles")
    assert "do you deliver" in [" ".join(normalize_words(p)) for p in caller_phrases(default)]
    assert Responder("You are a helpful assistant.").reply("do you deliver") == "You said: do you deliver."


def test_recognised_means_at_most_one_word_in_five_differs() -> None:
    assert heard_matches("What are your opening hours?", "what are your opening hours")
    assert heard_matches("what are your opening hours", "um what are you opening hours")  # 1 of 5 words
    assert not heard_matches("what are your opening hours", "what are you open")  # 2 of 5
    assert not heard_matches("do you deliver", "you human")
    assert not heard_matches("where are you", "where are")  # short turns must be heard exactly
    assert not heard_matches("hello", "")


# -- the local-only channel --------------------------------------------------------------------------------------


async def get(url: str, authorization: str | None) -> int:
    async with aiohttp.ClientSession() as http, http.get(
            url, headers={"Authorization": authorization} if authorization else {}) as response:
        await response.read()
        return response.status


async def test_heard_channel_serves_only_the_calls_own_ACS_and_only_offline(phone: PhoneNetwork,
                                                                            voicelive: VoiceLiveServer) -> None:
    async with run_callbot(**phone_env(phone)) as cb:
        assert cb.settings.offline
        first = await phone.place_call(cb.url, WEBHOOK_SECRET)
        second = await phone.place_call(cb.url, WEBHOOK_SECRET)
        own = heard_url(first.answered.callback_uri)
        async with aiohttp.ClientSession() as http, http.get(
                own, headers={"Authorization": phone.authorization()}) as response:
            assert (response.status, await response.json()) == (200, {"heard": []})
        others_token = heard_url(second.answered.callback_uri).split("?", 1)[1]
        assert await get(f"{own.split('?', 1)[0]}?{others_token}", phone.authorization()) == 401
        assert await get(own, None) == 401  # the token alone is not enough: ACS's JWT too
        await first.hang_up()
        await second.hang_up()
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        assert await get(f"{cb.url}/local/heard/any?token=x", phone.authorization()) == 404


# -- export-wav --------------------------------------------------------------------------------------------------


async def test_export_wav_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = await run_cli(tmp_path, "export-wav", str(RECORDING), "missing/call.wav")
    assert result.code == 2 and result.out == "", result
    assert result.err.splitlines() == ["callbot: cannot write missing/call.wav: the directory missing does not "
                                       "exist"], result.err  # fmt: skip


# -- the keypad --------------------------------------------------------------------------------------------------


async def test_dial_presses_keys_that_reach_callbot_as_dtmf_and_shows_them(tmp_path: Path) -> None:
    from tests.test_app_calls import eventually, metrics

    (tmp_path / "call.script").write_text("say what are your opening hours\npress 1 2 3 #\n")
    async with local_callbot(tmp_path, callbot_instructions=FAQ, callbot_greeting=GREETING) as cb:
        result = await run_cli(tmp_path, "dial", cb.url, "--script", "call.script", "--greeting-wait", "3")
        await eventually(lambda: not cb.services.registry.calls, 10, "the call ended at callbot")
        counted = await metrics(cb)
    assert any(line.endswith("] ** caller pressed 1 2 3 #") for line in result.lines), result.out
    assert counted["callbot_dtmf_keys_total"] == 4, counted
    assert counted["callbot_dtmf_sequences_total"] == 1, "the # ends the sequence: one text turn for the model"
    heard = [line for line in result.lines if "] agent heard: " in line]
    assert heard[-1].endswith("agent heard: The caller pressed 1 2 3 #"), result.out
    assert 'turn 2 "1 2 3 #": NOT ANSWERED' not in result.lines, result.out
    assert result.code == 0, result
