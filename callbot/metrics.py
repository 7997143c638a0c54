"""The process's counters, labelled counters, summaries and gauges (one `Metrics` per app instance, owned by
`Services`), rendered in the Prometheus text format at /metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and gauges rendered in the Prometheus text format at /metrics."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.labeled: dict[str, Counter[tuple[tuple[str, str], ...]]] = {}
        self.summaries: dict[str, tuple[float, int]] = {}
        self.gauges: dict[str, Any] = {}

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
    if bridge.tool_stats.timed:
        metrics.observe_sum("tool_latency_seconds", bridge.tool_stats.latency_s, bridge.tool_stats.timed)
