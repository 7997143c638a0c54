"""The phone simulator: telephone leg, playout, scripts, the local profile, and `callbot dial` against callbot."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import stat
import sys
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from callbot.config import Settings
from callbot.local.caller.simulator import Turn, parse_script
from callbot.local.caller.telephone import TelephoneLeg, playout
from callbot.local.profile import LocalProfile, load_profile, local_mode_notice, serve_overrides
from tests.harness import run_callbot

FAQ = """Q: What are your opening hours?
A: We are open from seven in the morning to six in the evening, Monday to Saturday.
Q: Where are you?
A: We are at twelve Main Street, next to the post office.
"""
GREETING = "Hello, bakery."


def tone(freq: float, ms: int, rate: int = 24000, amplitude: float = 8000.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(local_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACS_", "CALLBOT_"))}
    env.update(CALLBOT_LOCAL_DIR=str(local_dir), CALLBOT_INSTRUCTIONS=FAQ, CALLBOT_GREETING=GREETING)
    return env


# -- the telephone leg and playout -------------------------------------------------------------------------------


def test_telephone_leg_keeps_the_voice_band_and_cuts_above_4_khz() -> None:
    leg = TelephoneLeg(24000)
    voice_band = tone(1000, 400)
    out = b"".join(leg.process(voice_band[i : i + 960]) for i in range(0, len(voice_band), 960))
    assert len(out) == len(voice_band), "one 20 ms frame out per frame in"
    assert abs(20 * np.log10(rms(out[9600:]) / rms(voice_band[9600:]))) < 1.0
    assert out != voice_band, "G.711 quantisation changes the samples"
    high = TelephoneLeg(24000).frames(tone(6000, 400), 960)
    assert rms(high[9600:]) < rms(tone(6000, 400)[9600:]) / 100  # more than 40 dB down
    assert TelephoneLeg(24000).frames(bytes(9600), 960) == bytes(9600), "silence stays digital silence"


def test_playout_fills_gaps_with_silence_and_stopaudio_drops_what_was_still_buffered() -> None:
    frame = b"\x01\x00" * 480  # 20 ms at 24 kHz
    events = [(10.0 + 0.02 * i, "AudioData", frame) for i in range(10)]  # 200 ms arriving in real time
    events += [(10.0 + 0.5, "AudioData", frame)] * 10  # 200 ms arriving at once, 300 ms later
    events += [(10.0 + 0.6, "StopAudio", b"")]  # played 100 ms of the second burst, then flushed
    out = np.frombuffer(playout(events, 10.0, 24000), dtype="<i2")
    assert out.size == 24000 * 600 // 1000
    assert (out[:4800] == 1).all() and (out[4800:12000] == 0).all() and (out[12000:] == 1).all()


def test_scripts_have_pauses_turns_and_barge_in_points() -> None:
    turns = parse_script("# a call\npause 0.5\nsay what are your opening hours\n\nbarge-in 1.2 where are you  # cut\n")
    assert turns == [Turn("what are your opening hours", pause_s=0.5), Turn("where are you", barge_in_s=1.2)]
    with pytest.raises(ValueError, match="line 1"):
        parse_script("shout hello")
    with pytest.raises(ValueError, match="no turns"):
        parse_script("pause 1")


# -- the local development profile -------------------------------------------------------------------------------


def test_profile_is_created_private_once_and_shared(tmp_path: Path) -> None:
    first = load_profile(tmp_path / "local")
    assert first.path is not None and stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o700
    assert load_profile(tmp_path / "local") == first
    assert first.identity().kid == first.identity().kid, "the signing key is fixed"
    assert (first.acs_port, first.jwks_port) == (8765, 8766)


def test_serve_fills_only_what_the_environment_did_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = load_profile(tmp_path)
    monkeypatch.setenv("ACS_RESOURCE_ID", "my-own-resource")
    monkeypatch.delenv("CALLBOT_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("CALLBOT_PUBLIC_URL", raising=False)
    overrides = serve_overrides(Settings(_env_file=None), profile, "0.0.0.0", 8123)  # type: ignore[call-arg]
    assert "acs_resource_id" not in overrides
    assert overrides["acs_connection_string"] == profile.connection_string
    assert overrides["callbot_webhook_secret"] == profile.webhook_secret
    assert overrides["callbot_public_url"] == "http://127.0.0.1:8123"
    notice = local_mode_notice(profile)
    for secret in (profile.acs_access_key, profile.webhook_secret, profile.signing_key):
        assert secret not in notice


async def test_serve_without_acs_runs_in_local_mode_and_is_ready(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--port", str(port), cwd=tmp_path, env=subprocess_env(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        status = response.status
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    log = stderr.decode()
    assert status == 200, log
    assert "local development mode" in log and "http://127.0.0.1:8765" in log
    profile = load_profile(tmp_path)
    for secret in (profile.acs_access_key, profile.webhook_secret, profile.signing_key):
        assert secret not in log


# -- callbot dial against callbot (offline) ------------------------------------------------------------------------


async def test_dial_places_a_scripted_call_with_a_barge_in(tmp_path: Path) -> None:
    profile = dataclasses.replace(LocalProfile.generate(), acs_port=free_port(), jwks_port=free_port())
    (tmp_path / "profile.json").write_text(profile.to_json())
    overrides = serve_overrides(Settings(_env_file=None), profile, "127.0.0.1", 0)  # type: ignore[call-arg]
    overrides.pop("callbot_public_url")
    (tmp_path / "call.script").write_text("say what are your opening hours\nbarge-in 1.0 where are you\n")
    async with run_callbot(callbot_instructions=FAQ, callbot_greeting=GREETING, callbot_turn_detection="server_vad",
                           **overrides) as cb:  # fmt: skip
        assert cb.settings.offline
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbot", "dial", cb.url, "--script", "call.script", "--out", "out",
            "--greeting-wait", "3", cwd=tmp_path, env=subprocess_env(tmp_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    out = stdout.decode()
    assert proc.returncode == 0, out + stderr.decode()
    lines = out.splitlines()
    assert any(line.endswith("bot: hello bakery") for line in lines), out
    assert any(line.endswith("caller: what are your opening hours") for line in lines), out
    # cut 1 s into the answer: the transcript holds what the caller heard before StopAudio, not the whole lead
    assert any("bot: we are open from" in line and "six" not in line and line.endswith("[stopped]")
               for line in lines), out
    assert any("** caller barged in: bot stopped after" in line for line in lines), out
    assert any(line.endswith("bot: we are at twelve main street next to the post office") for line in lines), out
    assert "barge-in (turn 2): caller speech start -> StopAudio" in out
    with wave.open(str(tmp_path / "out" / "dial-call.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 24000)
        assert wav.getnframes() > 24000 * 5
    assert json.loads((tmp_path / "profile.json").read_text())["resource_id"] == profile.resource_id
