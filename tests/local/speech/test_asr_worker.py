"""Speech recognition in its own process: answers in order, survives bad input and crashes, stops at once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import numpy as np
import pytest

from callbot.local.caller.simulator import caller_speaker
from callbot.local.speech.asr_worker import STOP_GRACE_S, AsrError, AsrWorker

PHRASES = ["what are your opening hours", "do you deliver", "goodbye"]
RATE = 16000


@pytest.fixture
async def worker() -> AsyncIterator[AsrWorker]:
    asr = AsrWorker()
    await asr.start()
    try:
        yield asr
    finally:
        await asr.stop()


def said(text: str) -> bytes:
    return caller_speaker().synthesize(text, RATE)


def noise(seconds: float) -> bytes:
    """Loud noise: the generic model works hard on it (seconds of decoding), so it is still running later."""
    samples = np.random.default_rng(7).normal(0, 6000, int(RATE * seconds))
    return samples.clip(-32768, 32767).astype("<i2").tobytes()


async def until_pid_changes_or_dies(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.01)


async def test_concurrent_requests_get_their_own_transcripts_in_the_order_asked(worker: AsrWorker) -> None:
    texts = ["what are your opening hours", "goodbye", "do you deliver", "goodbye"]
    finished: list[int] = []

    async def ask(index: int) -> str:
        text = await worker.transcribe(PHRASES, said(texts[index]), RATE)
        finished.append(index)
        return text

    results = await asyncio.gather(*(ask(i) for i in range(len(texts))))
    assert results == texts
    assert finished == [0, 1, 2, 3], "a short turn asked later must not overtake a long one"


async def test_bad_phrases_fail_that_request_only_and_the_worker_keeps_serving(worker: AsrWorker) -> None:
    pid = worker.pid
    with pytest.raises(AsrError, match="none of the phrases"):
        await worker.transcribe(["!!!", "?"], said("goodbye"), RATE)
    with pytest.raises(AsrError, match="sample_rate"):
        await worker.transcribe(PHRASES, said("goodbye"), 0)
    assert await worker.transcribe(PHRASES, said("goodbye"), RATE) == "goodbye"
    assert worker.pid == pid
    assert await worker.transcribe(PHRASES, b"", RATE) == ""


async def test_a_crashed_worker_fails_what_it_held_and_the_next_request_starts_a_new_one(worker: AsrWorker) -> None:
    pid = worker.pid
    assert pid is not None
    busy = asyncio.create_task(worker.transcribe(None, noise(30), RATE))
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(AsrError, match="exited"):
        async with asyncio.timeout(10):  # a bound against hanging
            await busy
    assert await worker.transcribe(PHRASES, said("do you deliver"), RATE) == "do you deliver"
    assert worker.pid not in (None, pid)


async def test_a_worker_killed_before_it_read_the_request_fails_it_the_same_way(worker: AsrWorker) -> None:
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it reads nothing more: 30 s of audio cannot all fit in the pipe
    busy = asyncio.create_task(worker.transcribe(None, noise(30), RATE))
    await asyncio.sleep(0.2)
    assert not busy.done(), "the request is still being written"
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(AsrError, match=f"worker {pid} exited"):
        async with asyncio.timeout(10):  # a bound against hanging
            await busy
    assert await worker.transcribe(PHRASES, said("goodbye"), RATE) == "goodbye"


async def test_stop_ends_the_worker_in_the_middle_of_a_long_decode() -> None:
    worker = AsrWorker()
    await worker.start()
    pid = worker.pid
    assert pid is not None
    busy = asyncio.create_task(worker.transcribe(None, noise(30), RATE))  # decoding would take many seconds
    await asyncio.sleep(0.3)
    async with asyncio.timeout(STOP_GRACE_S + 3):  # a bound against hanging, not a speed requirement
        await worker.stop()
        with pytest.raises(AsrError):
            await busy
        await until_pid_changes_or_dies(pid)
    assert worker.pid is None
