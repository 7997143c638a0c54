"""One typed settings object, read from the environment (and `.env` when present).

Every field is named after its environment variable (lower-cased). Secrets are `SecretStr`, so neither `repr`
nor `str` nor `public_dict()` reveals them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TurnDetection = Literal["azure_semantic_vad", "azure_semantic_vad_en", "azure_semantic_vad_multilingual", "server_vad"]
MediaFormat = Literal["pcm24k", "pcm16k"]
VoiceType = Literal["auto", "openai", "azure-standard", "azure-realtime-native", "azure-custom", "azure-personal"]

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise assistant answering a phone call. Speak naturally, keep answers short "
    "(one or two sentences), and ask one question at a time. If you cannot help, say so politely."
)
DEFAULT_GREETING = "Hello, thanks for calling. How can I help you today?"
ACS_ISSUER = "https://acscallautomation.communication.azure.com"
ACS_JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
_OFF = frozenset({"", "0", "off", "false", "no", "none", "disabled"})
_ON = frozenset({"1", "on", "true", "yes", "enabled"})
# URL-valued settings and the schemes each accepts (checked at start: one clear line instead of a failure per call)
_URL_SCHEMES: Mapping[str, frozenset[str]] = MappingProxyType({
    "azure_voicelive_endpoint": frozenset({"https", "http", "wss", "ws"}),
    "acs_endpoint": frozenset({"https", "http"}),
    "callbot_public_url": frozenset({"https", "http"}),
    "callbot_acs_jwks_url": frozenset({"https", "http"}),
    "twilio_api_base_url": frozenset({"https", "http"}),
})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, frozen=True,
        hide_input_in_errors=True,  # a rejected value may be a secret (a key, a URL with a SAS token)
    )

    # Voice Live
    azure_voicelive_endpoint: str | None = None
    azure_voicelive_api_key: SecretStr | None = None
    azure_voicelive_model: str = "gpt-realtime"
    azure_voicelive_agent_name: str | None = None
    azure_voicelive_project_name: str | None = None
    azure_voicelive_api_version: str | None = None

    # ACS
    acs_connection_string: SecretStr | None = None
    acs_endpoint: str | None = None
    acs_resource_id: str | None = None
    callbot_acs_jwks_url: str = ACS_JWKS_URL
    callbot_acs_issuer: str = ACS_ISSUER
    callbot_public_url: str | None = None

    # The agent
    callbot_instructions: str = DEFAULT_INSTRUCTIONS
    callbot_instructions_file: Path | None = None
    callbot_greeting: str = DEFAULT_GREETING
    callbot_voice: str = "en-US-Ava:DragonHDLatestNeural"
    callbot_voice_type: VoiceType = "auto"
    callbot_voice_endpoint_id: str | None = None  # azure-custom voices: the custom voice deployment's endpoint id
    callbot_voice_model: str | None = None  # azure-personal voices: the neural model (e.g. DragonLatestNeural)
    callbot_temperature: float = Field(0.8, ge=0.6, le=1.2)
    callbot_transcription_model: str = "azure-speech"
    callbot_transcription_language: str | None = None

    # Turn-taking and audio processing
    callbot_turn_detection: TurnDetection = "azure_semantic_vad"
    callbot_vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    callbot_vad_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    callbot_vad_silence_ms: int = Field(500, ge=50, le=10000)
    callbot_noise_reduction: str = "azure_deep_noise_suppression"
    callbot_echo_cancellation: str = "server_echo_cancellation"

    # Media
    callbot_media_format: MediaFormat = "pcm24k"
    callbot_playback_lead_ms: int = Field(120, ge=20, le=1000)
    callbot_playback_chunk_ms: int = Field(20, ge=20, le=100, multiple_of=20)
    callbot_preconnect_buffer_ms: int = Field(10000, ge=0, le=60000)
    callbot_model_append_ms: int = Field(20, ge=20, le=40, multiple_of=20)  # caller audio per model append: 20 or 40

    # Operations
    callbot_recordings_dir: Path | None = None
    callbot_recordings_url: str | None = None  # an Azure Blob container instead of the directory (recording_store)
    azure_storage_connection_string: SecretStr | None = None  # for CALLBOT_RECORDINGS_URL: Azurite (else identity)
    callbot_max_call_seconds: float = Field(3600.0, gt=0)
    callbot_max_concurrent_calls: int = Field(100, ge=1)
    callbot_drain_seconds: float = Field(30.0, ge=0)
    log_level: str = "INFO"
    callbot_log_transcripts: bool = False  # caller/bot transcripts and key presses at INFO (personal data)

    # Agent actions
    callbot_dtmf: Literal["model", "off"] = "model"
    callbot_dtmf_pause_ms: int = Field(1500, ge=200, le=10000)
    # agent actions (tools): what the caller hears while a tool is slow, and before a transfer
    callbot_tool_hold_message: str = "One moment please, I am looking that up."
    callbot_tool_hold_ms: int = Field(1500, ge=0, le=30000)  # 0: no holding line
    callbot_transfer_message: str = "Please hold while I transfer you to a colleague."
    callbot_tools_file: Path | None = None  # operator HTTP tools and MCP servers (TOML; `callbot.tools`)
    callbot_end_call_tool: bool = True  # the model gets an `end_call` function
    callbot_transfer_target: str | None = None  # E.164 number or ACS raw id: the model gets `transfer_to_human`

    # The web phone (talk to the agent from a browser at /phone)
    callbot_web_phone: bool | None = None  # unset: on in local development mode, else off
    callbot_web_phone_key: SecretStr | None = None  # required outside local development mode
    callbot_api_docs: Literal["on", "off"] | None = None  # unset: on in local development mode (`serve_overrides`)

    # Twilio Media Streams (a second phone transport; `callbot.twilio`)
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None  # checks X-Twilio-Signature and signs REST calls
    twilio_api_base_url: str = "https://api.twilio.com"
    callbot_twilio_model_audio: Literal["g711_ulaw", "pcm16"] = "g711_ulaw"

    # Security
    callbot_signing_key: SecretStr | None = None
    callbot_webhook_secret: SecretStr | None = None
    callbot_eventgrid_audience: str | None = None
    callbot_eventgrid_tenant_id: str | None = None

    @field_validator(
        "azure_voicelive_endpoint",
        "azure_voicelive_agent_name",
        "azure_voicelive_project_name",
        "azure_voicelive_api_version",
        "acs_endpoint",
        "acs_resource_id",
        "callbot_public_url",
        "callbot_transcription_language",
        "callbot_eventgrid_audience",
        "callbot_eventgrid_tenant_id",
        "callbot_instructions_file",
        "callbot_recordings_dir",
        "callbot_recordings_url",
        "callbot_tools_file",
        "callbot_voice_endpoint_id",
        "callbot_voice_model",
        "callbot_transfer_target",
        "twilio_account_sid",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("azure_voicelive_api_key", "acs_connection_string", "callbot_signing_key",
                     "callbot_webhook_secret", "callbot_web_phone_key", "twilio_auth_token",
                     "azure_storage_connection_string", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("callbot_public_url", "azure_voicelive_endpoint", "twilio_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("azure_voicelive_endpoint", "acs_endpoint", "callbot_public_url", "callbot_acs_jwks_url",
                     "twilio_api_base_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return value
        schemes = _URL_SCHEMES[info.field_name]
        try:
            parts = urlsplit(value.strip())
            host = parts.hostname
        except ValueError:  # e.g. an unbalanced [ in the host
            parts, host = None, None
        if parts is None or parts.scheme.lower() not in schemes or not host:
            raise ValueError(f"{info.field_name.upper()} must be a URL with a scheme ({', '.join(sorted(schemes))}) "
                             f"and a host, e.g. https://example.com")
        return value.strip()

    @field_validator("callbot_recordings_url")
    @classmethod
    def _container_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from callbot.recording_store import container_url_problem

        problem = container_url_problem(value.strip())
        if problem is not None:  # the value itself is not repeated: it may carry a SAS token
            raise ValueError(f"CALLBOT_RECORDINGS_URL {problem}")
        return value.strip().rstrip("/")

    @field_validator("callbot_transfer_target")
    @classmethod
    def _transfer_target(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from callbot.acs.targets import parse_target  # the ACS SDK; imported late (it is large)

        try:
            parse_target(value)
        except ValueError as exc:
            raise ValueError(f"CALLBOT_TRANSFER_TARGET: {exc}") from None
        return value.strip()

    @field_validator("callbot_end_call_tool", mode="before")
    @classmethod
    def _end_call_switch(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _ON:
                return True
            if lowered in _OFF - {""}:
                return False
            raise ValueError(f"CALLBOT_END_CALL_TOOL must be on or off, not {value.strip()[:20]!r}")
        return value

    @field_validator("callbot_noise_reduction", "callbot_echo_cancellation")
    @classmethod
    def _switch(cls, value: str, info: Any) -> str:
        lowered = value.strip().lower()
        if lowered in _OFF:
            return ""
        if lowered in _ON:
            return ("azure_deep_noise_suppression" if info.field_name == "callbot_noise_reduction"
                    else "server_echo_cancellation")
        return value.strip()

    @field_validator("callbot_api_docs", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
        return level

    @model_validator(mode="after")
    def _agent_mode_needs_both(self) -> Settings:
        if bool(self.azure_voicelive_agent_name) != bool(self.azure_voicelive_project_name):
            raise ValueError("AZURE_VOICELIVE_AGENT_NAME and AZURE_VOICELIVE_PROJECT_NAME must be set together")
        return self

    @model_validator(mode="after")
    def _voice_needs_its_details(self) -> Settings:
        from callbot.voicelive.voices import check_voice  # the SDK's voice names; imported late (it is large)

        check_voice(self.callbot_voice, self.callbot_voice_type, self.callbot_voice_endpoint_id,
                    self.callbot_voice_model)
        return self

    @model_validator(mode="after")
    def _web_phone_needs_a_key(self) -> Settings:
        if self.callbot_web_phone and self.callbot_web_phone_key is None and not self.local_development:
            raise ValueError("CALLBOT_WEB_PHONE=on needs CALLBOT_WEB_PHONE_KEY outside local development mode")
        key = self.callbot_web_phone_key
        if key is not None and len(key.get_secret_value()) < 12:
            raise ValueError("CALLBOT_WEB_PHONE_KEY must be at least 12 characters")
        return self

    @model_validator(mode="after")
    def _one_recordings_place(self) -> Settings:
        if self.callbot_recordings_dir is not None and self.callbot_recordings_url is not None:
            raise ValueError("set CALLBOT_RECORDINGS_DIR or CALLBOT_RECORDINGS_URL, not both")
        return self

    @model_validator(mode="after")
    def _chunk_fits_lead(self) -> Settings:
        # ACS's buffer runs between lead - chunk and lead: at most half the lead per chunk keeps half of it as margin
        # against network jitter (a 20 ms chunk is always allowed)
        if self.callbot_playback_chunk_ms > max(20, self.callbot_playback_lead_ms // 2):
            raise ValueError("CALLBOT_PLAYBACK_CHUNK_MS must be at most half of CALLBOT_PLAYBACK_LEAD_MS (or 20)")
        return self

    # Derived values -------------------------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """No Voice Live endpoint: the built-in offline stand-in is used."""
        return self.azure_voicelive_endpoint is None

    @property
    def local_development(self) -> bool:
        """No ACS, or an ACS on this machine (the phone simulator's stand-in): nothing real can call in."""
        if self.acs_endpoint is not None:
            return _is_loopback(self.acs_endpoint)
        if self.acs_connection_string is None:
            return True
        fields = dict(part.partition("=")[::2] for part in self.acs_connection_string.get_secret_value().split(";"))
        endpoint = next((v for k, v in fields.items() if k.strip().lower() == "endpoint"), "")
        return _is_loopback(endpoint)

    @property
    def web_phone(self) -> bool:
        """The web phone is served: CALLBOT_WEB_PHONE, or unset in local development mode."""
        return self.callbot_web_phone if self.callbot_web_phone is not None else self.local_development

    @property
    def twilio(self) -> bool:
        """Twilio credentials are set: the Twilio routes take calls (else they refuse everything)."""
        return self.twilio_account_sid is not None and self.twilio_auth_token is not None

    @property
    def api_docs(self) -> bool:
        """OpenAPI docs at `/docs` and `/openapi.json`: only when `CALLBOT_API_DOCS` is on."""
        return self.callbot_api_docs == "on"

    @property
    def media_sample_rate(self) -> int:
        from callbot.audio.formats import MEDIA_FORMATS

        return MEDIA_FORMATS[self.callbot_media_format].sample_rate

    def instructions(self) -> str:
        """The system prompt: the file when `CALLBOT_INSTRUCTIONS_FILE` is set, else `CALLBOT_INSTRUCTIONS`."""
        if self.callbot_instructions_file is not None:
            return self.callbot_instructions_file.read_text(encoding="utf-8").strip()
        return self.callbot_instructions

    def public_dict(self) -> dict[str, Any]:
        """The settings with every secret replaced by a marker: safe for logs and recordings."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "<set>"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def _is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return False
    return host in ("localhost", "::1") or host.startswith("127.")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; keyword overrides win (used by the CLI and tests)."""
    return Settings(**overrides)
