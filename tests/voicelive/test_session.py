"""The session.update built from settings, and the client events callbot sends."""

from __future__ import annotations

from callbot.config import Settings
from callbot.voicelive import session as vl


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def test_default_session_is_pcm24k_semantic_vad_with_noise_and_echo_processing() -> None:
    s = vl.build_session(make())
    assert s["input_audio_format"] == "pcm16" and s["input_audio_sampling_rate"] == 24000
    assert s["output_audio_format"] == "pcm16"
    assert s["turn_detection"]["type"] == "azure_semantic_vad"
    assert s["turn_detection"]["interrupt_response"] is True
    assert s["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert s["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
    assert s["input_audio_transcription"]["model"] == "azure-speech"
    assert s["voice"] == {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural"}


def test_pcm16k_configures_voicelive_natively_instead_of_resampling() -> None:
    s = vl.build_session(make(callbot_media_format="pcm16k"))
    assert s["input_audio_sampling_rate"] == 16000 and s["output_audio_format"] == "pcm16_16000hz"


def test_openai_voices_are_recognised_by_name() -> None:
    assert vl.voice_config("Alloy") == {"type": "openai", "name": "alloy"}
    assert vl.voice_config("en-US-AvaNeural")["type"] == "azure-standard"


def test_every_voice_type_of_the_sdk_can_be_chosen() -> None:
    voices = {
        "native": make(callbot_voice="Ava", callbot_voice_type="azure-realtime-native"),
        "custom": make(callbot_voice="ContosoVoice", callbot_voice_type="azure-custom",
                       callbot_voice_endpoint_id="0a1b2c"),
        "personal": make(callbot_voice="speaker-profile-1", callbot_voice_type="azure-personal",
                         callbot_voice_model="DragonLatestNeural"),
        "semantic-en": make(callbot_turn_detection="azure_semantic_vad_en"),
    }
    built = {name: vl.build_session(s) for name, s in voices.items()}
    assert built["native"]["voice"] == {"type": "azure-realtime-native", "name": "ava"}
    assert built["custom"]["voice"] == {"type": "azure-custom", "name": "ContosoVoice", "endpoint_id": "0a1b2c"}
    assert built["personal"]["voice"] == {"type": "azure-personal", "name": "speaker-profile-1",
                                          "model": "DragonLatestNeural"}
    assert built["semantic-en"]["turn_detection"]["type"] == "azure_semantic_vad_en"


def test_say_builds_a_pre_generated_assistant_message() -> None:
    event = vl.say("Hello")
    assert event["type"] == "response.create"
    assert event["response"]["pre_generated_assistant_message"]["content"] == [{"type": "text", "text": "Hello"}]


def test_restored_turns_use_input_text_for_the_caller_and_text_for_the_bot() -> None:
    assert vl.restore_item("user", "hi")["item"]["content"][0]["type"] == "input_text"
    assert vl.restore_item("assistant", "hey")["item"]["content"][0]["type"] == "text"
