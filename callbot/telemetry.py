"""OpenTelemetry: one trace per call and the latency histograms, exported only when the operator asks for it.

Set-up (`Telemetry.from_environment`, once per process, at `Services` start):
- `APPLICATIONINSIGHTS_CONNECTION_STRING` set: the `azure-monitor-opentelemetry` distro (`configure_azure_monitor`)
  exports traces, metrics and logs to Azure Monitor. Its automatic instrumentations are turned off: they would make
  a span per HTTP request and WebSocket message (per audio frame); callbot makes its own spans, per call.
- else `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp`, `console`, comma-separated; `none`) or an
  `OTEL_EXPORTER_OTLP_ENDPOINT` (then OTLP/HTTP for both): the SDK with those exporters, the SDK reading the other
  standard variables itself (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*`,
  `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`).
- nothing set: `None`, and nothing of OpenTelemetry runs (no provider, no span, no instrument): no cost.

Per call (`CallTrace`): a root span `call` (attributes: call id, transport, the ACS correlation id / Twilio call sid
/ web session), `answer_call` as a child, and from the call's timings (`callbot.bridge.timings`): a child span for each
Voice Live connect attempt (`voicelive.connect`), each `session.update` until `session.updated`
(`voicelive.session_update`), each reconnect gap (`voicelive.reconnect`) and each tool call
(`tool`), each with its real duration; `hang_up` and `transfer` spans around those requests (any transport);
span events for each barge-in (with its reaction time), each answer (response latency), the first bot audio and
the media socket's arrival. The root ends when the call ends, with its end reason. The call's tasks run with its
span current, so their log lines end with `trace=<id> span=<id>` (and the distro's exported logs carry them).
The Voice Live session's `metadata` carries the call id and the correlation id (`session_ids`), so the service's
own logs of the session can be joined to the call. Histogram observations go to OpenTelemetry histograms of the
same names and buckets as `/metrics`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from callbot.metrics import HISTOGRAMS, Metrics

if TYPE_CHECKING:
    from callbot.bridge.timings import Sink
    from callbot.calls import Call

log = logging.getLogger(__name__)

SERVICE_NAME = "callbot"
SPAN_OF: Mapping[str, str] = MappingProxyType({
    "voicelive_connect_seconds": "voicelive.connect", "voicelive_reconnect_gap_seconds": "voicelive.reconnect",
    "tool_latency_seconds": "tool", "voicelive_session_update_seconds": "voicelive.session_update"})
EVENT_OF: Mapping[str, str] = MappingProxyType({
    "barge_in_reaction_seconds": "barge_in", "response_latency_seconds": "bot_answered",
    "first_bot_audio_seconds": "first_bot_audio"})


def _exporters(env: Mapping[str, str], kind: str) -> list[str]:
    value = env.get(f"OTEL_{kind}_EXPORTER", "")
    if not value and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{kind}_ENDPOINT")):
        value = "otlp"
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    return [name for name in names if name != "none"]


class Telemetry:
    def __init__(self, tracer: Any, meter: Any, shutdown: Any, mode: str) -> None:
        self.tracer = tracer
        self.mode = mode
        self._shutdown = shutdown
        self._histograms = {
            name: meter.create_histogram(f"callbot.{name.removesuffix('_seconds')}", unit="s", description=text,
                                         explicit_bucket_boundaries_advisory=list(bounds))
            for name, (bounds, text) in HISTOGRAMS.items()} if meter is not None else {}

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Telemetry | None:
        env = os.environ if env is None else env
        if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            return cls._azure_monitor(env["APPLICATIONINSIGHTS_CONNECTION_STRING"])
        traces, metrics = _exporters(env, "TRACES"), _exporters(env, "METRICS")
        if not traces and not metrics:
            return None
        return cls._sdk(traces, metrics)

    @classmethod
    def _azure_monitor(cls, connection_string: str) -> Telemetry:
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import metrics, trace

        off = {"enabled": False}
        configure_azure_monitor(connection_string=connection_string, logger_name="callbot", instrumentation_options={
            name: off for name in ("azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib",
                                   "urllib3")})  # fmt: skip
        log.info("telemetry: traces, metrics and logs to Azure Monitor (Application Insights)")
        return cls(trace.get_tracer("callbot"), metrics.get_meter("callbot"), None, "azure_monitor")

    @classmethod
    def _sdk(cls, traces: list[str], metrics: list[str]) -> Telemetry:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        resource = Resource.create({"service.name": SERVICE_NAME}).merge(OTELResourceDetector().detect())
        unknown = [name for name in traces + metrics if name not in ("otlp", "console")]
        if unknown:
            log.error("telemetry: unknown OTEL_*_EXPORTER value(s) %s (callbot knows otlp, console, none); ignored",
                      ", ".join(sorted(set(unknown))[:5]))
        tracer_provider = meter_provider = None
        if traces:
            tracer_provider = TracerProvider(resource=resource)
            for name in traces:
                if name == "console":
                    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
                elif name == "otlp":
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if metrics:
            readers = []
            for name in metrics:
                if name == "console":
                    readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
                elif name == "otlp":
                    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                    readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
            meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        log.info("telemetry: traces to %s, metrics to %s", ",".join(traces) or "nowhere",
                 ",".join(metrics) or "nowhere")

        def shutdown() -> None:
            for provider in (tracer_provider, meter_provider):
                if provider is not None:
                    provider.shutdown()

        return cls.with_providers(tracer_provider, meter_provider, shutdown, "sdk")

    @classmethod
    def with_providers(cls, tracer_provider: Any, meter_provider: Any, shutdown: Any = None,
                       mode: str = "given") -> Telemetry:
        """Telemetry on the given SDK providers (tests pass in-memory ones); either may be None."""
        tracer = tracer_provider.get_tracer("callbot") if tracer_provider is not None else None
        meter = meter_provider.get_meter("callbot") if meter_provider is not None else None
        return cls(tracer, meter, shutdown, mode)

    def record(self, name: str, seconds: float, labels: Mapping[str, str]) -> None:
        """A `Metrics.observers` hook: the same observation on the OpenTelemetry histogram."""
        histogram = self._histograms.get(name)
        if histogram is not None:
            histogram.record(seconds, dict(labels))

    def call(self, call_id: str, transport: str, correlation: str | None) -> CallTrace | None:
        if self.tracer is None:
            return None
        attributes = {"callbot.call_id": call_id, "callbot.transport": transport}
        if correlation:
            attributes["callbot.correlation_id"] = correlation
        return CallTrace(self.tracer, self.tracer.start_span("call", attributes=attributes))

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown()


class CallTrace:
    """One call's trace: its root span, children made from what happened (with their real durations)."""

    def __init__(self, tracer: Any, root: Any) -> None:
        from opentelemetry import trace

        self.tracer = tracer
        self.root = root
        self.context = trace.set_span_in_context(root)

    def child(self, name: str, seconds: float, attributes: Mapping[str, str] | None = None) -> None:
        """A child span that ended now and lasted `seconds`."""
        end = time.time_ns()
        span = self.tracer.start_span(name, context=self.context, start_time=end - int(seconds * 1e9),
                                      attributes=dict(attributes or {}))
        span.end(end_time=end)

    def observed(self, name: str, seconds: float, labels: Mapping[str, str]) -> None:
        """A `CallTimings` observation: a child span or an event on the root."""
        if name in SPAN_OF:
            self.child(SPAN_OF[name], seconds, {f"callbot.{k}": v for k, v in labels.items()})
        elif name in EVENT_OF:
            self.root.add_event(EVENT_OF[name], {"callbot.seconds": round(seconds, 6)})

    def task_context(self) -> contextvars.Context:
        """A copy of the current context with the call's span current: the call's tasks run in it, so what they
        log carries the call's trace and span ids (`TraceFormatter`) and their spans are the call's children."""
        from opentelemetry import context

        ctx = contextvars.copy_context()
        ctx.run(context.attach, self.context)
        return ctx

    def end(self, reason: str) -> None:
        self.root.set_attribute("callbot.end_reason", reason)
        self.root.end()


