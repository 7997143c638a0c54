"""Faults: Voice Live drops and outages, stalled peers, leaks, and the SIGTERM drain of a real `callbot serve`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psutil
import pytest

from callbot.bridge.wire import Outbox as _Outbox
from callbot.local.acs.network import PhoneCall, PhoneNetwork
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.local.voicelive.session import ServerSession
from callbot.local.voicelive.standin import Standin
from callbot.server import InProcess, wait_until_ready
from callbot.voicelive.connection import HEARTBEAT_S
from tests.bridge.test_bridge_e2e import phone_env, speechlike
from tests.bridge.test_runner import until
from tests.harness import SIGNING_KEY, VOICELIVE_KEY, WEBHOOK_SECRET, run_callbot
from tests.local.voicelive.test_standin import FAQ, silence, spoken


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_voicelive_drop_mid_response_reconnects_restores_turns_and_keeps_caller_audio(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        first = await voicelive.wait_for_session(0)
        await first.wait_for("session.update")
        await first.transcription_completed("item_caller_1", "what are your opening hours")
        answer = await first.start_response(text="We open at nine.", audio=speechlike(200))
        await answer.wait()
        await first.start_response(text="A long story", audio=speechlike(5000), realtime_factor=0.5)
        await call.wait_for_audio(frames=15)
        await first.abort()  # the model's socket drops mid-response
        after_drop = speechlike(400, seed=9)
        await call.stream(after_drop, realtime=False)  # the caller keeps talking during the gap
        second = await voicelive.wait_for_session(1, timeout=5)
        await second.wait_for("session.update")
        restored = [await second.wait_for("conversation.item.create", count=n) for n in (1, 2)]
        assert [(i["item"]["role"], i["item"]["content"][0]["text"]) for i in restored] == [
            ("user", "what are your opening hours"), ("assistant", "We open at nine.")]
        await second.wait_for("input_audio_buffer.append", count=20)
        assert after_drop in bytes(second.input_audio), "caller audio from the gap reached the new session"
        reply = await second.start_response(text="Back again", audio=speechlike(300, seed=3))
        await reply.wait()
        before = len(call.bot_audio())
        await call.wait_until(lambda: len(call.bot_audio()) >= before + 300 * 48, timeout=5)
        assert cb.services.registry.calls, "the call survived the drop"
        await call.hang_up()


@pytest.mark.parametrize("cause", ["refused", "auth", "tls", "credential"])
async def test_a_voicelive_that_cannot_be_reached_gives_the_apology_a_hang_up_one_log_line_and_a_count(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tls_server: str, cause: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    endpoint: dict[str, object] = {
        "refused": {"azure_voicelive_endpoint": f"http://127.0.0.1:{free_port()}"},
        "auth": {"azure_voicelive_endpoint": voicelive.url, "azure_voicelive_api_key": "wrong-key-0123456789"},
        "tls": {"azure_voicelive_endpoint": tls_server},
        "credential": {"azure_voicelive_endpoint": voicelive.url, "azure_voicelive_api_key": None},
    }[cause]
    if cause == "credential":
        # DefaultAzureCredential with a managed identity endpoint that does not answer (on loopback, so no request
        # leaves the machine): the identity Container Apps would give, broken
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{free_port()}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "test-header")
    with caplog.at_level("WARNING"):
        async with run_callbot(**{**phone_env(phone), **endpoint}) as cb:
            call = await phone.place_call(cb.url, WEBHOOK_SECRET)
            started = time.monotonic()
            terminate = await phone.acs.wait_for("terminate", timeout=30)
            assert terminate.path.endswith(f"{call.answered.call_connection_id}:terminate")
            assert time.monotonic() - started < 25
            apology = call.bot_audio()
            assert len(apology) / call.frame_bytes * 0.02 >= 4.0, "the apology was played before hanging up"
            assert any(apology)
            await until(lambda: not cb.services.registry.calls)
            counters = cb.services.metrics.counters
            assert counters["voicelive_unavailable"] == 1 and counters[f"voicelive_unavailable_{cause}"] == 1
    lines = [r for r in caplog.records if r.name.startswith("callbot") and r.levelno >= logging.WARNING
             and "Voice Live" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert f"[{cause}]" in lines[0].getMessage() and lines[0].levelno == logging.ERROR
    assert not any(r.exc_info for r in caplog.records), "no traceback"
    assert "wrong-key" not in caplog.text


class BlackholeProxy:
    """TCP to the Voice Live stand-in that, on `blackhole()`, stops carrying bytes on the connections open at the
    time, in both directions, without closing them: a network drop with no FIN or RST. Later connections work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.generation = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BlackholeProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def blackhole(self) -> None:
        self.generation += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        born = self.generation
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst, born))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, born: int) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if self.generation == born:  # else: swallowed, as by a dead network path
                    dst.write(data)
                    await dst.drain()
        dst.close()


