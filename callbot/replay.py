"""Replaying a recorded call against the current bridge core and comparing (`callbot replay`: `replay_cli`).

`replay` feeds the recorded inbound messages (ACS media, Voice Live server events) and the bridge's recorded
decisions (`voicelive_open` -> `session_opened`, `voicelive_closed` -> `session_lost`, `end_call`) into a fresh
`BridgeCore` at their recorded times on a virtual clock, ticking the playout at every deadline in between (rounded up
to the live playout clock's grid when the recording names one, and at once after an event that kicked the live send
pass; a release the recording shows going out only after the next input, a live timer that fired late, after it),
up to the end of the recorded wire traffic; actions become the wire messages the runner sends. `compare` checks
them against the recorded ones per channel (callbot -> ACS, callbot -> Voice Live): the sequence of kinds (runs of
audio frames and of caller audio collapsed), frames per run (within `frame_tolerance`: live ticks run a little after
their deadline), caller audio byte for byte, every other message field for field (`audio_end_ms` within one frame),
`event_id` ignored.
"""

from __future__ import annotations

import binascii
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from callbot.audio.formats import MEDIA_FORMATS
from callbot.bridge.core import (
    Action,
    BridgeCore,
    CoreConfig,
    HangUp,
    Leave,
    Notify,
    PlayAudio,
    RunTool,
    StopPlayback,
    Transfer,
    VlSend,
)
from callbot.bridge.pacer import event_moves_playout
from callbot.bridge.playback import FRAME_MS
from callbot.bridge.transport import KeyPress, Transport, dispatch, messages, transport_for
from callbot.recording import ACS_IN, ACS_OUT, META, VL_IN, VL_OUT, Record, Recording

CoreFactory = Callable[[CoreConfig], BridgeCore]
COLLAPSED = frozenset({"AudioData", "input_audio_buffer.append"})
MINTED_IDS = ("event_id",)
CHANNELS = ((ACS_OUT, "callbot -> ACS"), (VL_OUT, "callbot -> Voice Live"))
MAX_IDLE_TICKS = 3
LATE_PASS_S = 0.02  # how late a live playout pass may have run for the recording to decide its order (one frame)
CALL_CONTROL = frozenset({"incoming_call", "callback", "rest"})
DECISIONS = frozenset({"voicelive_open", "voicelive_closed", "end_call", "media_open", "tool_result",
                       "transfer_outcome"})


@dataclass(frozen=True, slots=True)
class Message:
    """One outbound wire message: `t` in ms on the recording's clock, `channel` acs_out | vl_out, parsed `body`."""

    t: float
    channel: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind") or self.body.get("Kind") or self.body.get("type") or "?")


@dataclass
class ReplayResult:
    messages: list[Message]
    core: BridgeCore
    hang_up: tuple[float, str] | None = None  # (ms, reason) when the core hung up (or left: transferred)
    tools: list[tuple[float, str, str]] = field(default_factory=list)  # (ms, name, arguments) of each RunTool
    transfers: list[tuple[float, str]] = field(default_factory=list)  # (ms, reason) of each Transfer
    inputs: int = 0


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in MINTED_IDS}  # ids minted per run


def recording_transport(recording: Recording) -> Transport:
    settings = recording.settings()
    media = MEDIA_FORMATS[settings.callbot_media_format]
    return transport_for(recording.transport, recording.call_id or "replay", media,
                         twilio_model_audio=settings.callbot_twilio_model_audio)


def recorded_messages(recording: Recording) -> list[Message]:
    """The outbound wire messages of the recording (REST calls excluded), normalised."""
    out: list[Message] = []
    transport = recording_transport(recording)
    for r in recording.records:
        if r.dir == ACS_OUT and r.kind not in CALL_CONTROL:
            raw = r.media()
            if raw is not None:
                out.append(Message(r.t, ACS_OUT, transport.describe(raw)))
        elif r.dir == VL_OUT:
            out.append(Message(r.t, VL_OUT, normalise(r.event)))
    return out


def _on_bridge_wire(r: Record) -> bool:  # a media socket or Voice Live message: not call control, not a marker
    return r.dir in (VL_IN, VL_OUT) or (r.dir in (ACS_IN, ACS_OUT) and r.kind not in CALL_CONTROL)


def _is_input(r: Record) -> bool:
    return r.kind in DECISIONS if r.dir == META else r.dir in (VL_IN, ACS_IN) and _on_bridge_wire(r)


