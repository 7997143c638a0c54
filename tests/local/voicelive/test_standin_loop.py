"""The offline stand-in never stalls the event loop it shares with live calls (issue 13, item 5).

The caller streams 20 ms frames in real time through the real SDK while the stand-in detects the end of the
turn, recognises it, synthesises the answer and streams it; the gap is measured where the stand-in's Voice
Live server receives ``input_audio_buffer.append``.
"""

from __future__ import annotations

import asyncio

from azure.ai.voicelive.aio import connect

from callbot.local.voicelive.faq import Responder
from callbot.local.voicelive.standin import Standin
from tests.local.voicelive.test_standin import FAQ, append, configure, session_config, silence, spoken, until

# Frames are sent every 20 ms. Recognition on the event loop stalled them 110-190 ms at each turn's end (before
# the ASR moved to a child process); this VM's own scheduling stalls one frame by up to ~55 ms now and then, at any
# point of the call (seen in CI and in 1 of ~10 local runs): the bound sits between the two.
MAX_FRAME_GAP_MS = 90


async def test_caller_frames_keep_arriving_every_20_ms_while_a_turn_is_recognised_and_answered() -> None:
    question = "what are your opening hours"
    audio = silence(600) + spoken(question) + silence(2500)  # room for ASR, TTS and the streamed answer
    async with Standin(FAQ, realtime_factor=0.1, keep_history=True) as standin:
        async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
            await configure(conn, **session_config())
            sender = asyncio.create_task(append(conn, audio, realtime=True))
            events = await until(conn, "response.done", timeout=30)
            answered_while_streaming = not sender.done()
            await sender
        session = standin.server.sessions[0]
        arrivals = [at for event, at in zip(session.received, session.received_at, strict=True)
                    if event["type"] == "input_audio_buffer.append"]  # fmt: skip
    by_type = {e["type"]: e for e in events}
    assert by_type["conversation.item.input_audio_transcription.completed"]["transcript"] == question
    assert by_type["response.audio_transcript.done"]["transcript"] == Responder(FAQ).reply(question)
    assert answered_while_streaming, "the turn must be recognised and answered while the caller still streams"
    assert len(arrivals) == -(-len(audio) // 960)
    gaps_ms = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]
    worst = max(gaps_ms)
    assert worst < MAX_FRAME_GAP_MS, f"caller frames stalled {worst:.0f} ms at the stand-in (#{gaps_ms.index(worst)})"
