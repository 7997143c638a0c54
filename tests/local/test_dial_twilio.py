"""`callbot dial --twilio` as a user runs it (a subprocess) against callbot in local development mode: the call
comes in through the Twilio stand-in (signed webhook, TwiML, Media Stream, REST), in both model-audio modes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callbot.config import Settings
from callbot.local.profile import LocalProfile, serve_overrides
from callbot.local.twilio import TwilioNetwork
from callbot.server import InProcess
from tests.harness import run_callbot
from tests.local.caller.test_simulator import FAQ, GREETING, free_port
from tests.local.test_dial import run_cli
from tests.test_app_calls import eventually, metrics

TARGET = "+14255550100"


@asynccontextmanager
async def local_twilio_callbot(directory: Path, **settings: Any) -> AsyncIterator[tuple[InProcess, LocalProfile]]:
    """callbot as `callbot serve` runs in local mode, its TWILIO_* from the dial's profile (on free ports)."""
    profile = dataclasses.replace(LocalProfile.generate(), acs_port=free_port(), jwks_port=free_port(),
                                  twilio_port=free_port())  # fmt: skip
    path = directory / "profile.json"
    path.write_text(profile.to_json())
    path.chmod(0o600)
    overrides = serve_overrides(Settings(_env_file=None), profile, "127.0.0.1", 0)  # type: ignore[call-arg]
    overrides.pop("callbot_public_url")
    assert overrides["twilio_api_base_url"] == profile.twilio_url
    async with run_callbot(**{"callbot_turn_detection": "server_vad", "callbot_instructions": FAQ,
                              "callbot_greeting": GREETING, **overrides, **settings}) as cb:  # fmt: skip
        yield cb, profile


@pytest.mark.slow
@pytest.mark.parametrize("model_audio", ["g711_ulaw", "pcm16"])
async def test_dial_twilio_answers_hears_keys_and_is_transferred_through_twilio_rest(
        tmp_path: Path, model_audio: str) -> None:  # fmt: skip
    (tmp_path / "call.script").write_text("say what are your opening hours\npress 1 2 3 #\n"
                                          "say can i speak to a human\nexpect transfer\n")  # fmt: skip
    async with local_twilio_callbot(tmp_path, callbot_twilio_model_audio=model_audio,
                                    callbot_transfer_target=TARGET) as (cb, profile):  # fmt: skip
        result = await run_cli(tmp_path, "dial", "--twilio", cb.url, "--script", "call.script", "--greeting-wait", "3")
        await eventually(lambda: not cb.services.registry.calls, 10, "the call ended at callbot")
        counted = await metrics(cb)
    assert result.lines[0].startswith(f"dialling {cb.url} as Twilio") and profile.twilio_url in result.lines[0]
    transcript = [line.split("] ", 1)[1] for line in result.lines if line.startswith("[")]
    assert transcript[0] == f"bot: {GREETING.lower().rstrip('.')}" or transcript[0].startswith("bot: "), result.out
    assert "caller: what are your opening hours" in transcript
    assert "** caller pressed 1 2 3 #" in transcript
    assert transcript[-1] == f"** transferred to {TARGET}", result.out
    assert counted["callbot_dtmf_keys_total"] == 4, counted
    assert "NOT ANSWERED" not in result.out and "NOT RECOGNISED" not in result.out
    heard = [line.split("agent heard: ", 1)[1] for line in result.lines if "] agent heard: " in line]
    assert heard[0] == "what are your opening hours", result.out  # the local-only channel, asked as Twilio asks
    assert "what the agent heard: not available" not in result.out
    assert result.lines[-1] == f"call ended: transferred to {TARGET} (as the script expected)", result.out
    assert result.code == 0, result


@pytest.mark.slow
async def test_dial_twilio_goodbye_ends_with_callbot_hanging_up_through_twilio_rest(tmp_path: Path) -> None:
    (tmp_path / "call.script").write_text("say goodbye\nexpect hangup\n")
    async with local_twilio_callbot(tmp_path) as (cb, _):
        result = await run_cli(tmp_path, "dial", "--twilio", cb.url, "--script", "call.script", "--greeting-wait", "3")
    assert "** the agent hung up" in result.out, result.out
    assert result.lines[-1].endswith("(as the script expected)"), result.out
    assert result.code == 0, result


async def test_dial_twilio_with_other_credentials_than_callbots_is_refused_in_one_line(tmp_path: Path) -> None:
    async with local_twilio_callbot(tmp_path) as (cb, _):
        env_profile = LocalProfile.generate()  # another account: callbot checks the signature with its own token
        from tests.local.caller.test_simulator import subprocess_env

        env = subprocess_env(tmp_path) | {"TWILIO_ACCOUNT_SID": env_profile.twilio_account_sid,
                                          "TWILIO_AUTH_TOKEN": env_profile.twilio_auth_token}  # fmt: skip
        result = await run_cli(tmp_path, "dial", "--twilio", cb.url, env=env)
    assert result.lines[-1] == "call failed: callbot answered the Twilio voice webhook with HTTP 403", result.out
    assert result.code == 2


async def test_heard_channel_opens_a_twilio_call_only_to_its_own_signed_call_sid(tmp_path: Path) -> None:
    async with local_twilio_callbot(tmp_path) as (cb, profile):
        network = TwilioNetwork(profile.twilio_account_sid, profile.twilio_auth_token, port=free_port())
        async with network:
            first = await network.place_call(cb.url)
            second = await network.place_call(cb.url)
            assert await network.fetch_heard(first) == []
            assert first.heard_urls is not None and second.heard_urls is not None
            own, _ = first.heard_urls
            others = own.split("?", 1)[0] + "?" + second.heard_urls[0].split("?", 1)[1]  # first's id, second's sid
            async with aiohttp.ClientSession() as http:
                async def status(url: str, headers: dict[str, str]) -> int:
                    async with http.get(url, headers=headers) as response:
                        return response.status

                assert await status(own, {"X-Twilio-Signature": network.sign(own, {})}) == 200
                assert await status(others, {"X-Twilio-Signature": network.sign(others, {})}) == 401
                assert await status(own, {"X-Twilio-Signature": network.sign(own + "&x=1", {})}) == 401
                assert await status(own, {}) == 401  # no signature: the ACS path, which has no token here
            await first.hang_up()
            await second.hang_up()
        assert (await metrics(cb))["callbot_heard_rejected_total"] == 3