@contextlib.asynccontextmanager
async def call_through_a_blackhole(phone: PhoneNetwork, voicelive: VoiceLiveServer
                                   ) -> AsyncIterator[tuple[BlackholeProxy, InProcess, PhoneCall, ServerSession]]:
    """A call whose Voice Live connection runs through a `BlackholeProxy`, its first session configured."""
    async with BlackholeProxy(int(voicelive.url.rsplit(":", 1)[1].strip("/"))) as proxy, \
            run_callbot(azure_voicelive_endpoint=proxy.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        first = await voicelive.wait_for_session(0)
        await first.wait_for("session.update")
        yield proxy, cb, call, first


async def test_a_silent_network_drop_to_voicelive_is_found_by_the_heartbeat_and_the_call_reconnects(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with call_through_a_blackhole(phone, voicelive) as (proxy, cb, call, first):
        await first.transcription_completed("item_caller_1", "what are your opening hours")
        bridge = next(iter(cb.services.registry.calls.values())).bridge
        assert bridge is not None
        await until(lambda: len(bridge.core.turns) == 1, timeout=5)  # the transcript got through before the path dies
        proxy.blackhole()  # no FIN, no RST: only the missing pong tells
        dropped_at = time.monotonic()
        second = await voicelive.wait_for_session(1, timeout=12)
        found_after = time.monotonic() - dropped_at
        await second.wait_for("session.update")
        restored = await second.wait_for("conversation.item.create")
        assert restored["item"]["content"][0]["text"] == "what are your opening hours"
        # a ping after HEARTBEAT_S of quiet, half of that for the pong, then the reconnect: seconds of dead air, not
        # the half-minute a 20 s heartbeat (or TCP's own timeouts) would take
        assert HEARTBEAT_S <= found_after <= 10
        assert cb.services.registry.calls, "the call survived the drop"
        await call.hang_up()


async def test_words_spoken_into_a_silently_dead_voicelive_socket_reach_the_next_session_and_are_recognised(
        phone: PhoneNetwork) -> None:
    """The recovery ring end to end: the offline stand-in (real VAD and phrase recogniser) behind a path that dies
    without FIN or RST. The caller asks a question while callbot still writes into the dead socket (straight from the
    media reader: the socket keeps taking bytes); after the heartbeat finds the drop and callbot reconnects, the new
    session gets those words byte for byte before the live audio, and hears them."""
    question = "do you deliver"
    gap = silence(300) + spoken(question) + silence(900)  # all of it sent before the drop can be noticed
    async with Standin(FAQ, api_key=VOICELIVE_KEY, realtime_factor=0.1, keep_history=True) as standin, \
            BlackholeProxy(int(standin.url.rsplit(":", 1)[1].strip("/"))) as proxy, \
            run_callbot(azure_voicelive_endpoint=proxy.url, callbot_instructions=FAQ, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        first = await standin.server.wait_for_session(0)
        await first.wait_for("session.update")
        bridge = next(iter(cb.services.registry.calls.values())).bridge
        assert bridge is not None
        await until(lambda: bridge.core.ready, timeout=5)
        proxy.blackhole()
        dropped_at = time.monotonic()
        await call.stream(gap)  # in real time, into a socket that no longer reaches anyone
        assert time.monotonic() - dropped_at < HEARTBEAT_S, "the caller spoke before the drop could be noticed"
        assert not bytes(first.input_audio), "nothing of it reached the first session"
        second = await standin.server.wait_for_session(1, timeout=12)
        await second.wait_for("session.update")
        live = silence(200)
        await call.stream(live)  # live audio after the reconnect
        await until(lambda: second.input_audio_bytes >= len(gap) + len(live), timeout=5)
        assert bytes(second.input_audio).startswith(gap), "the gap's audio, byte for byte, before anything else"
        await until(lambda: [t.text for t in bridge.core.turns if t.role == "caller"] == [question], timeout=15)
        assert bridge.reconnects == 1
        await call.hang_up()
        await until(lambda: not cb.services.registry.calls, timeout=5)
        async with aiohttp.ClientSession() as http, http.get(f"{cb.url}/metrics") as r:
            text = await r.text()
        resent = [line for line in text.splitlines() if line.startswith("callbot_caller_audio_resent_frames_total")]
        assert resent and float(resent[0].split()[-1]) >= len(gap) // call.frame_bytes


def test_stalled_voicelive_outbox_drops_oldest_caller_audio_never_control() -> None:
    box = _Outbox(limit=3)
    box.put({"type": "session.update"})
    for i in range(5):
        box.put({"type": "input_audio_buffer.append", "audio": str(i)})
    kinds = [e.get("audio", e["type"]) for e in box.items]
    assert kinds == ["session.update", "3", "4"]
    assert box.dropped == 3


async def test_no_leaks_after_many_sequential_and_concurrent_calls(phone: PhoneNetwork) -> None:
    proc = psutil.Process()
    server = VoiceLiveServer(api_key=VOICELIVE_KEY, keep_history=False)
    async with server, run_callbot(azure_voicelive_endpoint=server.url, log_level="WARNING",
                                   **phone_env(phone)) as cb:

        async def one_call() -> None:
            call = await phone.place_call(cb.url, WEBHOOK_SECRET, connected_event=False)
            await call.stream(speechlike(60), realtime=False)
            await call.hang_up()
            phone.calls.remove(call)

        async def settle() -> tuple[int, int, int]:
            for _ in range(200):
                if not cb.services.registry.calls and cb.services.sockets == 0:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            phone.acs.requests.clear()
            phone.acs.calls.clear()
            gc.collect()
            return len(asyncio.all_tasks()), proc.num_fds(), proc.memory_info().rss

        for _ in range(10):  # warm up caches and lazily created objects
            await one_call()
        # and the HTTP connection pools (bounded; their idle keep-alive connections are not leaks)
        await asyncio.gather(*(one_call() for _ in range(50)))
        tasks0, fds0, rss0 = await settle()
        for _ in range(300):
            await one_call()
        tasks1, fds1, rss1 = await settle()
        for _ in range(5):
            await asyncio.gather(*(one_call() for _ in range(10)))
        await asyncio.gather(*(one_call() for _ in range(50)))
        tasks2, fds2, rss2 = await settle()
        assert not cb.services.registry.calls
        names = sorted(str(t.get_coro()) for t in asyncio.all_tasks())[:5]
        assert tasks1 <= tasks0 + 2 and tasks2 <= tasks0 + 2, (tasks0, tasks1, tasks2, names)
        # a leak of one descriptor per call would show as hundreds; pooled keep-alive connections vary by a few
        assert fds1 <= fds0 + 25 and fds2 <= fds0 + 25, (fds0, fds1, fds2)
        assert rss1 - rss0 < 40 * 2**20 and rss2 - rss0 < 60 * 2**20, (rss0, rss1, rss2)


async def test_sigterm_drains_live_calls_then_says_goodbye_and_exits(phone: PhoneNetwork,
                                                                     voicelive: VoiceLiveServer) -> None:
    port = free_port()
    env = {**os.environ, **phone.env(), "AZURE_VOICELIVE_ENDPOINT": voicelive.url,
           "AZURE_VOICELIVE_API_KEY": VOICELIVE_KEY, "CALLBOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "CALLBOT_SIGNING_KEY": SIGNING_KEY, "CALLBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "CALLBOT_DRAIN_SECONDS": "2", "CALLBOT_GREETING": "", "LOG_LEVEL": "INFO"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_ready(url, proc)
        async with aiohttp.ClientSession() as http:
            call = await phone.place_call(url, WEBHOOK_SECRET)
            session = await voicelive.wait_for_session()
            await session.wait_for("session.update")
            proc.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            await asyncio.sleep(0.3)
            async with http.get(f"{url}/readyz") as r:
                assert r.status == 503
                assert "draining" in (await r.json())["problems"]
            with pytest.raises(Exception, match="rejected"):
                await phone.place_call(url, WEBHOOK_SECRET, answer_timeout=5)
            # the live call goes on during the drain
            reply = await session.start_response(text="still talking", audio=speechlike(300))
            await reply.wait()
            await call.wait_for_audio(frames=15)
            # then: goodbye from the model, and a hang-up once it played
            goodbye = await session.wait_for("response.create", timeout=10)
            assert time.monotonic() - sent_at >= 1.5
            assert "pre_generated_assistant_message" in goodbye["response"]
            await phone.acs.wait_for("terminate", timeout=25)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def barge_in_then_reconnect(call: Any, voicelive: VoiceLiveServer) -> ServerSession:
    """The bot answers, the caller barges in, then the Voice Live session drops: the second session, configured."""
    first = await voicelive.wait_for_session(0)
    await first.wait_for("session.update")
    await first.start_response(text="long", audio=speechlike(3000))
    await call.wait_for_audio(frames=10)
    await first.speech_started()
    await call.wait_for_stop()
    await first.abort()
    second = await voicelive.wait_for_session(1)
    await second.wait_for("session.update")
    return second


async def test_reconnects_and_barge_ins_are_counted_at_metrics(phone: PhoneNetwork,
                                                                voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        second = await barge_in_then_reconnect(call, voicelive)
        await second.speech_stopped()  # the caller finished the question: the wait for the bot starts
        heard = len(call.bot_audio())
        await second.start_response(text="answer", audio=speechlike(400))
        await call.wait_until(lambda: len(call.bot_audio()) > heard, 10)
        await call.hang_up()
        for _ in range(100):
            if not cb.services.registry.calls:
                break
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as http, http.get(f"{cb.url}/metrics") as r:
            text = await r.text()
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert values["callbot_voicelive_reconnects_total"] == "1"
        assert values["callbot_barge_ins_total"] == "1"
        assert int(values["callbot_bot_frames_total"]) >= 10
        # the latency histograms: one observation each where the call gave one, labelled by transport only
        acs = 'transport="acs"'
        for name, count in [("answer_seconds", 1), ("first_bot_audio_seconds", 1), ("response_latency_seconds", 1),
                            ("barge_in_reaction_seconds", 1), ("voicelive_reconnect_gap_seconds", 1)]:
            assert values[f"callbot_{name}_count{{{acs}}}"] == str(count), (name, text)
            assert values[f'callbot_{name}_bucket{{{acs},le="+Inf"}}'] == str(count), name
            assert f"# TYPE callbot_{name} histogram" in text
        assert values[f'callbot_voicelive_connect_seconds_count{{outcome="ok",{acs}}}'] == "2"
        buckets = [int(v) for k, v in values.items() if k.startswith("callbot_barge_in_reaction_seconds_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == 1, "cumulative"
        assert float(values[f"callbot_barge_in_reaction_seconds_sum{{{acs}}}"]) < 1.0
        assert "call_id" not in text and call.answered.call_connection_id not in text


async def test_a_defect_in_one_calls_bridge_hangs_that_call_up_and_spares_the_others(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from callbot.bridge.core import BridgeCore

    original = BridgeCore.server_event

    def flawed(self: BridgeCore, now: float, ev: dict[str, object]) -> list[object]:
        if ev.get("type") == "response.audio_transcript.done" and ev.get("transcript") == "boom":
            raise RuntimeError("simulated defect")
        return original(self, now, ev)  # type: ignore[return-value]

    monkeypatch.setattr(BridgeCore, "server_event", flawed)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        doomed = await phone.place_call(cb.url, WEBHOOK_SECRET)
        first = await voicelive.wait_for_session(0)
        healthy = await phone.place_call(cb.url, WEBHOOK_SECRET)
        second = await voicelive.wait_for_session(1)
        await first.wait_for("session.update")
        await second.wait_for("session.update")
        await (await first.start_response(text="boom", audio=speechlike(100))).wait()
        terminate = await phone.acs.wait_for("terminate", timeout=5)
        assert terminate.path.endswith(f"{doomed.answered.call_connection_id}:terminate")
        await asyncio.wait_for(first.closed.wait(), 2)
        reply = await second.start_response(text="fine", audio=speechlike(200))
        await reply.wait()
        await healthy.wait_for_audio(frames=10)
        assert len(cb.services.registry.calls) == 1
        await healthy.hang_up()
