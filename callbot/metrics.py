"""The process's counters and gauges (one `Metrics` per app instance, owned by `Services`), in Prometheus text."""

from __future__ import annotations

from collections import Counter
from typing import Any

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


class Metrics:
    """Counters and gauges rendered in the Prometheus text format at /metrics."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, Any] = {}

    def inc(self, name: str, by: int = 1) -> None:
        self.counters[name] += by

    def render(self) -> str:
        lines = []
        for name, value in sorted(self.counters.items()):
            lines.append(f"# TYPE callbot_{name}_total counter\ncallbot_{name}_total {value}")
        for name, fn in sorted(self.gauges.items()):
            lines.append(f"# TYPE callbot_{name} gauge\ncallbot_{name} {fn()}")
        return "\n".join(lines) + "\n"
