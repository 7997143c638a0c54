"""The Voice Live session configuration and the few client events callbot sends, as plain wire dicts.

Built once per call from `Settings`; plain dicts (not SDK models) so they serialise without per-event model work and
appear verbatim in recordings.
"""

from __future__ import annotations

from typing import Any

from callbot.audio.formats import MEDIA_FORMATS, MediaFormat
from callbot.config import Settings
from callbot.voicelive.voices import voice_config

__all__ = ["voice_config"]  # re-exported: part of what a session is built from


def turn_detection_config(settings: Settings) -> dict[str, Any]:
    td: dict[str, Any] = {
        "type": settings.callbot_turn_detection,
        "threshold": settings.callbot_vad_threshold,
        "prefix_padding_ms": settings.callbot_vad_prefix_padding_ms,
        "silence_duration_ms": settings.callbot_vad_silence_ms,
        # callbot does barge-in itself (StopAudio + cancel + truncate with what was really heard); the service's own
        # interruption is also on, so a response is cancelled even if our cancel races with it.
        "create_response": True,
        "interrupt_response": True,
    }
    if settings.callbot_turn_detection != "server_vad":
        td["remove_filler_words"] = False
    return td


def build_session(settings: Settings, media: MediaFormat | None = None) -> dict[str, Any]:
    """The `session` object of `session.update`, for a transport carrying `media` (default: ACS's format)."""
    media = media or MEDIA_FORMATS[settings.callbot_media_format]
    session: dict[str, Any] = {
        "modalities": ["text", "audio"],
        "instructions": settings.instructions(),
        "voice": voice_config(settings.callbot_voice, settings.callbot_voice_type, settings.callbot_voice_endpoint_id,
                              settings.callbot_voice_model),
        "input_audio_format": media.voicelive_input,
        # G.711 is always 8 kHz: the rate applies to pcm16 input only
        **({"input_audio_sampling_rate": media.sample_rate} if media.voicelive_input == "pcm16" else {}),
        "output_audio_format": media.voicelive_output,
        "turn_detection": turn_detection_config(settings),
        "temperature": settings.callbot_temperature,
    }
    transcription: dict[str, Any] = {"model": settings.callbot_transcription_model}
    if settings.callbot_transcription_language:
        transcription["language"] = settings.callbot_transcription_language
    session["input_audio_transcription"] = transcription
    if settings.callbot_noise_reduction:
        session["input_audio_noise_reduction"] = {"type": settings.callbot_noise_reduction}
    if settings.callbot_echo_cancellation:
        session["input_audio_echo_cancellation"] = {"type": settings.callbot_echo_cancellation}
    return session


def session_update(session: dict[str, Any]) -> dict[str, Any]:
    """The `session.update` event for a session built by `build_session`."""
    return {"type": "session.update", "session": session}


def say(text: str) -> dict[str, Any]:
    """A response that speaks exactly `text` (greeting, goodbye, apology): a pre-generated assistant message."""
    return {
        "type": "response.create",
        "response": {
            "pre_generated_assistant_message": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
            }
        },
    }


def say_by_instructions(text: str) -> dict[str, Any]:
    """The fallback of `say` for a service or model that refuses pre-generated messages: the model is asked to say
    the text word for word."""
    return {
        "type": "response.create",
        "response": {"instructions": f"Say exactly the following to the caller, word for word, and nothing else: "
                                     f"{text}"},
    }


def append_audio(b64: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": b64}


def cancel_response(response_id: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        event["response_id"] = response_id
    return event


def truncate(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": audio_end_ms,
    }


def user_text(text: str) -> dict[str, Any]:
    """A caller turn that is text, not audio (the keypad)."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def create_response() -> dict[str, Any]:
    return {"type": "response.create"}


def restore_item(role: str, text: str) -> dict[str, Any]:
    """A conversation item that re-creates an earlier turn in a new session (after a reconnect)."""
    part_type = "input_text" if role == "user" else "text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]},
    }


def function_call_item(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A function call of the model, re-created in a new session (after a reconnect)."""
    return {"type": "conversation.item.create",
            "item": {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}}


def function_output(call_id: str, output: str) -> dict[str, Any]:
    """The answer to the model's function call `call_id` (then `create_response`, once for all calls answered)."""
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


def mcp_approval(approval_request_id: str, approve: bool) -> dict[str, Any]:
    """The answer to an MCP approval request (Voice Live asks before calling an MCP server's tool)."""
    return {"type": "conversation.item.create",
            "item": {"type": "mcp_approval_response", "approval_request_id": approval_request_id,
                     "approve": approve}}
