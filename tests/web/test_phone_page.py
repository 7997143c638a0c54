"""The web phone's page in a real browser: headless Chromium (Playwright, the system's chromium, fake microphone
fed from a WAV the offline TTS made) against the real app under uvicorn in local mode, with the offline Voice Live
stand-in (VAD, ASR, FAQ answers, TTS) behind it. Skips only when no Chromium is found (`.ci/system-deps`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from callbot.local.caller.simulator import caller_speaker
from tests.harness import run_callbot

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is in the dev extra")

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (found := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (.ci/system-deps installs Debian's)")

WEB_KEY = "web-phone-key-0123456789"
SCREENSHOT = Path(__file__).parent.parent.parent / "docs" / "web-phone.png"
WAV_RATE = 48000
# The caller: a question with a long answer (the sample FAQ's delivery entry, ~8 s of bot speech), then a second
# question asked over that answer (a barge-in), then quiet.
LEAD_S, QUESTION, BARGE_AFTER_S, BARGE, TAIL_S = 2.0, "do you deliver", 4.0, "where are you", 30.0


def caller_wav(path: Path) -> Path:
    speaker = caller_speaker()

    def silence(seconds: float) -> bytes:
        return bytes(2 * round(seconds * WAV_RATE))

    pcm = (silence(LEAD_S) + speaker.synthesize(QUESTION, WAV_RATE) + silence(BARGE_AFTER_S)
           + speaker.synthesize(BARGE, WAV_RATE) + silence(TAIL_S))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(pcm)
    return path


@asynccontextmanager
async def browser_page(url: str, wav: Path | None = None) -> AsyncIterator[Any]:
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required"]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 1000})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(f"{url}/phone")
            await page.wait_for_function("window.callbotPhone.state === 'idle'")
            yield page
            assert problems == [], problems
        finally:
            await browser.close()


async def phone(page: Any) -> dict[str, Any]:
    status: dict[str, Any] = await page.evaluate("() => JSON.parse(JSON.stringify(window.callbotPhone))")
    return status


async def wait_phone(page: Any, condition: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait (event-driven, in the page) until `condition` over `p` (window.callbotPhone) holds."""
    try:
        await page.wait_for_function(f"() => {{ const p = window.callbotPhone; return {condition}; }}",
                                     timeout=timeout_s * 1000, polling=50)
    except playwright_api.TimeoutError:
        raise AssertionError(f"page never got to {condition}: {await phone(page)}") from None
    return await phone(page)


def said(status: dict[str, Any], role: str, words: str) -> bool:
    return any(line["role"] == role and words in line["text"].lower() for line in status["transcript"])


