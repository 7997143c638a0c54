"""Settings: environment names, defaults, validation, secrets kept out of repr and public views."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callbot.config import Settings

SECRETS = {
    "AZURE_VOICELIVE_API_KEY": "vl-secret-key-123",
    "ACS_CONNECTION_STRING": "endpoint=https://x.communication.azure.com/;accesskey=c2VjcmV0",
    "CALLBOT_SIGNING_KEY": "signing-secret-456",
    "CALLBOT_WEBHOOK_SECRET": "webhook-secret-789",
}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_setting_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, AZURE_VOICELIVE_ENDPOINT="https://res.services.ai.azure.com/",
                 CALLBOT_MEDIA_FORMAT="pcm16k", CALLBOT_TURN_DETECTION="server_vad", CALLBOT_VAD_SILENCE_MS="700",
                 CALLBOT_MAX_CONCURRENT_CALLS="7", LOG_LEVEL="debug", CALLBOT_GREETING="")
    assert s.azure_voicelive_endpoint == "https://res.services.ai.azure.com"
    assert s.media_sample_rate == 16000 and s.callbot_turn_detection == "server_vad"
    assert s.callbot_vad_silence_ms == 700 and s.callbot_max_concurrent_calls == 7
    assert s.log_level == "DEBUG"
    assert s.callbot_greeting == "", "an empty greeting means the caller speaks first"
    assert not s.offline


def test_no_endpoint_means_offline_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_VOICELIVE_ENDPOINT", raising=False)
    assert settings(monkeypatch, AZURE_VOICELIVE_ENDPOINT="").offline


@pytest.mark.parametrize("env", [
    {"CALLBOT_MEDIA_FORMAT": "ulaw"},
    {"CALLBOT_TURN_DETECTION": "magic"},
    {"CALLBOT_VAD_THRESHOLD": "2"},
    {"LOG_LEVEL": "LOUD"},
    {"AZURE_VOICELIVE_AGENT_NAME": "agent-only"},
    {"CALLBOT_PLAYBACK_CHUNK_MS": "30"},  # not whole 20 ms frames
    {"CALLBOT_PLAYBACK_CHUNK_MS": "80"},  # more than half the default 120 ms lead: too little jitter margin
    {"CALLBOT_PLAYBACK_CHUNK_MS": "40", "CALLBOT_PLAYBACK_LEAD_MS": "60"},
])
def test_invalid_values_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch,
                                                             env: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as info:
        settings(monkeypatch, **env)
    assert any(k.lower() in str(info.value).lower() for k in env)


@pytest.mark.parametrize("lead,chunk", [(20, 20), (40, 20), (120, 60), (200, 100)])
def test_playback_chunk_may_be_up_to_half_the_lead(monkeypatch: pytest.MonkeyPatch, lead: int, chunk: int) -> None:
    s = settings(monkeypatch, CALLBOT_PLAYBACK_LEAD_MS=str(lead), CALLBOT_PLAYBACK_CHUNK_MS=str(chunk))
    assert (s.callbot_playback_lead_ms, s.callbot_playback_chunk_ms) == (lead, chunk)


@pytest.mark.parametrize("value,expected", [("off", ""), ("false", ""), ("on", "azure_deep_noise_suppression"),
                                            ("near_field", "near_field")])
def test_noise_reduction_switch(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    assert settings(monkeypatch, CALLBOT_NOISE_REDUCTION=value).callbot_noise_reduction == expected


def test_instructions_file_wins_over_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are the Contoso front desk.\n", encoding="utf-8")
    s = settings(monkeypatch, CALLBOT_INSTRUCTIONS="ignored", CALLBOT_INSTRUCTIONS_FILE=str(prompt))
    assert s.instructions() == "You are the Contoso front desk."


def test_secrets_never_appear_in_repr_or_public_view(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, **SECRETS)
    shown = repr(s) + str(s) + repr(s.public_dict())
    for secret in SECRETS.values():
        assert secret not in shown
        assert "c2VjcmV0" not in shown
    assert s.public_dict()["callbot_webhook_secret"] == "<set>"


@pytest.mark.parametrize(("name", "value"), [
    ("AZURE_VOICELIVE_ENDPOINT", "notaurl"),
    ("AZURE_VOICELIVE_ENDPOINT", "ftp://res.services.ai.azure.com"),
    ("AZURE_VOICELIVE_ENDPOINT", "https://"),
    ("CALLBOT_PUBLIC_URL", "callbot.example.com"),
    ("CALLBOT_PUBLIC_URL", "wss://callbot.example.com"),
    ("CALLBOT_ACS_JWKS_URL", "keys.json"),
    ("ACS_ENDPOINT", "https://[::1"),
])
def test_a_url_setting_without_a_usable_scheme_and_host_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(ValidationError) as err:
        settings(monkeypatch, **{name: value})
    assert f"{name} must be a URL with a scheme" in str(err.value)


def test_url_settings_accept_local_stand_ins_and_https(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, AZURE_VOICELIVE_ENDPOINT="ws://127.0.0.1:9000/", CALLBOT_PUBLIC_URL="https://cb.example",
                 CALLBOT_ACS_JWKS_URL="http://127.0.0.1:8100/calling/keys")
    assert (s.azure_voicelive_endpoint, s.callbot_public_url) == ("ws://127.0.0.1:9000", "https://cb.example")


@pytest.mark.parametrize(("env", "message"), [
    ({"CALLBOT_VOICE": "fable"}, "neither an OpenAI realtime voice"),  # not a realtime voice in the SDK
    ({"CALLBOT_VOICE": "nova", "CALLBOT_VOICE_TYPE": "openai"}, "is not an OpenAI realtime voice"),
    ({"CALLBOT_VOICE": "bob", "CALLBOT_VOICE_TYPE": "azure-realtime-native"}, "not an azure-realtime native voice"),
    ({"CALLBOT_VOICE": "MyVoice", "CALLBOT_VOICE_TYPE": "azure-custom"}, "needs CALLBOT_VOICE_ENDPOINT_ID"),
    ({"CALLBOT_VOICE": "speaker1", "CALLBOT_VOICE_TYPE": "azure-personal"}, "needs CALLBOT_VOICE_MODEL"),
])
def test_a_voice_that_cannot_be_used_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                         message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(monkeypatch, **env)


def test_transcripts_stay_out_of_info_logs_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).callbot_log_transcripts is False
    assert settings(monkeypatch, CALLBOT_LOG_TRANSCRIPTS="on").callbot_log_transcripts is True


def test_transfer_target_is_unset_by_default_and_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).callbot_transfer_target is None
    assert settings(monkeypatch, CALLBOT_TRANSFER_TARGET="").callbot_transfer_target is None
    assert settings(monkeypatch, CALLBOT_TRANSFER_TARGET=" +14255550123 ").callbot_transfer_target == "+14255550123"
    assert settings(monkeypatch, CALLBOT_TRANSFER_TARGET="8:acs:r_u").callbot_transfer_target == "8:acs:r_u"
    with pytest.raises(ValidationError, match="CALLBOT_TRANSFER_TARGET: the transfer target must be an E.164"):
        settings(monkeypatch, CALLBOT_TRANSFER_TARGET="4255550123")


def test_end_call_tool_is_on_by_default_and_takes_on_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).callbot_end_call_tool is True
    assert settings(monkeypatch, CALLBOT_END_CALL_TOOL="off").callbot_end_call_tool is False
    assert settings(monkeypatch, CALLBOT_END_CALL_TOOL="ON").callbot_end_call_tool is True
    with pytest.raises(ValidationError, match="CALLBOT_END_CALL_TOOL must be on or off"):
        settings(monkeypatch, CALLBOT_END_CALL_TOOL="sometimes")
