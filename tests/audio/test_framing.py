"""Fixed-size framing of a byte stream with leftovers carried between pushes."""

from __future__ import annotations

import random

import pytest

from callbot.audio import Framer, frame_bytes


@pytest.mark.parametrize(
    ("rate", "ms", "expected"), [(8000, 20, 320), (16000, 20, 640), (24000, 20, 960), (16000, 10, 320)]
)
def test_frame_bytes_counts_16bit_mono_samples(rate: int, ms: int, expected: int) -> None:
    assert frame_bytes(rate, ms) == expected


@pytest.mark.parametrize(("rate", "ms"), [(11025, 20), (0, 20), (8000, 0)])
def test_frame_bytes_rejects_fractional_or_empty_frames(rate: int, ms: int) -> None:
    with pytest.raises(ValueError):
        frame_bytes(rate, ms)


def test_partial_pushes_are_held_until_a_frame_completes() -> None:
    f = Framer(320)
    assert f.push(b"a" * 100) == []
    assert f.pending == 100
    frames = f.push(b"b" * 600)
    assert frames == [b"a" * 100 + b"b" * 220, b"b" * 320]
    assert f.pending == 60


def test_any_chunking_reassembles_to_the_original_stream() -> None:
    rng = random.Random(3)
    data = rng.randbytes(50_000)
    f = Framer(960)
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rng.choice([0, 1, 7, 959, 960, 961, 3000])
        frames += f.push(data[pos : pos + n])
        pos += n
    assert all(len(fr) == 960 for fr in frames)
    tail = f.flush(pad=False)
    assert tail is not None
    assert b"".join(frames) + tail == data
    assert len(tail) == len(data) % 960


def test_flush_pads_the_last_partial_frame_with_silence() -> None:
    f = Framer(8)
    f.push(b"\x01\x02\x03")
    assert f.flush() == b"\x01\x02\x03" + b"\x00" * 5
    assert f.pending == 0
    assert f.flush() is None


def test_flush_without_padding_returns_just_the_remainder() -> None:
    f = Framer(8)
    f.push(b"\x01" * 11)
    assert f.flush(pad=False) == b"\x01" * 3


def test_clear_drops_held_bytes() -> None:
    f = Framer(8)
    f.push(b"\x01" * 5)
    f.clear()
    assert f.pending == 0
    assert f.push(b"\x02" * 8) == [b"\x02" * 8]


def test_frames_are_independent_of_the_callers_buffer() -> None:
    f = Framer(4)
    src = bytearray(b"abcd")
    frames = f.push(src)
    src[:] = b"zzzz"
    assert frames == [b"abcd"]
    assert isinstance(frames[0], bytes)


def test_held_bytes_never_exceed_one_frame() -> None:
    # the buffer is trimmed on every push, so it cannot grow (and copies stay linear) however data arrives
    f = Framer(960)
    produced = 0
    for _ in range(20_000):
        produced += len(f.push(b"\x00" * 7))
        assert f.pending < 960
    assert produced * 960 + f.pending == 7 * 20_000


def test_large_push_yields_all_frames_at_once() -> None:
    f = Framer(640)
    frames = f.push(bytes(640 * 1000 + 5))
    assert len(frames) == 1000
    assert f.pending == 5


@pytest.mark.parametrize("size", [0, -1])
def test_frame_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError):
        Framer(size)
