"""Cut a byte stream into fixed-size audio frames, carrying the remainder across calls."""

from __future__ import annotations


def frame_bytes(sample_rate: int, ms: int = 20) -> int:
    """Bytes in one ``ms`` frame of 16-bit mono PCM at ``sample_rate`` (640 for 16 kHz / 20 ms)."""
    samples, rem = divmod(sample_rate * ms, 1000)
    if sample_rate <= 0 or ms <= 0 or rem:
        raise ValueError(f"{ms} ms at {sample_rate} Hz is not a whole, positive number of samples")
    return samples * 2


class Framer:
    """Accumulates bytes and hands out complete frames of ``frame_bytes`` bytes.

    Data is appended to one ``bytearray`` and complete frames are cut off its front once per
    :meth:`push`, so the cost is linear in the bytes pushed whatever the chunk sizes.
    """

    def __init__(self, frame_bytes: int, silence_byte: int = 0x00) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self._size = frame_bytes
        self._pad = bytes([silence_byte])  # 0x00 for PCM; G.711 silence is 0xFF (mu-law) / 0xD5 (A-law)
        self._buf = bytearray()

    @property
    def frame_bytes(self) -> int:
        return self._size

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a complete frame."""
        return len(self._buf)

    def push(self, data: bytes | bytearray) -> list[bytes]:
        """Add ``data``; return every complete frame now available (possibly none)."""
        size = self._size
        buf = self._buf
        if not buf and len(data) == size:  # the common case: the source already sends whole frames
            return [bytes(data)]
        buf += data
        usable = len(buf) - len(buf) % size
        if not usable:
            return []
        with memoryview(buf) as view:
            frames = [bytes(view[i : i + size]) for i in range(0, usable, size)]
        del buf[:usable]
        return frames

    def flush(self, pad: bool = True) -> bytes | None:
        """Return the held partial frame (padded with silence to a full frame when ``pad``) and empty the buffer.

        Returns ``None`` when nothing is held.
        """
        if not self._buf:
            return None
        tail = bytes(self._buf)
        self._buf.clear()
        if pad:
            tail += self._pad * (self._size - len(tail))
        return tail

    def clear(self) -> None:
        """Drop whatever is held."""
        self._buf.clear()
