"""The runner's Voice Live retry budget on an injected clock and sleep: how many attempts, how long between them,
when a stable session earns a fresh budget, and which failures are not retried at all."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.ai.voicelive.aio import ConnectionClosed

from callbot.bridge.runner import CallBridge
from callbot.bridge.vl_loop import RECONNECT_DELAYS_S, STABLE_SESSION_S, run_voicelive
from callbot.config import Settings
from callbot.voicelive.connection import VoiceLiveUnavailable


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class Conn:
    """A session that stays up for `lasts` seconds of the fake clock, then drops."""

    def __init__(self, clock: Clock, lasts: float) -> None:
        self.clock, self.lasts = clock, lasts

    async def recv_bytes(self) -> bytes:
        self.clock.t += self.lasts
        raise ConnectionClosed(1006, "dropped")

    async def send(self, event: dict[str, Any]) -> None:
        pass

    async def close(self) -> None:
        pass


class Connector:
    """Plays a script of outcomes: a float opens a session lasting that long, a VoiceLiveUnavailable fails."""

    def __init__(self, clock: Clock, script: list[float | VoiceLiveUnavailable]) -> None:
        self.clock, self.script = clock, list(script)
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Conn]:
        self.attempts += 1
        outcome = self.script.pop(0) if self.script else VoiceLiveUnavailable("refused", "refused")
        if isinstance(outcome, VoiceLiveUnavailable):
            raise outcome
        yield Conn(self.clock, outcome)


async def run(script: list[float | VoiceLiveUnavailable]) -> tuple[CallBridge, Connector, Clock]:
    clock = Clock()
    connector = Connector(clock, script)
    settings = Settings(_env_file=None, azure_voicelive_endpoint="http://127.0.0.1:9",  # type: ignore[call-arg]
                        azure_voicelive_api_key="k" * 32)
    bridge = CallBridge("c1", settings, connector, apology=bytes(960), clock=clock,  # type: ignore[arg-type]
                        sleep=clock.sleep)
    bridge.core.start(clock())
    await run_voicelive(bridge)
    return bridge, connector, clock


def refused() -> VoiceLiveUnavailable:
    return VoiceLiveUnavailable("cannot connect", "refused")


async def test_a_voicelive_that_never_answers_gets_one_attempt_per_delay_then_the_apology() -> None:
    bridge, connector, clock = await run([])
    assert connector.attempts == len(RECONNECT_DELAYS_S) + 1
    assert clock.sleeps == list(RECONNECT_DELAYS_S)
    assert bridge.voicelive_failure == "refused"
    assert bridge.core.end_reason == "voicelive_unavailable" and bridge.core.ending_via == "local"


@pytest.mark.parametrize("cause", ["auth", "credential", "tls", "bad_url"])
async def test_a_failure_retrying_cannot_fix_is_not_retried(cause: str) -> None:
    bridge, connector, clock = await run([VoiceLiveUnavailable("no", cause, permanent=True)])
    assert connector.attempts == 1 and clock.sleeps == []
    assert bridge.voicelive_failure == cause and bridge.core.end_reason == "voicelive_unavailable"


async def test_a_stable_session_resets_the_budget_for_the_next_drop() -> None:
    fails = [refused() for _ in RECONNECT_DELAYS_S]
    _, connector, clock = await run([*fails, STABLE_SESSION_S + 1.0])
    # the budget was spent down to its last attempt, which opened a session that lasted: a drop after it starts
    # again from the first delay, with the whole budget
    assert connector.attempts == len(fails) + 1 + len(RECONNECT_DELAYS_S)
    assert clock.sleeps == [*RECONNECT_DELAYS_S, *RECONNECT_DELAYS_S]


async def test_a_short_lived_session_does_not_reset_the_budget() -> None:
    fails = [refused() for _ in RECONNECT_DELAYS_S]
    _, connector, clock = await run([*fails, STABLE_SESSION_S - 1.0])
    assert connector.attempts == len(fails) + 1, "the drop right after counts against the same budget"
    assert clock.sleeps == list(RECONNECT_DELAYS_S)


async def test_sessions_that_keep_dropping_soon_after_opening_end_the_call() -> None:
    _, connector, clock = await run([0.5] * 10)
    assert connector.attempts == len(RECONNECT_DELAYS_S) + 1
    assert clock.sleeps == list(RECONNECT_DELAYS_S)
