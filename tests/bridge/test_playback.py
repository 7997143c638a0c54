"""Playback: pacing against real time and what the caller heard when it stops."""

from __future__ import annotations

from callbot.bridge.playback import Playback


def make(lead_ms: int = 100) -> Playback:
    p = Playback(sample_rate=24000, lead_ms=lead_ms, max_queue_ms=1000)
    p.media_ready = True
    return p


def test_release_keeps_at_most_the_lead_ahead_of_real_time() -> None:
    p = make(lead_ms=100)
    p.add(p.item("i1", "r1"), b"\x01" * 960 * 20)
    assert len(p.release(0.0)) == 5  # 100 ms of lead
    assert p.release(0.0) == []
    assert len(p.release(0.040)) == 2
    assert abs(p.next_release() - 0.060) < 1e-9  # type: ignore[operator]


def test_nothing_is_released_before_the_media_socket_is_attached() -> None:
    p = Playback(sample_rate=16000, lead_ms=100, max_queue_ms=1000)
    p.add(p.item("i1", "r1"), b"\x01" * 640 * 3)
    assert p.release(1.0) == [] and p.next_release() is None and not p.playing(1.0)
    p.media_ready = True
    assert len(p.release(2.0)) == 3


def test_interrupt_reports_heard_audio_per_item_and_bumps_the_epoch() -> None:
    p = make(lead_ms=100)
    p.add(p.item("i1", "r1"), b"\x01" * 960 * 50)  # 1 s
    for t in range(0, 31):
        p.release(t / 100)
    was_playing, heard, responses = p.interrupt(0.30)
    assert was_playing and responses == {"r1"} and p.epoch == 1
    assert [(h.item.item_id, h.audio_end_ms) for h in heard] == [("i1", 300)]
    assert not p.queue and not p.playing(0.30)
    assert p.interrupt(0.5) == (False, [], set()), "an item is truncated once"


def test_local_audio_plays_but_is_never_truncated() -> None:
    p = make()
    p.add_local(b"\x02" * 1000)
    frames = p.release(0.0)
    assert len(frames) == 2 and frames[1][40:] == bytes(920)
    _, heard, _ = p.interrupt(0.01)
    assert heard == []


def test_queue_is_bounded_and_counts_what_it_drops() -> None:
    p = Playback(sample_rate=24000, lead_ms=100, max_queue_ms=100)
    p.add(p.item("i1", "r1"), b"\x01" * 960 * 8)
    assert len(p.queue) == 5 and p.dropped == 3
