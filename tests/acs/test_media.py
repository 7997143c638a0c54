"""The ACS media WebSocket wire format: parsing what ACS sends (both spellings) and what callbot sends back."""

from __future__ import annotations

import base64

import orjson
import pytest

from callbot.acs import media

PCM = bytes(range(256)) * 3 + bytes(192)  # 960 bytes: 20 ms at 24 kHz
B64 = base64.b64encode(PCM).decode()


def test_audio_data_keeps_the_base64_text_and_its_fields_in_camel_case() -> None:
    raw = orjson.dumps({"kind": "AudioData", "audioData": {"timestamp": "2026-12-02T10:00:00Z",
                                                           "participantRawID": "4:+15550100", "data": B64,
                                                           "silent": True}})
    msg = media.parse_media_message(raw)
    assert isinstance(msg, media.AudioData)
    assert (msg.b64, msg.timestamp, msg.participant_raw_id, msg.silent) == (B64, "2026-12-02T10:00:00Z",
                                                                            "4:+15550100", True)
    assert msg.data == PCM


def test_pascal_case_messages_of_microsofts_samples_parse_the_same() -> None:
    msg = media.parse_media_message(orjson.dumps({"Kind": "AudioData", "AudioData": {"Data": B64}}))
    assert isinstance(msg, media.AudioData) and msg.data == PCM and msg.silent is False
    dtmf = media.parse_media_message('{"Kind":"DtmfData","DtmfData":{"Data":"5"}}')
    assert dtmf == media.DtmfData("5")


def test_audio_metadata_is_parsed_with_integer_fields() -> None:
    msg = media.parse_media_message(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub", "encoding": "PCM", "sampleRate": 16000, "channels": 1, "length": 640}}))
    assert msg == media.AudioMetadata("sub", "PCM", 16000, 1, 640)


def test_unknown_kinds_are_returned_by_name_cut_to_64_characters() -> None:
    assert media.parse_media_message('{"kind":"Transcription"}') == media.UnknownMessage("Transcription")
    assert media.parse_media_message(orjson.dumps({"kind": "x" * 500})) == media.UnknownMessage("x" * 64)


@pytest.mark.parametrize(("raw", "reason"), [
    ("{not json", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"kind": 3}', "missing or non-string kind"),
    ('{"kind":"AudioData","audioData":"x"}', "audioData must be an object"),
    ('{"kind":"AudioData","audioData":{"data":7}}', "audioData.data must be a base64 string"),
    ('{"kind":"AudioData","audioData":{"data":"@@@@"}}', "audioData.data is not valid base64"),
    ('{"kind":"AudioData","audioData":{"data":"AAAA"}}', "audioData.data is not whole 16-bit samples"),
    ('{"kind":"AudioData","audioData":{"data":"AAAAAA==","silent":"no"}}', "audioData.silent must be a boolean"),
    ('{"kind":"AudioData","audioData":{"data":"AAAAAA==","timestamp":5}}', "audioData.timestamp must be a string"),
    ('{"kind":"AudioMetadata","audioMetadata":{"sampleRate":"16000","channels":1,"length":1}}',
     "audioMetadata.sampleRate must be an integer"),
    ('{"kind":"AudioMetadata","audioMetadata":{"sampleRate":true,"channels":1,"length":1}}',
     "audioMetadata.sampleRate must be an integer"),
    ('{"kind":"DtmfData","dtmfData":{"data":""}}', "DtmfData.data must be a non-empty string"),
])
def test_malformed_messages_raise_a_short_reason_without_the_payload(raw: str, reason: str) -> None:
    with pytest.raises(media.MediaParseError) as err:
        media.parse_media_message(raw)
    assert str(err.value) == reason


def test_oversized_messages_are_refused_before_parsing() -> None:
    raw = '{"kind":"AudioData","audioData":{"data":"' + "A" * media.MAX_MESSAGE_BYTES + '"}}'
    with pytest.raises(media.MediaParseError, match="exceeds"):
        media.parse_media_message(raw)


def test_outbound_audio_and_stop_are_camel_case_json_that_round_trips() -> None:
    out = orjson.loads(media.encode_audio_bytes(PCM))
    assert out == {"kind": "AudioData", "audioData": {"data": B64}}
    assert orjson.loads(media.STOP_AUDIO) == {"kind": "StopAudio", "stopAudio": {}}
    parsed = media.parse_media_message(media.encode_audio_bytes(PCM))
    assert isinstance(parsed, media.AudioData) and parsed.data == PCM


def test_model_audio_decodes_leniently_like_the_stdlib() -> None:
    assert media.decode_b64(B64) == PCM
    assert media.decode_b64(B64[:100] + "\n" + B64[100:]) == PCM  # a line break, as a2b_base64 allows
    with pytest.raises(ValueError):
        media.decode_b64("A")
