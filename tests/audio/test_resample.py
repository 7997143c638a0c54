"""Numerical behaviour of the streaming polyphase resampler."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from callbot.audio import Resampler, measure_frame_costs

Samples = npt.NDArray[np.float64]

TELEPHONE_PAIRS = [
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (8000, 16000),
    (16000, 8000),
]
ODD_PAIRS = [(22050, 24000), (22050, 16000), (44100, 8000)]


def tone(freq: float, rate: int, seconds: float, amplitude: float = 16000.0) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def noise(samples: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-12000, 12000, samples).astype("<i2").tobytes()


def as_array(pcm: bytes) -> Samples:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def one_shot(src: int, dst: int, pcm: bytes) -> bytes:
    r = Resampler(src, dst)
    return r.process(pcm) + r.flush()


def chunked(src: int, dst: int, pcm: bytes, sizes: list[int]) -> bytes:
    """Feed ``pcm`` in chunks of the given sample counts (cycled), then flush."""
    r = Resampler(src, dst)
    out = bytearray()
    pos, i = 0, 0
    while pos < len(pcm):
        n = sizes[i % len(sizes)] * 2
        out += r.process(pcm[pos : pos + n])
        pos += n
        i += 1
    return bytes(out + r.flush())


def fit_tone(x: Samples, rate: int, freq: float) -> tuple[float, float]:
    """Least-squares fit of a sinusoid at ``freq``: (amplitude, residual RMS relative to it, in dB)."""
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fitted = basis @ coef
    residual = x - fitted
    amplitude = float(math.hypot(coef[0], coef[1]))
    rms_fit = amplitude / math.sqrt(2)
    rms_res = float(np.sqrt(np.mean(residual**2)))
    return amplitude, 20 * math.log10(max(rms_res, 1e-9) / rms_fit)


def steady(x: Samples, rate: int) -> Samples:
    """Drop 10 ms at each end (filter start-up and tail)."""
    skip = rate // 100
    return x[skip : x.size - skip]


@pytest.mark.parametrize(
    ("src", "dst", "freq"),
    [
        (24000, 8000, 5000),
        (24000, 8000, 4700),
        (24000, 8000, 7000),
        (24000, 8000, 11000),
        (16000, 8000, 5000),
        (16000, 8000, 7500),
        (24000, 16000, 9500),
        (24000, 16000, 11500),
        (22050, 16000, 9500),
    ],
)
def test_downsampling_rejects_tones_above_new_nyquist_by_60db(src: int, dst: int, freq: int) -> None:
    inp = tone(freq, src, 0.5)
    out = steady(as_array(one_shot(src, dst, inp)), dst)
    rms_in = float(np.sqrt(np.mean(as_array(inp) ** 2)))
    rms_out = float(np.sqrt(np.mean(out**2)))
    rejection_db = 20 * math.log10(max(rms_out, 1e-9) / rms_in)
    assert rejection_db <= -60, f"{freq} Hz at {src}->{dst}: only {rejection_db:.1f} dB down"


@pytest.mark.parametrize(("src", "dst"), [(8000, 24000), (8000, 16000), (16000, 24000), (22050, 24000)])
@pytest.mark.parametrize("freq", [1000, 3000])
def test_upsampling_images_are_60db_below_the_tone(src: int, dst: int, freq: int) -> None:
    out = steady(as_array(one_shot(src, dst, tone(freq, src, 0.5))), dst)
    amplitude, residual_db = fit_tone(out, dst, freq)
    # everything that is not the tone (spectral images, distortion, rounding) is the residual
    assert amplitude == pytest.approx(16000, rel=0.06)
    assert residual_db <= -60, f"images only {residual_db:.1f} dB down"


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS + ODD_PAIRS)
@pytest.mark.parametrize("freq", [300, 1000, 3000])
def test_passband_tone_keeps_its_amplitude_within_half_a_db(src: int, dst: int, freq: int) -> None:
    out = steady(as_array(one_shot(src, dst, tone(freq, src, 0.3))), dst)
    amplitude, residual_db = fit_tone(out, dst, freq)
    gain_db = 20 * math.log10(amplitude / 16000)
    assert abs(gain_db) < 0.5
    assert residual_db < -60


@pytest.mark.parametrize(("low", "high"), [(8000, 24000), (16000, 24000), (8000, 16000)])
@pytest.mark.parametrize("freq", [1000, 3100])
def test_round_trip_through_a_higher_rate_keeps_a_tone_above_40db_snr(low: int, high: int, freq: int) -> None:
    pcm = tone(freq, low, 0.5)
    up, down = Resampler(low, high), Resampler(high, low)
    y = as_array(down.process(up.process(pcm)))
    delay = round((up.delay_ms + down.delay_ms) * low / 1000)
    ref, got = steady(as_array(pcm)[: y.size - delay], low), steady(y[delay:], low)
    error_energy = max(float(np.sum((ref - got) ** 2)), 1.0)  # a 1 kHz tone often comes back bit-exact
    snr_db = 10 * math.log10(float(np.sum(ref**2)) / error_energy)
    assert snr_db > 40


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS + ODD_PAIRS)
def test_chunked_processing_matches_one_shot(src: int, dst: int) -> None:
    pcm = noise(src // 2)
    whole = as_array(one_shot(src, dst, pcm))
    # irregular chunks, including empty and single-sample ones
    parts = as_array(chunked(src, dst, pcm, [1, 0, 7, 160, 333, 2, 0, 481, 13]))
    assert parts.size == whole.size
    assert np.max(np.abs(parts - whole)) <= 1  # identical up to float rounding at a .5 boundary


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS)
def test_20ms_frames_have_no_clicks_at_frame_boundaries(src: int, dst: int) -> None:
    pcm = tone(440, src, 0.4)
    whole = as_array(one_shot(src, dst, pcm))
    framed = as_array(chunked(src, dst, pcm, [src // 50]))
    assert framed.size == whole.size
    assert np.max(np.abs(framed - whole)) <= 1
    # a 440 Hz sine at 16000 moves at most 2*pi*f*A/fs per sample: any frame-edge glitch would exceed it
    max_step = 2 * math.pi * 440 * 16000 / dst
    body = steady(framed, dst)
    assert np.max(np.abs(np.diff(body))) <= max_step * 1.02 + 2


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS + ODD_PAIRS)
def test_output_length_is_exact_after_every_chunk(src: int, dst: int) -> None:
    r = Resampler(src, dst)
    rng = np.random.default_rng(5)
    fed = produced = 0
    for _ in range(300):
        n = int(rng.integers(0, 200))
        produced += len(r.process(bytes(2 * n))) // 2
        fed += n
        assert produced == math.ceil(fed * dst / src)


def test_long_stream_of_tiny_chunks_does_not_drift() -> None:
    r = Resampler(22050, 16000)
    produced = sum(len(r.process(bytes(2 * n))) // 2 for n in [1, 2, 3, 5, 7] * 4000)
    fed = 18 * 4000
    assert produced == math.ceil(fed * 16000 / 22050)


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS + ODD_PAIRS)
def test_delay_ms_matches_the_measured_impulse_position(src: int, dst: int) -> None:
    x = np.zeros(src // 10, dtype="<i2")
    at = src // 20  # 50 ms in
    x[at] = 30000
    out = as_array(one_shot(src, dst, x.tobytes()))
    r = Resampler(src, dst)
    peak_ms = np.argmax(out) * 1000 / dst
    assert peak_ms == pytest.approx(50 + r.delay_ms, abs=1000 / dst + 1000 / src)


@pytest.mark.parametrize(("src", "dst"), TELEPHONE_PAIRS + ODD_PAIRS)
def test_flush_drains_the_delay_and_resets(src: int, dst: int) -> None:
    pcm = tone(1000, src, 0.1)
    r = Resampler(src, dst)
    body = r.process(pcm)
    tail = r.flush()
    total = (len(body) + len(tail)) // 2
    delay_out = r.delay_ms * dst / 1000
    assert total == pytest.approx(len(pcm) // 2 * dst / src + delay_out, abs=dst / src + 1)
    assert np.max(np.abs(as_array(tail))) > 1000  # the last of the tone came out of the filter
    # after flush the resampler starts a fresh stream
    assert r.process(pcm) == Resampler(src, dst).process(pcm)


def test_reset_forgets_history() -> None:
    r = Resampler(8000, 24000)
    r.process(noise(500))
    r.reset()
    pcm = noise(400, seed=9)
    assert r.process(pcm) == Resampler(8000, 24000).process(pcm)


def test_equal_rates_pass_audio_through() -> None:
    r = Resampler(16000, 16000)
    pcm = noise(321)
    assert r.process(pcm) == pcm
    assert r.flush() == b""
    assert r.delay_ms == 0


def test_odd_byte_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        Resampler(8000, 24000).process(b"\x00\x01\x02")


def test_loud_input_is_clipped_not_wrapped() -> None:
    # a full-scale square wave overshoots after low-pass filtering (Gibbs): must clip at the int16 limits
    square = np.where(np.arange(4000) // 40 % 2 == 0, 32767, -32768).astype("<i2").tobytes()
    out = as_array(one_shot(8000, 24000, square))
    assert np.max(out) == 32767
    assert np.min(out) == -32768
    assert np.max(np.abs(np.diff(out))) < 40000  # no wrap-around jumps of ~65536


def test_measure_frame_costs_reports_every_stage() -> None:
    costs = measure_frame_costs(iterations=20)
    assert set(costs) == {
        "ulaw_decode_encode_8k",
        "resample_8k_to_24k",
        "resample_24k_to_8k",
        "resample_16k_to_24k",
        "resample_24k_to_16k",
        "b64_orjson_audiodata_24k",
    }
    assert all(0 < v < 50_000 for v in costs.values())