def session_ids(call: Call) -> dict[str, str]:
    """The Voice Live session's `metadata`: callbot's call id and the transport's correlation id (ACS correlation
    id, Twilio call sid), whether or not telemetry is on (service-side logs join the call by them)."""
    ids = {"callbot_call_id": call.call_id}
    if call.correlation_id:
        ids["correlation_id"] = call.correlation_id
    return ids


def traced(call: Call, name: str, action: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
    """`action(reason)` (a hang-up, a transfer) as a span of the call's trace, when it has one: its duration, the
    reason, and an error status when it raised."""

    async def run(reason: str) -> None:
        trace: CallTrace | None = call.trace
        if trace is None:
            await action(reason)
            return
        from opentelemetry.trace import Status, StatusCode

        with trace.tracer.start_as_current_span(name, context=trace.context, record_exception=False,
                                                set_status_on_exception=False) as span:
            span.set_attribute("callbot.reason", reason)
            try:
                await action(reason)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    return run


class TraceFormatter(logging.Formatter):
    """The log format plus `trace=<id> span=<id>` on lines logged inside a span (a call's tasks)."""

    def format(self, record: logging.LogRecord) -> str:
        from opentelemetry import trace

        line = super().format(record)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            line += f" trace={ctx.trace_id:032x} span={ctx.span_id:016x}"
        return line


def correlate_logs() -> None:
    """Give the root logger's handlers the `TraceFormatter` (same format): called when telemetry is on."""
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        if current is not None and not isinstance(current, TraceFormatter):
            handler.setFormatter(TraceFormatter(current._fmt, current.datefmt))


def call_sink(metrics: Metrics, telemetry: Telemetry | None, call: Call, transport: str) -> Sink:
    """Where a call's timings go: the process's histograms (labelled by transport) and, when OpenTelemetry exports,
    the call's trace (started here if the call has none yet)."""
    if telemetry is not None and call.trace is None:
        call.trace = telemetry.call(call.call_id, transport, call.correlation_id)
    trace: CallTrace | None = call.trace

    def observe(name: str, seconds: float, labels: Mapping[str, str]) -> None:
        metrics.observe(name, seconds, {"transport": transport, **labels})
        if trace is not None:
            trace.observed(name, seconds, labels)

    return observe
