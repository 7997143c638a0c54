"""Audio shipped with callbot.

`apology-8k.ulaw`: "I'm sorry, our assistant is unavailable right now. Please call again later. Goodbye." spoken by
espeak-ng (8 kHz G.711 u-law, 5.5 s), played over the media socket when Voice Live cannot be reached, so a caller is
never left in silence. Regenerate with `python -m callbot.assets`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.audio.formats import Audio

APOLOGY_TEXT = "I'm sorry, our assistant is unavailable right now. Please call again later. Goodbye."


@lru_cache(maxsize=4)
def apology(sample_rate: int) -> bytes:
    """The apology as 16-bit PCM at `sample_rate` (cached: immutable bytes, computed once per rate)."""
    pcm = ulaw_to_pcm16(files("callbot.assets").joinpath("apology-8k.ulaw").read_bytes())
    resampler = Resampler(8000, sample_rate)
    return resampler.process(pcm) + resampler.flush()


def apology_for(audio: Audio) -> bytes:
    """The apology in a transport's own audio: 16-bit PCM at its rate, or the shipped mu-law as is (Twilio)."""
    if audio.codec == "ulaw" and audio.sample_rate == 8000:
        return files("callbot.assets").joinpath("apology-8k.ulaw").read_bytes()
    if audio.codec != "pcm16":
        raise ValueError(f"no apology in {audio.codec} audio")
    return apology(audio.sample_rate)


def _regenerate() -> None:
    from pathlib import Path

    from callbot.local.speech.tts import Speaker

    pcm = Speaker(rate_wpm=165).synthesize(APOLOGY_TEXT, sample_rate=8000)
    Path(__file__).with_name("apology-8k.ulaw").write_bytes(pcm16_to_ulaw(pcm))


if __name__ == "__main__":
    _regenerate()
