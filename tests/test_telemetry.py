"""OpenTelemetry: nothing runs unless asked; a call's span tree and histograms (the SDK's in-memory exporters); the
console exporter; OTLP/HTTP to a local collector that decodes what it gets with opentelemetry-proto."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from callbot.local.acs.network import PhoneNetwork
from callbot.local.profile import LocalProfile
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.local.voicelive.tools import FunctionCall
from callbot.server import wait_until_ready
from callbot.telemetry import Telemetry, correlate_logs
from tests.bridge.test_agent_e2e import ready_session
from tests.bridge.test_bridge_e2e import phone_env, place, speechlike
from tests.bridge.test_resilience import barge_in_then_reconnect
from tests.harness import WEBHOOK_SECRET, run_callbot
from tests.local.caller.test_simulator import free_port, subprocess_env
from tests.test_app_calls import eventually


def test_nothing_configured_means_no_telemetry_at_all() -> None:
    assert Telemetry.from_environment({}) is None
    assert Telemetry.from_environment({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                       "OTEL_SERVICE_NAME": "x"}) is None


async def test_a_call_without_an_exporter_makes_no_span_and_installs_no_provider(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for name in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
                 "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        await voicelive.wait_for_session(0)
        [live] = cb.services.registry.calls.values()
        assert cb.services.telemetry is None and live.trace is None
        assert cb.services.metrics.observers == []
        await call.hang_up()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no SDK provider was installed"


async def test_a_call_with_a_barge_in_and_a_reconnect_is_one_trace_with_its_spans_and_histograms(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:  # fmt: skip
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry.with_providers(tracer_provider, MeterProvider(metric_readers=[reader]))
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        cb.services.telemetry = telemetry
        cb.services.metrics.observers.append(telemetry.record)
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        await barge_in_then_reconnect(call, voicelive)
        await call.hang_up()
        await eventually(lambda: not cb.services.registry.calls, 10, "the call ended")
    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.name == "call"]
    assert root.parent is None and root.attributes is not None
    assert root.attributes["callbot.transport"] == "acs"
    assert root.attributes["callbot.correlation_id"] == call.answered.correlation_id
    assert root.attributes["callbot.end_reason"]
    children = sorted(s.name for s in finished if s is not root)
    assert children == ["answer_call", "voicelive.connect", "voicelive.connect", "voicelive.reconnect",
                        "voicelive.session_update", "voicelive.session_update"], children
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}, "one trace per call"
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in finished if s is not root)
    assert all(s.end_time is not None and s.start_time is not None and s.end_time >= s.start_time for s in finished)
    events = [e.name for e in root.events]
    assert events.count("barge_in") == 1 and events.count("first_bot_audio") == 1, events
    data = reader.get_metrics_data()
    assert data is not None
    points = {m.name: m.data.data_points for rm in data.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}  # fmt: skip
    [barge] = points["callbot.barge_in_reaction"]
    assert barge.count == 1 and dict(barge.attributes or {}) == {"transport": "acs"}
    assert sum(p.count for p in points["callbot.voicelive_connect"]) == 2
    assert len(finished) < 10, "no span per frame or message"


CONSOLE = """
from callbot.telemetry import Telemetry
telemetry = Telemetry.from_environment()
trace = telemetry.call("c1", "twilio", "CA123")
trace.observed("barge_in_reaction_seconds", 0.002, {})
trace.end("caller_hung_up")
telemetry.shutdown()
"""


async def test_otel_traces_exporter_console_prints_the_calls_span() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONSOLE, env={**os.environ, "OTEL_TRACES_EXPORTER": "console"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    assert '"name": "call"' in text and '"callbot.correlation_id": "CA123"' in text and '"barge_in"' in text


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []

    async def accept(request: web.Request) -> web.Response:
        received.append((request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", accept)
    app.router.add_post("/v1/metrics", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


async def test_otel_exporter_otlp_endpoint_sends_the_calls_trace_over_otlp_http(
        collector: tuple[str, list[tuple[str, bytes]]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "callbot-test")
    telemetry = Telemetry.from_environment()
    assert telemetry is not None and telemetry.mode == "sdk"
    trace_ = telemetry.call("c2", "acs", "corr-9")
    assert trace_ is not None
    trace_.child("voicelive.connect", 0.12, {"callbot.outcome": "ok"})
    trace_.end("caller_hung_up")
    telemetry.record("response_latency_seconds", 0.8, {"transport": "acs"})
    await asyncio.to_thread(telemetry.shutdown)  # flushes both exporters
    paths = sorted({path for path, _ in received})
    assert paths == ["/v1/metrics", "/v1/traces"], paths
    request = ExportTraceServiceRequest.FromString(next(body for path, body in received if path == "/v1/traces"))
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "callbot-test"
    names = sorted(s.name for ss in resource_spans.scope_spans for s in ss.spans)
    assert names == ["call", "voicelive.connect"]


async def test_an_agent_hang_up_is_a_span_of_the_call_and_the_calls_log_lines_carry_its_trace_id(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:  # fmt: skip
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry.with_providers(tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    level = root_logger.level
    root_logger.setLevel(logging.INFO)
    try:
        correlate_logs()
        async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
            cb.services.telemetry = telemetry
            call = await place(phone, cb.url)
            session = await ready_session(voicelive)
            [live] = cb.services.registry.calls.values()
            assert session.received[0]["session"]["metadata"] == {
                "callbot_call_id": live.call_id, "correlation_id": call.answered.correlation_id}
            await session.start_response(text="Goodbye!", audio=speechlike(400, seed=3), chunk_ms=100,
                                         calls=(FunctionCall("end_call", "{}"),))
            async with asyncio.timeout(10):
                await call.ended.wait()
            await eventually(lambda: not cb.services.registry.calls, 10, "the call ended")
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.name == "call"]
    [hang_up] = [s for s in finished if s.name == "hang_up"]
    assert hang_up.parent is not None and hang_up.parent.span_id == root.context.span_id
    assert hang_up.attributes is not None and hang_up.attributes["callbot.reason"]
    assert [e.name for e in root.events].count("media_socket_accepted") == 1
    trace_id = f"{root.context.trace_id:032x}"
    bridge_lines = [line for line in lines.getvalue().splitlines() if "bridge ended" in line]
    assert bridge_lines and all(f"trace={trace_id}" in line for line in bridge_lines), bridge_lines
    incoming = [line for line in lines.getvalue().splitlines() if "incoming from" in line]
    assert incoming and "trace=" not in incoming[0], "outside the call's span: no ids"


async def test_callbot_serve_with_the_console_exporter_prints_a_dialled_calls_trace(tmp_path: Path) -> None:
    profile = dataclasses.replace(LocalProfile.generate(), acs_port=free_port(), jwks_port=free_port())
    (tmp_path / "profile.json").write_text(profile.to_json())
    (tmp_path / "call.script").write_text("say what are your opening hours\n")
    port = free_port()
    env = {**subprocess_env(tmp_path), "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_SERVICE_NAME": "callbot-test"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--port", str(port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        await wait_until_ready(f"http://127.0.0.1:{port}", server, 30)
        dial = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbot", "dial", f"http://127.0.0.1:{port}", "--script", "call.script",
            "--out", "out", "--greeting-wait", "3", cwd=tmp_path, env=subprocess_env(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        dialled, dial_err = await asyncio.wait_for(dial.communicate(), 90)
        assert dial.returncode == 0, dialled.decode() + dial_err.decode()
    finally:
        server.terminate()  # the drain, then shutdown flushes the exporter
        out, err = await asyncio.wait_for(server.communicate(), 60)
    spans = out.decode()
    assert '"name": "call"' in spans and '"name": "answer_call"' in spans and '"name": "voicelive.connect"' in spans
    assert '"service.name": "callbot-test"' in spans
    trace_id = re.search(r'"trace_id": "0x([0-9a-f]{32})"', spans)
    assert trace_id is not None, spans[:2000]
    assert f"trace={trace_id.group(1)}" in err.decode(), "the call's log lines carry its trace id"
