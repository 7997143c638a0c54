"""`callbot demo`, the README's first command: one offline phone call end to end, as a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import wave
from pathlib import Path

from callbot.local.caller.heard import heard_matches
from callbot.local.demo import BAKERY_GREETING, BAKERY_INSTRUCTIONS, DEMO_SCRIPT, DEMO_TRANSFER_TARGET
from callbot.local.voicelive.faq import parse_faq
from callbot.recording import load_recording
from callbot.replay import check_recording


async def test_demo_call_is_heard_answered_interrupted_and_transferred(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACS_", "CALLBOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "demo", "--out", "out", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    out = stdout.decode()
    assert proc.returncode == 0, out + stderr.decode()
    answers = {e.questions[0]: e.answer for e in parse_faq(BAKERY_INSTRUCTIONS)}
    transcript = [line for line in out.splitlines() if re.match(r"\[\s*\d+\.\d\ds\] ", line)]
    heard = [line.split("] agent heard: ", 1)[1] for line in transcript if "] agent heard: " in line]
    said = [line.split("] ", 1)[1] for line in transcript if "] agent heard: " not in line]
    assert len(heard) == 4 and all(heard_matches(t.text, h) for t, h in zip(DEMO_SCRIPT, heard, strict=True)), heard
    assert "not available" not in out and "NOT" not in out  # the stand-in is in the demo's process: it says
    assert said[0] == f"bot: {BAKERY_GREETING}"
    assert said[1:3] == ["caller: what are your opening hours", f"bot: {answers['What are your opening hours?']}"]
    assert said[3] == "caller: do you deliver"
    assert said[4].startswith("bot: Yes, we deliver") and said[4].endswith("... [stopped]")
    assert said[5] == "caller: where are you"
    barge_in = re.fullmatch(r"\*\* caller barged in: bot stopped after (\d+) ms", said[6])
    assert barge_in and int(barge_in.group(1)) < 1000
    assert said[7] == f"bot: {answers['Where are you?']}"
    assert said[8] == "caller: i want to speak to a person"
    assert said[9] == f"bot: {answers['I want to speak to a person']}".split(" TOOL ")[0]
    assert said[10] == f"** transferred to {DEMO_TRANSFER_TARGET}", "the call ends with the transfer"
    times = [float(line[1:8].rstrip("s")) for line in transcript]
    assert times == sorted(times)
    for number in (1, 2, 3, 4):
        assert re.search(rf"turn {number} \".+\": end of caller speech -> first bot audio \d+ ms", out)
    assert "time to answer:" in out and "PASS" in out
    with wave.open(str(tmp_path / "out" / "demo-call.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() > wav.getframerate() * 10
    recordings = list((tmp_path / "out" / "demo-recordings").glob("*.jsonl"))
    assert len(recordings) == 1 and f"call recording: {Path('out', 'demo-recordings', recordings[0].name)}" in out
    report = check_recording(load_recording(recordings[0]))
    assert report.ok, report.text()  # the whole call, tool call and transfer included, replays as it happened


async def test_demo_over_twilio_is_heard_answered_interrupted_transferred_and_replays(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACS_", "CALLBOT_", "TWILIO_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "demo", "--twilio", "--out", "out", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    out = stdout.decode()
    assert proc.returncode == 0, out + stderr.decode()
    assert "over Twilio Media Streams" in out.splitlines()[0]
    said = [line.split("] ", 1)[1] for line in out.splitlines()
            if re.match(r"\[\s*\d+\.\d\ds\] ", line) and "] agent heard: " not in line]
    assert said[0] == f"bot: {BAKERY_GREETING}"
    assert out.count("] agent heard: ") == 4 and "not available" not in out
    assert said[4].endswith("... [stopped]") and said[6].startswith("** caller barged in: bot stopped after")
    assert said[-1] == f"** transferred to {DEMO_TRANSFER_TARGET}", "transfer_to_human through Twilio's REST API"
    with wave.open(str(tmp_path / "out" / "demo-call.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)  # mu-law 8 kHz is what the caller hears
    recordings = list((tmp_path / "out" / "demo-recordings").glob("*.jsonl"))
    assert len(recordings) == 1
    report = check_recording(load_recording(recordings[0]))
    assert report.ok, report.text()
