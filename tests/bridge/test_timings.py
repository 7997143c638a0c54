"""CallTimings: what the caller waited for, from the runner's moments (pure; time passed in)."""

from __future__ import annotations

from callbot.bridge.timings import CallTimings
from callbot.metrics import Metrics

STARTED, STOPPED = "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"


def names(t: CallTimings) -> list[tuple[str, float]]:
    return [(name, round(seconds, 3)) for name, seconds, _ in t.observations]


def test_first_audio_response_latency_and_barge_in_reaction_are_measured_once_each() -> None:
    t = CallTimings()
    t.start(10.0)
    t.audio_sent(11.5)  # the greeting
    t.audio_sent(11.52)
    t.voicelive_event(12.0, STARTED)
    t.stop_sent(12.002)
    t.voicelive_event(13.0, STOPPED)
    t.audio_sent(13.8)
    t.audio_sent(13.82)
    assert names(t) == [("first_bot_audio_seconds", 1.5), ("barge_in_reaction_seconds", 0.002),
                        ("response_latency_seconds", 0.8)]


def test_speaking_again_before_the_answer_restarts_the_wait_and_a_stop_without_speech_is_not_a_reaction() -> None:
    t = CallTimings()
    t.voicelive_event(1.0, STOPPED)
    t.voicelive_event(1.5, STARTED)  # the caller went on talking: nothing played, no stop sent
    t.voicelive_event(2.0, STOPPED)
    t.audio_sent(2.6)
    t.stop_sent(3.0)  # e.g. a drain's stop: no speech_started pending
    assert names(t) == [("response_latency_seconds", 0.6)]


def test_observations_reach_the_sink_with_their_labels() -> None:
    seen: list[tuple[str, float, dict[str, str]]] = []
    t = CallTimings(lambda name, seconds, labels: seen.append((name, seconds, dict(labels))))
    t.observe("tool_latency_seconds", 0.2, outcome="ok")
    assert seen == [("tool_latency_seconds", 0.2, {"outcome": "ok"})]


def test_metrics_render_histograms_as_cumulative_prometheus_buckets() -> None:
    m = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 7.0):
        m.observe("barge_in_reaction_seconds", seconds, {"transport": "acs"})
    m.observe("barge_in_reaction_seconds", -1.0, {"transport": "acs"})  # skipped: not a duration
    m.observe("no_such_histogram", 1.0)  # skipped: unknown names never make new series
    text = m.render()
    assert 'callbot_barge_in_reaction_seconds_bucket{transport="acs",le="0.001"} 1' in text
    assert 'callbot_barge_in_reaction_seconds_bucket{transport="acs",le="0.005"} 3' in text
    assert 'callbot_barge_in_reaction_seconds_bucket{transport="acs",le="1.0"} 3' in text
    assert 'callbot_barge_in_reaction_seconds_bucket{transport="acs",le="+Inf"} 4' in text
    assert 'callbot_barge_in_reaction_seconds_count{transport="acs"} 4' in text
    assert 'callbot_barge_in_reaction_seconds_sum{transport="acs"} 7.006500' in text
    assert "no_such_histogram" not in text
