"""G.711 u-law / A-law against the standard's code points and its known quantisation SNR."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from callbot.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

Codec = Callable[[bytes], bytes]


def pcm_value(b: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(b, dtype="<i2")]


@pytest.mark.parametrize(("code", "expected"), [(0xFF, 0), (0x00, -32124), (0x80, 32124), (0x7F, 0)])
def test_ulaw_golden_vectors(code: int, expected: int) -> None:
    assert pcm_value(ulaw_to_pcm16(bytes([code]))) == [expected]


@pytest.mark.parametrize(("code", "expected"), [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256)])
def test_alaw_golden_vectors(code: int, expected: int) -> None:
    assert pcm_value(alaw_to_pcm16(bytes([code]))) == [expected]


def test_pcm_side_is_little_endian() -> None:
    assert ulaw_to_pcm16(b"\x80") == (32124).to_bytes(2, "little", signed=True)
    assert pcm16_to_ulaw((32124).to_bytes(2, "little", signed=True)) == b"\x80"


def test_every_ulaw_code_survives_decode_then_encode() -> None:
    codes = bytes(range(256))
    expected = codes.replace(b"\x7f", b"\xff")  # 0x7F is "negative zero": it re-encodes as 0xFF
    assert pcm16_to_ulaw(ulaw_to_pcm16(codes)) == expected


def test_every_alaw_code_survives_decode_then_encode() -> None:
    codes = bytes(range(256))
    assert pcm16_to_alaw(alaw_to_pcm16(codes)) == codes


@pytest.mark.parametrize("decode", [ulaw_to_pcm16, alaw_to_pcm16])
def test_decoded_levels_are_symmetric_and_cover_the_int16_range(decode: Codec) -> None:
    levels = np.frombuffer(decode(bytes(range(256))), dtype="<i2").astype(int)
    assert sorted(levels) == sorted(-levels)  # sign bit mirrors every level
    assert 32000 < levels.max() <= 32767


def sine_pcm(
    amplitude: float, seconds: float = 0.5, rate: int = 8000, freq: float = 1020.0
) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")


def snr_db(ref: npt.NDArray[np.int16], got: npt.NDArray[np.int16]) -> float:
    r, g = ref.astype(np.float64), got.astype(np.float64)
    return 10 * math.log10(np.sum(r**2) / np.sum((r - g) ** 2))


@pytest.mark.parametrize(
    ("encode", "decode"), [(pcm16_to_ulaw, ulaw_to_pcm16), (pcm16_to_alaw, alaw_to_pcm16)]
)
@pytest.mark.parametrize("level_dbfs", [-3, -10, -20])
def test_round_trip_snr_of_a_sine_is_about_38db(encode: Codec, decode: Codec, level_dbfs: int) -> None:
    x = sine_pcm(32767 * 10 ** (level_dbfs / 20))
    encoded = encode(x.tobytes())
    assert len(encoded) == x.size  # 8 bits per sample
    y = np.frombuffer(decode(encoded), dtype="<i2")
    # G.711's logarithmic companding keeps the SNR near 38 dB over a wide range of levels
    assert 35 < snr_db(x, y) < 41


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_ulaw(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_alaw(b"\x00")


def test_empty_input_gives_empty_output() -> None:
    assert ulaw_to_pcm16(b"") == b""
    assert pcm16_to_alaw(b"") == b""
