"""Azure AI Voice Live wire protocol pieces for the local server: ids, defaults, validation, event builders.

Pure functions and constants, no I/O. Event shapes follow ``azure.ai.voicelive.models`` (1.3.x):
``ServerEvent*`` field names, ``Response``, ``ResponseMessageItem``, ``ResponseSession``.
"""

from __future__ import annotations

import audioop
import math
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from callbot.audio.formats import VOICELIVE_INPUT_CODECS, VOICELIVE_INPUT_RATES, VOICELIVE_OUTPUT, voicelive_input

INPUT_AUDIO_FORMATS = frozenset(VOICELIVE_INPUT_CODECS)
OUTPUT_AUDIO_FORMATS = frozenset(VOICELIVE_OUTPUT)
LEGACY_OUTPUT_AUDIO_FORMATS: Mapping[str, str] = MappingProxyType({"pcm16-8000hz": "pcm16_8000hz",
                                                                   "pcm16-16000hz": "pcm16_16000hz"})
INPUT_SAMPLING_RATES = VOICELIVE_INPUT_RATES
TURN_DETECTION_TYPES = frozenset(
    {"server_vad", "azure_semantic_vad", "azure_semantic_vad_en", "azure_semantic_vad_multilingual"}
)
MODALITIES = frozenset({"text", "audio", "animation", "avatar"})
# RequestSession fields of the SDK: anything else in session.update is an unknown parameter.
SESSION_FIELDS = frozenset(
    {
        "model", "modalities", "animation", "voice", "instructions", "input_audio_sampling_rate",
        "input_audio_format", "output_audio_format", "turn_detection", "input_audio_noise_reduction",
        "input_audio_echo_cancellation", "avatar", "input_audio_transcription", "output_audio_timestamp_types",
        "tools", "tool_choice", "parallel_tool_calls", "temperature", "max_response_output_tokens",
        "reasoning_effort", "interim_response", "include", "metadata",
    }
)  # fmt: skip
# Client event types the SDK can send that the server accepts without a default reply.
PASSIVE_CLIENT_EVENTS = frozenset(
    {
        "input_audio.turn.start", "input_audio.turn.append", "input_audio.turn.end", "input_audio.turn.cancel",
        "input_audio.clear", "session.avatar.connect", "mcp_approval_response", "input_text.delta",
        "input_text.done", "transcription_session.update",
    }
)  # fmt: skip
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "mcp_approval_response"})
ROLES = frozenset({"user", "assistant", "system"})
SESSION_LIFETIME_S = 30 * 60


class ProtocolError(Exception):
    """A client event the service would reject with an ``error`` event."""

    def __init__(
        self, code: str, message: str, *, param: str | None = None, type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type


def new_id(prefix: str) -> str:
    """An id in the service's style: ``resp_...``, ``item_...``, ``event_...``, ``sess_...``."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def output_bytes_per_ms(fmt: str) -> int:
    """Bytes per millisecond of an output audio format (pcm16 is 24 kHz)."""
    return int(VOICELIVE_OUTPUT[fmt].bytes_per_ms)


def input_bytes_per_ms(fmt: str, sampling_rate: int) -> int:
    """Bytes per millisecond of the input audio format (g711 is always 8 kHz, one byte a sample)."""
    return int(voicelive_input(fmt, sampling_rate).bytes_per_ms)


def sample_width(fmt: str) -> int:
    return VOICELIVE_OUTPUT[fmt].sample_width if fmt in VOICELIVE_OUTPUT else 2


def default_session(session_id: str, query: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The session the service reports in ``session.created`` before any ``session.update``."""
    session: dict[str, Any] = {
        "object": "realtime.session",
        "id": session_id,
        "model": query.get("model", ""),
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": {"type": "openai", "name": "alloy"},
        "input_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "output_audio_format": "pcm16",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
            "auto_truncate": False,
        },
        "input_audio_noise_reduction": None,
        "input_audio_echo_cancellation": None,
        "input_audio_transcription": None,
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "expires_at": int(time.time()) + SESSION_LIFETIME_S,
    }
    if "agent-name" in query:
        session["agent"] = {
            "type": "agent",
            "name": query["agent-name"],
            "agent_id": query["agent-name"],
            "thread_id": new_id("thread"),
        }
    session.update(overrides)
    return session


