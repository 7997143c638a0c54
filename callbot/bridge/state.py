"""What a call's core is configured with and keeps: its settings, its counters and its conversation turns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callbot.audio.formats import MEDIA_FORMATS, Audio, MediaFormat
from callbot.config import Settings
from callbot.voicelive import session as vl

GOODBYE = "Our time is up for this call. Thank you for calling, goodbye."


@dataclass(slots=True)
class Turn:
    role: str  # "caller" | "bot" | "tool" (a function call and its output: `text` is the output)
    text: str
    interrupted: bool = False
    name: str = ""  # tool turns: the function's name, its call id and the arguments it was called with
    call_id: str = ""
    arguments: str = ""


@dataclass(slots=True)
class Stats:
    caller_frames: int = 0
    caller_frames_buffered: int = 0
    caller_frames_dropped: int = 0
    caller_frames_resent: int = 0  # after a lost session: frames the model had not committed, sent to the next
    bot_frames: int = 0
    bot_frames_dropped: int = 0
    late_deltas_dropped: int = 0
    barge_ins: int = 0
    stop_audio: int = 0
    cancels: int = 0
    truncates: int = 0
    voicelive_errors: int = 0
    dtmf: int = 0
    dtmf_sequences: int = 0
    malformed: int = 0
    tool_calls: int = 0
    agent_hangups: int = 0
    transfers_requested: int = 0
    transfers_accepted: int = 0
    transfers_failed: int = 0
    tool_holds: int = 0
    mcp_approvals: int = 0


@dataclass
class CoreConfig:
    call_id: str
    sample_rate: int = 24000
    audio: Audio | None = None  # the transport's audio (None: 16-bit PCM at sample_rate)
    transport: str = "acs"
    notify: bool = False  # emit Notify actions (transcripts, speech state) for transports that show them
    lead_ms: int = 120
    chunk_ms: int = 20
    preconnect_buffer_ms: int = 10000
    append_ms: int = 20  # caller audio per input_audio_buffer.append (20 or 40)
    max_queue_ms: int = 300_000
    greeting: str = ""
    max_call_seconds: float = 3600.0
    goodbye: str = GOODBYE
    goodbye_timeout_s: float = 15.0
    dtmf: str = "model"  # "model": key presses reach the model as text; "off": counted only
    dtmf_pause_s: float = 1.5
    log_transcripts: bool = False  # transcripts and key presses are personal data: DEBUG unless this is on
    session: dict[str, Any] = field(default_factory=dict)  # the `session` of session.update
    # agent actions: the built-in functions offered (end_call, transfer_to_human), what the caller hears around them
    can_end_call: bool = True
    can_transfer: bool = False
    transfer_message: str = ""
    hold_message: str = ""
    hold_after_s: float = 1.5
    approve_mcp: Callable[[str, str], bool] | None = None  # (server_label, tool name) -> approve; None: refuse

    @classmethod
    def from_settings(cls, call_id: str, settings: Settings, media: MediaFormat | None = None,
                      transport: str = "acs", notify: bool = False, *, can_transfer: bool = False,
                      tools: Sequence[dict[str, Any]] = (), end_call: bool | None = None,
                      approve_mcp: Callable[[str, str], bool] | None = None,
                      metadata: Mapping[str, str] | None = None) -> CoreConfig:
        """`media`: the format the call's transport carries (default: `CALLBOT_MEDIA_FORMAT`, ACS's).
        `can_transfer`: the call can be handed to a person (an ACS call with a transfer target set); `tools`: the
        operator's tool definitions (HTTP functions and MCP servers) offered beside the built-in ones; `end_call`
        overrides CALLBOT_END_CALL_TOOL (replays of calls recorded before the agent had actions); `metadata`: the
        session's `metadata` (the call id and the transport's correlation id, so service-side logs join the trace)."""
        media = media or MEDIA_FORMATS[settings.callbot_media_format]
        can_end_call = settings.callbot_end_call_tool if end_call is None else end_call
        session = vl.build_session(settings, media)
        if metadata:
            session["metadata"] = dict(metadata)
        offered = builtin_tools(can_end_call, can_transfer) + list(tools)
        if offered:
            session["tools"] = offered
            session["tool_choice"] = "auto"
        return cls(
            call_id=call_id,
            sample_rate=media.sample_rate,
            audio=media.audio,
            transport=transport,
            notify=notify,
            lead_ms=settings.callbot_playback_lead_ms,
            chunk_ms=settings.callbot_playback_chunk_ms,
            preconnect_buffer_ms=settings.callbot_preconnect_buffer_ms,
            append_ms=settings.callbot_model_append_ms,
            greeting=settings.callbot_greeting,
            max_call_seconds=settings.callbot_max_call_seconds,
            log_transcripts=settings.callbot_log_transcripts,
            dtmf=settings.callbot_dtmf,
            dtmf_pause_s=settings.callbot_dtmf_pause_ms / 1000,
            session=session,
            can_end_call=can_end_call,
            can_transfer=can_transfer,
            transfer_message=settings.callbot_transfer_message,
            hold_message=settings.callbot_tool_hold_message,
            hold_after_s=settings.callbot_tool_hold_ms / 1000,
            approve_mcp=approve_mcp,
        )


END_CALL = "end_call"
TRANSFER = "transfer_to_human"
BUILTIN_TOOLS = frozenset({END_CALL, TRANSFER})


def builtin_tools(end_call: bool, transfer: bool) -> list[dict[str, Any]]:
    """The function definitions of the built-in agent actions this call offers."""
    tools: list[dict[str, Any]] = []
    if end_call:
        tools.append({"type": "function", "name": END_CALL,
                      "description": "End the phone call. Call it once the caller has said goodbye or the "
                                     "conversation is clearly over, after saying goodbye in the same turn.",
                      "parameters": {"type": "object", "properties": {}}})
    if transfer:
        tools.append({"type": "function", "name": TRANSFER,
                      "description": "Transfer the caller to a human colleague. Call it when the caller asks for "
                                     "a person or you cannot help them.",
                      "parameters": {"type": "object",
                                     "properties": {"reason": {"type": "string",
                                                               "description": "why the caller needs a person"}}}})
    return tools


def str_field(obj: Any, key: str) -> str | None:
    """`obj[key]` when `obj` is a dict and the value a string (server events are untrusted JSON)."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None
