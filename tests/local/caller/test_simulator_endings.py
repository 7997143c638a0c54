"""How the simulator shows callbot ending a call: a transfer (the ACS stand-in tells the phone network in-process and
ends the media stream) and the agent hanging up; a script's `expect` judges the ending. Real app under uvicorn, real
SDK, real ACS stand-in; the test plays the agent's decision (the bridge's tool call is not this module's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from callbot.calls import Call
from callbot.local.acs.network import PhoneNetwork
from callbot.local.caller.script import Turn
from callbot.local.caller.simulator import CallReport, Transcript, run_script
from tests.harness import WEBHOOK_SECRET, Running, run_callbot
from tests.test_app_calls import call_id_of, eventually, phone_env, short_voicelive

TARGET = "+14255550100"


async def play(turns: list[Turn], decide: Callable[[Running, Call], Awaitable[None]]) -> tuple[CallReport, int]:
    """Play ``turns``; once callbot has the caller's key presses and answered them, run ``decide`` (the agent).
    Returns the report and how many hang-ups reached ACS."""
    async with short_voicelive() as voicelive, PhoneNetwork() as phone, run_callbot(
            azure_voicelive_endpoint=voicelive.url, callbot_transfer_target=TARGET, **phone_env(phone)) as cb:
        phoned = await phone.place_call(cb.url, WEBHOOK_SECRET)
        call = cb.services.registry.get(call_id_of(phoned.answered))
        assert call is not None

        async def agent() -> None:
            await eventually(lambda: call.bridge.core.stats.dtmf_sequences >= 1, 20, "the keys at callbot")
            await phoned.wait_for_audio(frames=5, timeout=20)  # the reply to them
            await decide(cb, call)

        deciding = asyncio.create_task(agent())
        report = await run_script(phoned, turns, transcript=Transcript(phoned.connected_at), greeting_wait_s=0.5)
        await deciding
        return report, sum(r.kind in ("terminate", "hangup") for r in phone.acs.requests)


async def test_a_transfer_shows_in_the_transcript_and_meets_expect_transfer() -> None:
    async def transfer(cb: Running, call: Call) -> None:
        await cb.services.transfer(call, "pressed 0")

    report, hang_ups = await play([Turn("0 #", keys="0#", ends_with="transfer")], transfer)
    lines = report.transcript.lines
    assert any(line.endswith("] ** caller pressed 0 #") for line in lines), lines
    assert any(line.endswith(f"] ** transferred to {TARGET}") for line in lines), lines
    assert report.call.transferred_to == TARGET and report.ended_as_expected is True
    assert report.ok and report.ended_early is None, report.summary()
    assert hang_ups == 0, "callbot never hangs up a transferred call"


async def test_the_agent_hanging_up_shows_in_the_transcript_and_fails_expect_transfer() -> None:
    async def hang_up(cb: Running, call: Call) -> None:
        await cb.services.hang_up(call, "end_call")

    report, hang_ups = await play([Turn("9 #", keys="9#", ends_with="transfer")], hang_up)
    lines = report.transcript.lines
    assert any(line.endswith("] ** the agent hung up") for line in lines), lines
    assert not any("transferred to" in line for line in lines), lines
    assert report.ended_as_expected is False and not report.ok
    assert "call ending: expected a transfer, but: callbot hung up the call (its log says why)" in report.summary()
    assert hang_ups == 1


async def test_expect_hangup_is_met_when_the_agent_hangs_up() -> None:
    async def hang_up(cb: Running, call: Call) -> None:
        await cb.services.hang_up(call, "end_call")

    report, hang_ups = await play([Turn("5 #", keys="5#", ends_with="hangup")], hang_up)
    assert report.ended_as_expected is True and report.ok, report.summary()
