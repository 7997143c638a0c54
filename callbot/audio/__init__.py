"""Telephone audio: G.711 codecs, 20 ms framing and streaming sample-rate conversion."""

from callbot.audio.bench import measure_frame_costs
from callbot.audio.framing import Framer, frame_bytes
from callbot.audio.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.audio.resample import Resampler

__all__ = [
    "Framer",
    "Resampler",
    "alaw_to_pcm16",
    "frame_bytes",
    "measure_frame_costs",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]
