"""Micro-benchmark of the per-frame audio work on the live path (used by ``callbot bench`` and README).

CPU-bound and blocking: call it from a thread (``asyncio.to_thread``) when inside an event loop.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import orjson

from callbot.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from callbot.audio.resample import Resampler

FRAME_MS = 20


def _speech_like_frame(rate: int) -> bytes:
    """20 ms of a two-tone signal plus a little noise at about -12 dBFS."""
    n = rate * FRAME_MS // 1000
    t = np.arange(n) / rate
    rng = np.random.default_rng(7)
    x: npt.NDArray[np.float64] = (
        5000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1330 * t) + rng.normal(0, 300, n)
    )
    return np.rint(x).astype("<i2").tobytes()


def _per_call_us(fn: Callable[[], object], iterations: int) -> float:
    for _ in range(min(iterations, 50)):  # warm-up: caches, branch predictors, first-call allocations
        fn()
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    return (time.perf_counter_ns() - start) / iterations / 1000.0


def measure_frame_costs(iterations: int = 2000) -> dict[str, float]:
    """Microseconds per 20 ms frame for each step of the media path (mean over ``iterations``)."""
    if iterations <= 0:
        raise ValueError("iterations must be positive")
    frames = {rate: _speech_like_frame(rate) for rate in (8000, 16000, 24000)}
    ulaw = pcm16_to_ulaw(frames[8000])

    def g711() -> bytes:
        return pcm16_to_ulaw(ulaw_to_pcm16(ulaw))

    def audio_data_message() -> bytes:
        data = base64.b64encode(frames[24000]).decode("ascii")
        return orjson.dumps({"kind": "AudioData", "audioData": {"data": data}})

    costs = {"ulaw_decode_encode_8k": _per_call_us(g711, iterations)}
    for src, dst in ((8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)):
        step = functools.partial(Resampler(src, dst).process, frames[src])
        costs[f"resample_{src // 1000}k_to_{dst // 1000}k"] = _per_call_us(step, iterations)
    costs["b64_orjson_audiodata_24k"] = _per_call_us(audio_data_message, iterations)
    return costs
