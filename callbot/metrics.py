"""The process's counters, labelled counters, summaries and gauges (one `Metrics` per app instance, owned by
`Services`), rendered in the Prometheus text format at /metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callbot.bridge.runner import CallBridge

# Call Automation events counted by name at /metrics; any other type counts as "other" (bounded metric names).
ACS_EVENT_NAMES = frozenset({
    "CallConnected", "CallDisconnected", "CallTransferAccepted", "CallTransferFailed", "ParticipantsUpdated",
    "AddParticipantSucceeded", "AddParticipantFailed", "RemoveParticipantSucceeded", "RemoveParticipantFailed",
    "CancelAddParticipantSucceeded", "CancelAddParticipantFailed", "PlayStarted", "PlayCompleted", "PlayFailed",
    "PlayCanceled", "RecognizeCompleted", "RecognizeFailed", "RecognizeCanceled", "SendDtmfTonesCompleted",
    "SendDtmfTonesFailed", "ContinuousDtmfRecognitionToneReceived", "ContinuousDtmfRecognitionToneFailed",
    "ContinuousDtmfRecognitionStopped", "MediaStreamingStarted", "MediaStreamingStopped", "MediaStreamingFailed",
    "TranscriptionStarted", "TranscriptionStopped", "TranscriptionUpdated", "TranscriptionFailed", "HoldFailed",
    "AnswerFailed", "CreateCallFailed", "ConnectFailed",
})


# Latency histograms, in seconds (Prometheus `_bucket`/`_sum`/`_count`; labels: transport, outcome, never a call id).
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # in-process reactions
SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)  # network round trips, people waiting
HISTOGRAMS: Mapping[str, tuple[tuple[float, ...], str]] = MappingProxyType({
    "answer_seconds": (SLOW, "IncomingCall to the call answered (ACS answer_call returned)"),
    "first_bot_audio_seconds": (SLOW, "bridge start (the call being answered) to the first bot audio sent"),
    "response_latency_seconds": (SLOW, "the caller stopped speaking (speech_stopped) to the first bot audio sent"),
    "barge_in_reaction_seconds": (FAST, "speech_started to the stop sent to the phone (StopAudio / clear / stop)"),
    "voicelive_connect_seconds": (SLOW, "opening a Voice Live session (connect; outcome ok or failed)"),
    "voicelive_reconnect_gap_seconds": (SLOW, "a session lost to the next one open"),
    "tool_latency_seconds": (SLOW, "one operator tool call (outcome: ok, error, timeout, ...)"),
})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and gauges rendered in the Prometheus text format at /metrics."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.labeled: dict[str, Counter[tuple[tuple[str, str], ...]]] = {}
        self.summaries: dict[str, tuple[float, int]] = {}
        self.gauges: dict[str, Any] = {}
        # name -> labels -> [bucket counts..., +Inf count] and sum
        self.histograms: dict[str, dict[tuple[tuple[str, str], ...], tuple[list[int], float]]] = {}
        self.observers: list[Callable[[str, float, Mapping[str, str]], None]] = []  # e.g. OpenTelemetry's

    def observe(self, name: str, seconds: float, labels: Mapping[str, str] | None = None) -> None:
        """One observation of a latency histogram of `HISTOGRAMS` (unknown names and negative values are skipped)."""
        spec = HISTOGRAMS.get(name)
        if spec is None or not seconds >= 0:
            return
        key = tuple(sorted((labels or {}).items()))
        series = self.histograms.setdefault(name, {})
        counts, total = series.get(key) or ([0] * (len(spec[0]) + 1), 0.0)
        for i, bound in enumerate(spec[0]):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        series[key] = (counts, total + seconds)
        for observer in self.observers:
            observer(name, seconds, labels or {})

    def inc(self, name: str, by: int = 1) -> None:
        self.counters[name] += by

    def inc_labeled(self, name: str, labels: Mapping[str, str], by: int = 1) -> None:
        self.labeled.setdefault(name, Counter())[tuple(sorted(labels.items()))] += by

    def observe_sum(self, name: str, total: float, count: int) -> None:
        """Add `count` observations adding up to `total` to a summary (rendered as _sum and _count)."""
        old_total, old_count = self.summaries.get(name, (0.0, 0))
        self.summaries[name] = (old_total + total, old_count + count)

    def render(self) -> str:
        lines = []
        for name, value in sorted(self.counters.items()):
            lines.append(f"# TYPE callbot_{name}_total counter\ncallbot_{name}_total {value}")
        for name, series in sorted(self.labeled.items()):
            lines.append(f"# TYPE callbot_{name}_total counter")
            for labels, value in sorted(series.items()):
                shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels)
                lines.append(f"callbot_{name}_total{{{shown}}} {value}")
        for name, (total, count) in sorted(self.summaries.items()):
            lines.append(f"# TYPE callbot_{name} summary\ncallbot_{name}_sum {total:.6f}\ncallbot_{name}_count {count}")
        for name, hist in sorted(self.histograms.items()):
            lines.append(f"# HELP callbot_{name} {HISTOGRAMS[name][1]}\n# TYPE callbot_{name} histogram")
            bounds = HISTOGRAMS[name][0]
            for labels, (counts, total) in sorted(hist.items()):
                shown = "".join(f'{k}="{_label(v)}",' for k, v in labels)
                running = 0
                for bound, count in zip((*bounds, "+Inf"), counts, strict=True):
                    running += count
                    lines.append(f'callbot_{name}_bucket{{{shown}le="{bound}"}} {running}')
                plain = f"{{{shown.rstrip(',')}}}" if shown else ""
                lines.append(f"callbot_{name}_sum{plain} {total:.6f}\ncallbot_{name}_count{plain} {running}")
        for name, fn in sorted(self.gauges.items()):
            lines.append(f"# TYPE callbot_{name} gauge\ncallbot_{name} {fn()}")
        return "\n".join(lines) + "\n"


def count_bridge(metrics: Metrics, bridge: CallBridge) -> None:
    """Add a finished call's bridge counters to the process's metrics."""
    stats = bridge.core.stats
    for name, value in (
        ("voicelive_reconnects", bridge.reconnects),
        ("voicelive_unavailable", 1 if bridge.voicelive_failure else 0),
        (f"voicelive_unavailable_{bridge.voicelive_failure or 'none'}", 1 if bridge.voicelive_failure else 0),
        ("barge_ins", stats.barge_ins),
        ("media_malformed", stats.malformed),
        ("caller_audio_dropped_frames", stats.caller_frames_dropped + bridge.outbox.dropped),
        ("caller_audio_resent_frames", stats.caller_frames_resent),
        ("bot_audio_dropped_frames", stats.bot_frames_dropped),
        ("late_deltas_dropped", stats.late_deltas_dropped),
        ("voicelive_errors", stats.voicelive_errors),
        ("dtmf_keys", stats.dtmf),
        ("dtmf_sequences", stats.dtmf_sequences),
        ("tool_calls", stats.tool_calls),
        ("tool_holds", stats.tool_holds),
        ("mcp_approvals", stats.mcp_approvals),
        ("agent_hangups", stats.agent_hangups),
        ("caller_frames", stats.caller_frames),
        ("bot_frames", stats.bot_frames),
    ):
        if value:
            metrics.inc(name, value)
    for (tool, outcome), count in bridge.tool_stats.calls.items():
        metrics.inc_labeled("tool_results", {"tool": tool, "outcome": outcome}, count)
    # latency histograms are observed as the call goes (`CallBridge.timings`), not here