class _Replayer:
    def __init__(self, core: BridgeCore, transport: Transport, grid: tuple[float, float] | None = None,
                 sent_ms: Sequence[float] = ()) -> None:
        self.core, self.now, self.transport = core, 0.0, transport
        self.grid = grid  # the live playout clock's (grid, phase): a deadline was served at the next grid point
        self.sent_ms = sorted(sent_ms)  # when the live bridge wrote to the media socket (recorded times, ms)
        self.result = ReplayResult([], core)

    def ran_late(self, deadline: float, at: float, until: float) -> bool:
        """Whether the live pass serving the audio release due at `at` ran only after the input at `until`: the
        recording shows nothing written to the media socket between them (its timer fired late, after the input
        was read), so the input goes first, as it did live. Decided only for audio releases up to a frame late."""
        if deadline != self.core.playback.next_release() or until - at > LATE_PASS_S:
            return False
        first = bisect_left(self.sent_ms, at * 1000 - 0.01)  # recorded times are rounded to the microsecond
        return first == len(self.sent_ms) or self.sent_ms[first] >= until * 1000

    def served_at(self, deadline: float) -> float:
        """When the live playout clock served `deadline`: at the next grid point (no grid: at the deadline). An
        event that kicked the live send pass earlier is `feed`'s."""
        if self.grid is None:
            return deadline
        grid, phase = self.grid
        return math.ceil((deadline + phase) / grid) * grid - phase

    def emit(self, actions: list[Action]) -> bool:
        """Record the actions' wire messages; True when one of them kicks the live send pass (StopAudio, a notice)."""
        t = round(self.now * 1000, 3)
        kicks = False
        for action in actions:
            out = self.transport
            if isinstance(action, PlayAudio):
                if action.epoch == self.core.epoch:  # the runner drops frames of an interrupted epoch
                    for raw in messages(out.audio_message(action.pcm)):
                        self.result.messages.append(Message(t, ACS_OUT, out.describe(raw)))
            elif isinstance(action, StopPlayback):
                self.result.messages.append(Message(t, ACS_OUT, out.describe(out.stop_message())))
                kicks = True
            elif isinstance(action, Notify):
                message = out.notify_message(action.event)
                if message is not None:
                    self.result.messages.append(Message(t, ACS_OUT, out.describe(message)))
                    kicks = True
            elif isinstance(action, VlSend):
                self.result.messages.append(Message(t, VL_OUT, normalise(orjson.loads(orjson.dumps(action.event)))))
            elif isinstance(action, HangUp | Leave) and self.result.hang_up is None:
                self.result.hang_up = (t, action.reason)
            elif isinstance(action, RunTool):  # not run again: the recorded output is fed back (`tool_result`)
                self.result.tools.append((t, action.name, action.arguments))
            elif isinstance(action, Transfer):
                self.result.transfers.append((t, action.reason))
        return kicks

    def run_until(self, until: float, *, inclusive: bool) -> None:
        """Tick at every playout deadline before `until` (or at it, when inclusive)."""
        idle = 0
        while not self.core.ended:
            deadline = self.core.next_deadline()
            if deadline is None:
                return
            at = self.served_at(deadline)
            if at > until or (at == until and not inclusive):
                return
            if not inclusive and self.ran_late(deadline, at, until):
                return  # fed first; the release goes with the tick after it (`feed`) or the next `run_until`
            self.now = max(self.now, at)
            actions = self.core.tick(self.now)
            self.emit(actions)
            idle = 0 if actions or self.core.next_deadline() != deadline else idle + 1
            if idle >= MAX_IDLE_TICKS:  # a deadline that tick does not move: nothing more will happen
                return

    def feed(self, r: Record) -> None:
        """Feed one recorded input at `now`; where the live bridge kicked its send pass after it, tick now too."""
        now, core, data = self.now, self.core, r.data
        kicks = True  # media_open, tool_result, transfer_outcome, end_call: the runner kicks after each
        if r.dir == META and r.kind == "voicelive_open":
            kicks = self.emit(core.session_opened(now))
        elif r.dir == META and r.kind == "media_open":
            core.media_started(now)
        elif r.dir == META and r.kind == "voicelive_closed":
            kicks = self.emit(core.session_lost(now))  # an older recording's `unsent`: already in the core's ring
        elif r.dir == META and r.kind == "tool_result":
            self.emit(core.tool_result(now, str(data.get("call_id", "")), str(data.get("output", ""))))
        elif r.dir == META and r.kind == "transfer_outcome":
            self.emit(core.transfer_outcome(now, data.get("accepted") is True, str(data.get("detail", ""))))
        elif r.dir == META:  # end_call
            audio = data.get("local_audio")
            local = binascii.a2b_base64(audio) if isinstance(audio, str) else b""
            self.emit(core.end_call(now, str(data.get("reason", "")), local_audio=local))
        elif r.dir == VL_IN:
            had_queue = bool(core.queue)
            kicks = self.emit(core.server_event(now, orjson.loads(orjson.dumps(r.event))))
            kicks = kicks or event_moves_playout(core, had_queue)
        else:
            raw = r.media()
            msg = self.transport.parse(raw) if raw is not None else None
            kicks = msg is not None and (self.emit(dispatch(core, now, msg)) or isinstance(msg, KeyPress))
        if kicks and self.grid is not None and not core.ended:
            self.emit(core.tick(now))  # (no grid: the next `run_until` ticks at the deadline, as an older bridge did)