def validate_session_update(update: Any) -> dict[str, Any]:
    """Check a ``session.update`` payload like the service does; return it normalised or raise."""
    if not isinstance(update, dict):
        raise ProtocolError("invalid_type", "Invalid type for 'session': expected an object.", param="session")
    result = dict(update)
    for key in result:
        if key not in SESSION_FIELDS:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: 'session.{key}'.", param=f"session.{key}")
    _check_choice(result, "input_audio_format", INPUT_AUDIO_FORMATS)
    if isinstance(result.get("output_audio_format"), str):
        fmt = result["output_audio_format"].lower()
        result["output_audio_format"] = LEGACY_OUTPUT_AUDIO_FORMATS.get(fmt, fmt)
    _check_choice(result, "output_audio_format", OUTPUT_AUDIO_FORMATS)
    _check_choice(result, "input_audio_sampling_rate", INPUT_SAMPLING_RATES)
    modalities = result.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m not in MODALITIES for m in modalities)):
        raise _invalid_value("session.modalities", modalities, MODALITIES)
    turn = result.get("turn_detection")
    if turn is not None:
        if not isinstance(turn, dict):
            raise ProtocolError("invalid_type", "Invalid type for 'session.turn_detection'.",
                                param="session.turn_detection")  # fmt: skip
        if turn.get("type") not in TURN_DETECTION_TYPES:
            raise _invalid_value("session.turn_detection.type", turn.get("type"), TURN_DETECTION_TYPES)
        threshold = turn.get("threshold")
        if threshold is not None and not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
            raise ProtocolError("invalid_value", f"Invalid 'session.turn_detection.threshold': {threshold!r}.",
                                param="session.turn_detection.threshold")  # fmt: skip
    voice = result.get("voice")
    if voice is not None and not isinstance(voice, str) and not (isinstance(voice, dict) and voice.get("name")):
        raise ProtocolError("invalid_value", "Invalid 'session.voice': a voice name is required.",
                            param="session.voice")  # fmt: skip
    temperature = result.get("temperature")
    if temperature is not None and not isinstance(temperature, int | float):
        raise ProtocolError("invalid_type", "Invalid type for 'session.temperature'.", param="session.temperature")
    return result


def _check_choice(update: Mapping[str, Any], key: str, allowed: frozenset[Any]) -> None:
    if key in update and update[key] is not None and update[key] not in allowed:
        raise _invalid_value(f"session.{key}", update[key], allowed)


def _invalid_value(param: str, value: Any, allowed: frozenset[Any]) -> ProtocolError:
    choices = ", ".join(repr(a) for a in sorted(allowed, key=str))
    return ProtocolError("invalid_value", f"Invalid value: {value!r}. Supported values are: {choices}.", param=param)


def error_event(err: ProtocolError, client_event_id: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": err.type,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "event_id": client_event_id,
        },
    }


def assistant_item(item_id: str, *, status: str, transcript: str | None, audio: bool) -> dict[str, Any]:
    """A ``ResponseMessageItem`` of the assistant (audio content with its transcript, or text)."""
    content: list[dict[str, Any]] = []
    if transcript is not None:
        content = [{"type": "audio", "transcript": transcript} if audio else {"type": "text", "text": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response_object(
    response_id: str,
    *,
    status: str,
    output: list[dict[str, Any]],
    session: Mapping[str, Any],
    output_audio_format: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """A ``Response`` as in ``response.created`` / ``response.done``."""
    details: dict[str, Any] | None = None
    if status == "cancelled":
        details = {"type": "cancelled", "reason": reason or "client_cancelled"}
    elif status == "incomplete":
        details = {"type": "incomplete", "reason": reason or "max_output_tokens"}
    usage = None
    if status != "in_progress":
        usage = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": details,
        "output": output,
        "usage": usage,
        "conversation_id": session.get("id"),
        "voice": session.get("voice"),
        "modalities": session.get("modalities"),
        "output_audio_format": output_audio_format,
        "temperature": session.get("temperature"),
        "max_output_tokens": session.get("max_response_output_tokens"),
    }


def message_text(item: Mapping[str, Any]) -> str:
    """The text of a message item's ``text`` / ``input_text`` / ``output_text`` content parts."""
    parts = item.get("content") or []
    return "".join(str(p.get("text") or p.get("transcript") or "") for p in parts if isinstance(p, Mapping))


def split_evenly(data: bytes, parts: int, align: int) -> list[bytes]:
    """Split ``data`` into ``parts`` consecutive pieces of near-equal length, cut on ``align`` boundaries."""
    units = len(data) // align
    bounds = [align * (units * i // parts) for i in range(parts)] + [len(data)]
    return [data[bounds[i] : bounds[i + 1]] for i in range(parts)]


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` pieces on word boundaries (some may be empty)."""
    words = text.split(" ")
    per = math.ceil(len(words) / parts) if words else 0
    chunks = [" ".join(words[i * per : (i + 1) * per]) for i in range(parts)]
    return chunks if parts > 1 else [text]


def tone(duration_ms: int, fmt: str, *, frequency: float = 440.0) -> bytes:
    """A deterministic tone burst in an output format: stands in for speech where there is no TTS.

    The envelope rises and falls every 300 ms so that it looks like syllables to a level meter.
    """
    rate = VOICELIVE_OUTPUT[fmt].sample_rate
    n = rate * duration_ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * t / 0.3)
    samples = (8000.0 * envelope * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()
    if fmt == "g711_ulaw":
        return audioop.lin2ulaw(samples, 2)
    if fmt == "g711_alaw":
        return audioop.lin2alaw(samples, 2)
    return samples