@pytest.mark.slow
async def test_the_page_calls_the_agent_hears_answers_barges_in_presses_a_key_and_hangs_up(tmp_path: Path) -> None:
    wav = await asyncio.to_thread(caller_wav, tmp_path / "caller.wav")
    async with run_callbot(callbot_turn_detection="server_vad") as cb, browser_page(cb.url, wav) as page:
        assert cb.services.standin is not None, "local mode with the offline stand-in"
        heard: list[str] = []  # what the stand-in's VAD and ASR made of the page's audio, for a failure's message
        cb.services.standin.add_listener(lambda e: heard.append(f"{e.kind} {e.audio_ms} {e.text}".strip()))
        assert not await page.get_by_label("Access key").is_visible(), "no key asked for when none is configured"
        await page.get_by_role("button", name="Call").click()
        session = await cb.services.standin.server.wait_for_session(timeout=20)
        await wait_phone(page, "p.state === 'connected' && p.ready")
        status = await wait_phone(page, "p.transcript.some(l => l.role === 'caller')")
        mic = {k: status[k] for k in ("micChunksSent", "micChunksDropped", "sampleRate")}
        assert said(status, "caller", QUESTION), (status["transcript"], mic, heard)
        status = await wait_phone(page, "p.bargeIns.length > 0 && p.transcript.some(l => l.role === 'bot')")
        assert said(status, "bot", "we deliver"), status["transcript"]
        assert status["lastBargeInMs"] < 150, status
        assert status["replyLatencies"] and 0 < status["replyLatencies"][0] < 5000, status
        assert status["stopsWhilePlaying"] >= 1 and status["botChunks"] > 10, status
        status = await wait_phone(page, "p.transcript.some(l => l.role === 'bot' && /main street/i.test(l.text))")
        assert said(status, "caller", BARGE), status["transcript"]
        assert [line["interrupted"] for line in status["transcript"] if line["role"] == "bot"][0] is True
        status = await wait_phone(page, "!p.botSpeaking")
        assert status["botAudioMs"] > 2000, "the page played the bot's audio"
        print("web phone:", {k: status[k] for k in ("sampleRate", "replyLatencies", "bargeIns", "botAudioMs")})
        if os.environ.get("CALLBOT_TEST_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        await page.get_by_role("button", name="5").click()
        await wait_phone(page, "p.dtmfSent === '5'")
        await page.get_by_role("button", name="Hang up").click()
        hung_up = time.monotonic()
        await asyncio.wait_for(session.closed.wait(), 5)
        assert time.monotonic() - hung_up < 1.0, "hanging up closes the model session within 1 s"
        status = await wait_phone(page, "p.state === 'ended'")
        assert status["endedReason"] == "you hung up"
        await asyncio.wait_for(cb.services.registry.wait_idle(), 5)
        counters = cb.services.metrics.counters
        assert counters["calls_web"] == 1 and counters["barge_ins"] >= 1
        assert counters["dtmf_keys"] == 1, "the key press reached the call"


async def test_with_a_key_configured_a_wrong_key_shows_an_error_and_the_right_one_connects() -> None:
    async with run_callbot(callbot_web_phone_key=WEB_KEY) as cb, browser_page(cb.url) as page:
        key = page.get_by_label("Access key")
        assert await key.is_visible()
        await key.fill("not-the-key-at-all")
        await page.get_by_role("button", name="Call").click()
        status = await wait_phone(page, "p.error !== null")
        assert "wrong key" in status["error"] and status["state"] == "idle"
        assert await page.get_by_role("alert").inner_text() == status["error"]
        assert await key.input_value() == "", "the key is not kept after the exchange"
        assert cb.services.metrics.counters["web_key_rejected"] == 1
        await key.fill(WEB_KEY)
        await key.press("Enter")  # the form submits by keyboard too
        await wait_phone(page, "p.state === 'connected' && p.ready")
        assert await key.input_value() == ""
        html = await page.content()
        assert WEB_KEY not in html and WEB_KEY not in page.url
        stored = await page.evaluate("() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        assert WEB_KEY not in stored
        await page.get_by_role("button", name="Hang up").click()
        status = await wait_phone(page, "p.state === 'ended'")
        assert status["endedReason"] == "you hung up"


CAPTURE_TONE_JS = """async ([rate, freq]) => {
  const ctx = new OfflineAudioContext({numberOfChannels: 1, length: rate, sampleRate: rate});
  await ctx.audioWorklet.addModule("/phone/static/capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "callbot-capture", {numberOfInputs: 1, numberOfOutputs: 1,
    outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit"});
  const expected = Math.floor((rate - 200) * 24000 / rate / 480);
  const chunks = [];
  const all = new Promise((resolve) => { node.port.onmessage = (e) => {
    chunks.push(e.data); if (chunks.length === expected) resolve(); }; });
  const osc = new OscillatorNode(ctx, {frequency: freq});
  osc.connect(new GainNode(ctx, {gain: 0.5})).connect(node);
  node.connect(ctx.destination);
  osc.start();
  await ctx.startRendering();
  await all;
  let energy = 0, count = 0;
  for (const chunk of chunks.slice(5)) {
    for (const v of new Int16Array(chunk.pcm)) { energy += (v / 32768) ** 2; count++; }
  }
  return {sizes: chunks.map((c) => c.pcm.byteLength), times: chunks.map((c) => c.t),
          db: 10 * Math.log10(Math.max(energy / count, 1e-20) / 0.125)};
}"""


@pytest.mark.parametrize("rate", [48000, 44100])
async def test_the_capture_worklet_resamples_to_24_khz_and_filters_out_what_24_khz_cannot_carry(rate: int) -> None:
    async with run_callbot() as cb, browser_page(cb.url) as page:
        # a tone the 24 kHz stream can carry passes unchanged; above its 12 kHz Nyquist frequency it would alias
        # into the speech band (14 kHz -> 10 kHz, 20 kHz -> 4 kHz at 48 kHz): the filter removes it
        for freq, low, high in ((1000, -0.2, 0.2), (8000, -0.5, 0.2), (14000, -200, -60), (20000, -200, -60)):
            tone = await page.evaluate(CAPTURE_TONE_JS, [rate, min(freq, rate // 2 - 1000)])
            assert low <= tone["db"] <= high, (rate, freq, tone["db"])
            assert set(tone["sizes"]) == {960}, "20 ms chunks of PCM16 at 24 kHz"
            steps = {round(b - a, 6) for a, b in zip(tone["times"], tone["times"][1:], strict=False)}
            assert steps == {0.02}, steps


PLAYBACK_STOP_JS = """async (rate) => {
  const ctx = new OfflineAudioContext({numberOfChannels: 1, length: rate, sampleRate: rate});
  await ctx.audioWorklet.addModule("/phone/static/capture-worklet.js");
  await ctx.audioWorklet.addModule("/phone/static/playback-worklet.js");
  const node = new AudioWorkletNode(ctx, "callbot-playback", {numberOfInputs: 0, numberOfOutputs: 1,
    outputChannelCount: [1]});
  node.connect(ctx.destination);
  const events = [];
  let waiter = null;
  node.port.onmessage = (e) => {
    events.push(e.data);
    if (waiter && waiter.type === e.data.type) { waiter.resolve(e.data); waiter = null; }
  };
  const reply = (type) => new Promise((resolve) => { waiter = {type, resolve}; });
  const result = {};
  ctx.suspend(256 / rate).then(async () => {  // 800 ms of a 440 Hz tone, as 20 ms socket messages
    for (let f = 0; f < 40; f++) {
      const pcm = new Int16Array(480);
      for (let i = 0; i < 480; i++) pcm[i] = Math.round(8000 * Math.sin(2 * Math.PI * 440 * (f * 480 + i) / 24000));
      node.port.postMessage(pcm.buffer, [pcm.buffer]);
    }
    node.port.postMessage({type: "status"});
    result.queued = await reply("status");
    ctx.resume();
  });
  const stopAt = Math.round(0.5 * rate / 128) * 128 / rate;
  ctx.suspend(stopAt).then(async () => {
    node.port.postMessage({type: "stop"});
    result.stopped = await reply("stopped");
    ctx.resume();
  });
  const out = (await ctx.startRendering()).getChannelData(0);
  let first = -1, last = -1;
  for (let i = 0; i < out.length; i++) if (out[i] !== 0) { if (first < 0) first = i; last = i; }
  return {...result, stopAt, first: first / rate, last: last / rate, events: events.map((e) => e.type),
          played: events.filter((e) => e.type === "played").map((e) => e.ms)};
}"""


async def test_the_playback_worklet_plays_queued_bot_audio_and_drops_all_of_it_at_once_on_stop() -> None:
    async with run_callbot() as cb, browser_page(cb.url) as page:
        run = await page.evaluate(PLAYBACK_STOP_JS, 48000)
    assert 790 <= run["queued"]["queuedMs"] <= 800, run["queued"]
    start = run["first"]
    assert start < 0.01, "a full jitter buffer starts playing at once"
    assert run["stopAt"] - 0.003 <= run["last"] < run["stopAt"] + 0.003, "nothing plays after the stop"
    stopped = run["stopped"]
    assert stopped["wasPlaying"] and abs(stopped["ms"] - (run["stopAt"] - start) * 1000) < 5, stopped
    assert abs(stopped["droppedMs"] - (800 - stopped["ms"])) < 5, "everything queued was dropped"
    assert run["events"] == ["status", "started", "played", "played", "stopped"], run["events"]
    assert [round(ms / 200) for ms in run["played"]] == [1, 2], "a played report every 200 ms"
