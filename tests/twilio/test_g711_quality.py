"""The measurement behind CALLBOT_TWILIO_MODEL_AUDIO's default: the pcm16 round trip stays near mu-law's own noise."""

from __future__ import annotations

from callbot.benchmark.g711_quality import chirp, cpu_per_call_second, quality, round_trip


def test_the_pcm16_round_trip_keeps_a_chirp_within_mu_laws_own_noise_and_its_length() -> None:
    audio = chirp(1.0)
    assert len(round_trip(audio)) >= len(audio)
    snr, same = quality(audio)
    assert snr > 35.0 and same > 80.0, (snr, same)


def test_the_cpu_measurement_runs_both_modes() -> None:
    assert cpu_per_call_second("g711_ulaw", 0.2) >= 0.0
    assert cpu_per_call_second("pcm16", 0.2) >= 0.0
