"""G.711 u-law / A-law <-> 16-bit little-endian mono PCM.

Thin wrappers over :mod:`audioop` (stdlib up to Python 3.12, the ``audioop-lts`` package from 3.13).
``audioop`` works in native byte order, so the PCM side is byte-swapped on big-endian hosts to keep
the little-endian wire format.
"""

from __future__ import annotations

import audioop
import sys

_BIG_ENDIAN = sys.byteorder == "big"


def _check_pcm16(pcm: bytes) -> None:
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")


def _to_native(pcm: bytes) -> bytes:
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


_from_native = _to_native


def ulaw_to_pcm16(b: bytes) -> bytes:
    """Decode G.711 u-law bytes (one byte per sample) to 16-bit LE PCM."""
    return _from_native(audioop.ulaw2lin(b, 2))


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit LE PCM to G.711 u-law (one byte per sample)."""
    _check_pcm16(pcm)
    return audioop.lin2ulaw(_to_native(pcm), 2)


def alaw_to_pcm16(b: bytes) -> bytes:
    """Decode G.711 A-law bytes (one byte per sample) to 16-bit LE PCM."""
    return _from_native(audioop.alaw2lin(b, 2))


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Encode 16-bit LE PCM to G.711 A-law (one byte per sample)."""
    _check_pcm16(pcm)
    return audioop.lin2alaw(_to_native(pcm), 2)