def _recorded_approvals(recording: Recording) -> Callable[[str, str], bool]:
    """MCP approvals answer as they were answered in the call."""
    answers: dict[str, bool] = {}
    for r in recording.records:
        item = r.event.get("item") if r.dir == VL_OUT else None
        if isinstance(item, dict) and item.get("type") == "mcp_approval_response":
            answers[str(item.get("approval_request_id"))] = item.get("approve") is True
    requests = {}
    for r in recording.records:
        item = r.event.get("item") if r.dir == VL_IN else None
        if isinstance(item, dict) and item.get("type") == "mcp_approval_request":
            requests[(str(item.get("server_label")), str(item.get("name")))] = answers.get(str(item.get("id")), False)
    return lambda server, name: requests.get((server, name), False)


def _recorded_metadata(recording: Recording) -> dict[str, str] | None:
    """The session metadata the call had (its ids; absent in older recordings)."""
    for r in recording.records:
        if r.dir == VL_OUT and r.kind == "session.update":
            metadata = r.data.get("event", {}).get("session", {}).get("metadata")
            return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else None
    return None


def replay(recording: Recording, *, core_factory: CoreFactory = BridgeCore) -> ReplayResult:
    """Run the recording's inbound messages through a new core; returns what it sent (see the module doc)."""
    transport = recording_transport(recording)
    agent = next((r.data for r in recording.records if r.dir == META and r.kind == "agent"), None)
    tools = agent.get("tools") if agent is not None else None
    core = core_factory(CoreConfig.from_settings(
        recording.call_id or "replay", recording.settings(), transport.media, transport.name, transport.notify,
        can_transfer=agent is not None and agent.get("can_transfer") is True,
        end_call=None if agent is not None else False,  # recorded before calls had agent actions: none offered
        tools=[t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else (),
        approve_mcp=_recorded_approvals(recording), metadata=_recorded_metadata(recording)))
    inputs = sorted((r for r in recording.records if _is_input(r)), key=lambda r: r.t)
    horizon = max((r.t for r in recording.records if _on_bridge_wire(r)), default=0.0) / 1000  # the bridge's end
    sent = [r.t for r in recording.records if r.dir == ACS_OUT and _on_bridge_wire(r)]
    run = _Replayer(core, transport, recording.playout_grid, sent)
    run.now = inputs[0].t / 1000 if inputs else 0.0
    core.start(run.now)
    if run.grid is not None:
        run.emit(core.tick(run.now))  # the bridge's first send pass, as it starts
    if not any(r.dir == META and r.kind == "media_open" for r in inputs):
        core.media_started(run.now)  # recorded before the bridge started ahead of its media socket
    for r in inputs:
        run.run_until(r.t / 1000, inclusive=False)
        if core.ended:
            break
        run.now = max(run.now, r.t / 1000)
        run.feed(r)
        run.result.inputs += 1
    run.run_until(max(horizon, run.now), inclusive=True)
    return run.result


# -- comparing -------------------------------------------------------------------------------------------------

@dataclass
class _Group:
    kind: str
    messages: list[Message] = field(default_factory=list)

    def describe(self) -> str:
        first = self.messages[0]
        if self.kind in COLLAPSED:
            return f"{self.kind} x{len(self.messages)} from {first.t:.1f} ms"
        return f"{compact(first.body)} at {first.t:.1f} ms"


def _groups(messages: Sequence[Message]) -> list[_Group]:
    groups: list[_Group] = []
    for m in messages:
        if not groups or m.kind not in COLLAPSED or groups[-1].kind != m.kind:
            groups.append(_Group(m.kind))
        groups[-1].messages.append(m)
    return groups


def compact(body: Any, limit: int = 60) -> str:
    """JSON with base64 audio shown as `<N bytes>` and long strings cut."""
    def shrink(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: shrink(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [shrink(v) for v in value]
        if isinstance(value, str) and key in ("data", "audio", "delta") and len(value) > 16:
            return f"<{len(value) * 3 // 4 - value.count('=')} bytes>"
        if isinstance(value, str) and len(value) > limit:
            return value[:limit] + "..."
        return value
    return orjson.dumps(shrink(body)).decode()


def _same(a: dict[str, Any], b: dict[str, Any], end_tolerance_ms: float) -> bool:
    ea, eb = a.get("audio_end_ms"), b.get("audio_end_ms")
    if isinstance(ea, int | float) and isinstance(eb, int | float):
        if abs(ea - eb) > end_tolerance_ms:
            return False
        a, b = {**a, "audio_end_ms": 0}, {**b, "audio_end_ms": 0}
    return a == b


def _first_difference(rec: list[_Group], rep: list[_Group], frame_tolerance: int,
                      end_tolerance_ms: float) -> tuple[int, str] | None:
    for i in range(max(len(rec), len(rep))):
        a = rec[i] if i < len(rec) else None
        b = rep[i] if i < len(rep) else None
        if a is None or b is None or a.kind != b.kind:
            return i, (f"first difference at #{i + 1}: recorded {a.describe() if a else '<nothing>'}; "
                       f"replayed {b.describe() if b else '<nothing>'}")
        na, nb = len(a.messages), len(b.messages)
        if a.kind == "AudioData" and abs(na - nb) > frame_tolerance:
            return i, f"#{i + 1}: {na} audio frames recorded, {nb} replayed (from {a.messages[0].t:.1f} ms)"
        if a.kind == "input_audio_buffer.append":
            for j in range(max(na, nb)):
                if j >= na or j >= nb or a.messages[j].body != b.messages[j].body:
                    return i, (f"#{i + 1}: caller audio differs at append {j + 1} "
                               f"({na} recorded, {nb} replayed, from {a.messages[0].t:.1f} ms)")
        elif a.kind != "AudioData" and not _same(a.messages[0].body, b.messages[0].body, end_tolerance_ms):
            return i, (f"first difference at #{i + 1}: recorded {a.describe()}; replayed {b.describe()}")
    return None


def _kinds(groups: list[_Group], around: int, width: int = 6) -> str:
    lo, hi = max(0, around - width), min(len(groups), around + width + 1)
    names = [g.kind + (f" x{len(g.messages)}" if g.kind in COLLAPSED else "") for g in groups[lo:hi]]
    return ("... " if lo else "") + ", ".join(names) + (" ..." if hi < len(groups) else "") if names else "<nothing>"


def compare(recorded: Sequence[Message], replayed: Sequence[Message], *, frame_tolerance: int = 1,
            end_tolerance_ms: float = FRAME_MS) -> list[str]:
    """Readable difference lines; empty when the replay matches the recording."""
    lines: list[str] = []
    for channel, title in CHANNELS:
        rec = _groups([m for m in recorded if m.channel == channel])
        rep = _groups([m for m in replayed if m.channel == channel])
        found = _first_difference(rec, rep, frame_tolerance, end_tolerance_ms)
        if found is not None:
            i, what = found
            lines += [f"{title}:", f"  recorded: {_kinds(rec, i)}", f"  replayed: {_kinds(rep, i)}", f"  {what}"]
    return lines


@dataclass
class ReplayReport:
    recording: Recording
    result: ReplayResult
    recorded: list[Message]
    differences: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences

    def text(self) -> str:
        def counts(messages: Sequence[Message]) -> str:
            acs = [m.kind for m in messages if m.channel == ACS_OUT]
            vl = [m.kind for m in messages if m.channel == VL_OUT]
            return (f"{acs.count('AudioData')} audio frames, {acs.count('StopAudio')} StopAudio to ACS; "
                    f"{len(vl)} events to Voice Live")
        rec = self.recording
        lines = [f"replayed {rec.path.name if rec.path else rec.call_id}: {self.result.inputs} inbound messages over "
                 f"{rec.duration_ms / 1000:.2f} s",
                 f"  recorded: {counts(self.recorded)}", f"  replayed: {counts(self.result.messages)}"]
        if rec.truncated:
            lines.append("  note: the recording's last line was cut short (the call died mid-write)")
        lines += self.differences or ["no differences"]
        return "\n".join(lines) + "\n"


def check_recording(recording: Recording, *, core_factory: CoreFactory = BridgeCore, frame_tolerance: int = 1,
                    end_tolerance_ms: float = FRAME_MS) -> ReplayReport:
    result, recorded = replay(recording, core_factory=core_factory), recorded_messages(recording)
    return ReplayReport(recording, result, recorded, compare(recorded, result.messages, frame_tolerance=frame_tolerance,
                                                             end_tolerance_ms=end_tolerance_ms))
