"""The one audio-format table: what each format is, and that it names what the SDKs name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from azure.ai.voicelive.models import InputAudioFormat, OutputAudioFormat
from azure.communication.callautomation import AudioFormat

from callbot.audio import formats
from callbot.audio.g711 import pcm16_to_alaw, pcm16_to_ulaw


def test_media_formats_are_the_ones_acs_streams_and_voicelive_takes_without_conversion() -> None:
    assert {f.acs_name for f in formats.MEDIA_FORMATS.values()} - {None} == {a.value for a in AudioFormat}
    assert set(formats.ACS_FORMATS) == {a.value for a in AudioFormat}, "ulaw8k (Twilio) is not one ACS streams"
    for media in formats.MEDIA_FORMATS.values():
        assert media.voicelive_input in {f.value for f in InputAudioFormat}
        assert media.voicelive_output in {f.value for f in OutputAudioFormat}
        assert formats.VOICELIVE_OUTPUT[media.voicelive_output] == media.audio, "Voice Live returns what ACS plays"
        assert media.sample_rate in formats.VOICELIVE_INPUT_RATES


def test_every_voicelive_output_format_of_the_sdk_is_described() -> None:
    assert set(formats.VOICELIVE_OUTPUT) == {f.value for f in OutputAudioFormat}
    assert set(formats.VOICELIVE_INPUT_CODECS) == {f.value for f in InputAudioFormat}


@pytest.mark.parametrize(("audio", "frame_bytes", "silence"), [
    (formats.PCM24K, 960, 0x00), (formats.PCM16K, 640, 0x00), (formats.PCM8K, 320, 0x00),
    (formats.ULAW8K, 160, 0xFF), (formats.ALAW8K, 160, 0xD5),
])
def test_frames_and_silence_per_format(audio: formats.Audio, frame_bytes: int, silence: int) -> None:
    assert audio.frame_bytes() == frame_bytes
    assert audio.silence() == bytes([silence]) * frame_bytes


def test_g711_silence_is_what_the_codec_makes_of_pcm_silence() -> None:
    assert pcm16_to_ulaw(bytes(320)) == formats.ULAW8K.silence()
    assert pcm16_to_alaw(bytes(320)) == formats.ALAW8K.silence()


def test_g711_input_is_8khz_whatever_the_sampling_rate_says() -> None:
    assert formats.voicelive_input("g711_ulaw", 24000) == formats.ULAW8K
    assert formats.voicelive_input("pcm16", 16000) == formats.PCM16K


def test_no_module_keeps_a_mutable_constant() -> None:
    """Module-level UPPER_CASE names bound to a dict, set or list literal can be changed by any importer."""
    offenders = []
    for path in Path(formats.__file__).parents[1].rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            value = getattr(node, "value", None)
            for target in targets:
                if (isinstance(target, ast.Name) and target.id.lstrip("_").isupper()
                        and isinstance(value, ast.Dict | ast.Set | ast.List | ast.DictComp | ast.SetComp)):
                    offenders.append(f"{path.name}:{node.lineno} {target.id}")
    assert offenders == []
