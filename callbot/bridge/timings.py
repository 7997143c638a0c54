"""What one call's caller waited for, measured as the call goes (the latency histograms of `callbot.metrics`).

Pure: the runner passes the time and says what happened; each measurement goes to `sink(name, seconds, labels)`
(the process's histograms, and OpenTelemetry's when it is on) and to `observations` (bounded; for tests and the
call's span). Measured here, all in seconds of the loop's clock:
- `first_bot_audio_seconds`: the bridge started (the call being answered) to the first bot audio sent to the phone;
- `response_latency_seconds`: the caller stopped speaking (`input_audio_buffer.speech_stopped`) to the first bot
  audio sent after it; the caller speaking again before any audio cancels the wait;
- `barge_in_reaction_seconds`: `input_audio_buffer.speech_started` to the stop sent to the phone (StopAudio, `clear`,
  the web page's stop); a speech_started with nothing playing sends no stop and is not counted;
- `voicelive_connect_seconds` (outcome ok / failed) and `voicelive_reconnect_gap_seconds`;
- `tool_latency_seconds` (outcome).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Sink = Callable[[str, float, Mapping[str, str]], None]
MAX_KEPT = 1000


class CallTimings:
    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink
        self.observations: list[tuple[str, float, dict[str, str]]] = []
        self.started_at: float | None = None
        self.first_audio_at: float | None = None
        self.speech_started_at: float | None = None
        self.speech_stopped_at: float | None = None
        self.session_update_at: float | None = None

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        if len(self.observations) < MAX_KEPT:
            self.observations.append((name, seconds, labels))
        if self.sink is not None:
            self.sink(name, seconds, labels)

    def start(self, now: float) -> None:
        self.started_at = now

    def voicelive_event(self, now: float, kind: str) -> None:
        if kind == "input_audio_buffer.speech_started":
            self.speech_started_at, self.speech_stopped_at = now, None
        elif kind == "input_audio_buffer.speech_stopped":
            self.speech_stopped_at, self.speech_started_at = now, None

    def audio_sent(self, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
            if self.started_at is not None:
                self.observe("first_bot_audio_seconds", now - self.started_at)
        if self.speech_stopped_at is not None:
            self.observe("response_latency_seconds", now - self.speech_stopped_at)
            self.speech_stopped_at = None

    def session_update_sent(self, now: float) -> None:
        self.session_update_at = now

    def session_updated(self, now: float) -> None:
        """`session.updated` came: how long the service took to apply the call's configuration (a trace span;
        not a /metrics histogram)."""
        sent = self.session_update_at
        if sent is not None:
            self.observe("voicelive_session_update_seconds", now - sent)
            self.session_update_at = None

    def stop_sent(self, now: float) -> None:
        if self.speech_started_at is not None:
            self.observe("barge_in_reaction_seconds", now - self.speech_started_at)
            self.speech_started_at = None
