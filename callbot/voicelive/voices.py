"""Choosing the agent's voice: `CALLBOT_VOICE` (+ `CALLBOT_VOICE_TYPE`, `_ENDPOINT_ID`, `_MODEL`) -> the session's
`voice` object, with names checked against the azure-ai-voicelive SDK's own enums (so they follow the SDK).

- `openai`: an OpenAI realtime voice (`alloy`, `ash`, `ballad`, `coral`, `echo`, `sage`, `shimmer`, `verse`, ...).
- `azure-standard`: an Azure neural voice (`en-US-AvaNeural`, `en-US-Ava:DragonHDLatestNeural`).
- `azure-realtime-native`: a native voice of the `azure-realtime` model (`ava`, `andrew`, ...).
- `azure-custom`: the custom voice's name, with `CALLBOT_VOICE_ENDPOINT_ID`.
- `azure-personal`: the personal voice's speaker profile, with `CALLBOT_VOICE_MODEL` (e.g. `DragonLatestNeural`).

`auto` (the default) picks `openai` for an OpenAI voice name and `azure-standard` for a locale-prefixed Azure name;
anything else (`fable`, `nova`: not realtime voices) is refused at start.
"""

from __future__ import annotations

from typing import Any

from azure.ai.voicelive.models import AzureRealtimeNativeVoiceName, OpenAIVoiceName, PersonalVoiceModels

OPENAI_VOICES = frozenset(v.value for v in OpenAIVoiceName)
REALTIME_NATIVE_VOICES = frozenset(v.value for v in AzureRealtimeNativeVoiceName)
PERSONAL_VOICE_MODELS = frozenset(v.value for v in PersonalVoiceModels)


def resolve_type(name: str, voice_type: str) -> str:
    if voice_type != "auto":
        return voice_type
    return "openai" if name.strip().lower() in OPENAI_VOICES else "azure-standard"


def check_voice(name: str, voice_type: str, endpoint_id: str | None, model: str | None) -> None:
    """Raise `ValueError` naming the setting when the voice cannot be used as configured."""
    kind = resolve_type(name, voice_type)
    lowered = name.strip().lower()
    if not name.strip():
        raise ValueError("CALLBOT_VOICE must not be empty")
    if voice_type == "auto" and kind == "azure-standard" and "-" not in name:
        raise ValueError(f"CALLBOT_VOICE {name!r} is neither an OpenAI realtime voice "
                         f"({', '.join(sorted(OPENAI_VOICES))}) nor an Azure voice name (en-US-AvaNeural); "
                         f"for other voices set CALLBOT_VOICE_TYPE")
    if kind == "openai" and lowered not in OPENAI_VOICES:
        raise ValueError(f"CALLBOT_VOICE {name!r} is not an OpenAI realtime voice ({', '.join(sorted(OPENAI_VOICES))})")
    if kind == "azure-realtime-native" and lowered not in REALTIME_NATIVE_VOICES:
        raise ValueError(f"CALLBOT_VOICE {name!r} is not an azure-realtime native voice "
                         f"({', '.join(sorted(REALTIME_NATIVE_VOICES))})")
    if kind == "azure-custom" and not endpoint_id:
        raise ValueError("CALLBOT_VOICE_TYPE=azure-custom needs CALLBOT_VOICE_ENDPOINT_ID (the custom voice's "
                         "endpoint id)")
    if kind == "azure-personal" and model not in PERSONAL_VOICE_MODELS:
        raise ValueError(f"CALLBOT_VOICE_TYPE=azure-personal needs CALLBOT_VOICE_MODEL, one of "
                         f"{', '.join(sorted(PERSONAL_VOICE_MODELS))}")


def voice_config(name: str, voice_type: str = "auto", endpoint_id: str | None = None,
                 model: str | None = None) -> dict[str, Any]:
    """The session's `voice` object (settings were checked by `check_voice` when they were loaded)."""
    kind = resolve_type(name, voice_type)
    name = name.strip()
    if kind in ("openai", "azure-realtime-native"):
        return {"type": kind, "name": name.lower()}
    voice: dict[str, Any] = {"type": kind, "name": name}
    if kind == "azure-custom":
        voice["endpoint_id"] = endpoint_id
    elif kind == "azure-personal":
        voice["model"] = model
    return voice
