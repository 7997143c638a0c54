"""Transfer to a human, the ACS side: ask ACS to transfer the call, route its outcome to the call's bridge, and keep
callbot from hanging up a call it has handed over.

Caller id rule: when the target is a phone number and the caller called from the phone network (raw id
``4:+<E.164>``), the caller's own number is sent as ``source_caller_id_number``, so the person who answers sees who
is calling (and can call them back). ACS uses that field only for PSTN targets; for an ACS or Teams target nothing
is sent (they see the transferee's identity), and for a caller who is not a phone number nothing is sent either (ACS
then shows the number the call came in on).

Hang-ups: once ACS has accepted a transfer, callbot's leg is gone and the caller talks to someone else: callbot never
hangs that call up. While a transfer is under way (requested, no outcome yet), a hang-up the bridge asks for leaves
only callbot's own leg (``is_for_everyone=False``), so the transfer can still complete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from callbot.acs.control import CallControlError
from callbot.acs.targets import caller_phone_number, describe, is_phone_number, parse_target
from callbot.bridge.actions import TransferError

if TYPE_CHECKING:
    from callbot.acs.events import CallEvent
    from callbot.calls import Call
    from callbot.services import Services

log = logging.getLogger(__name__)

OPERATION_PREFIX = "transfer:"
MAX_DETAIL = 160


def transfer_available(svc: Services) -> bool:
    """A transfer target is configured and ACS call control is up."""
    return svc.settings.callbot_transfer_target is not None and svc.control is not None


async def request_transfer(svc: Services, call: Call, reason: str) -> None:
    """Ask ACS to transfer ``call`` to the configured target; `TransferError` (short, safe for the model) when it
    cannot be asked or refuses. The outcome comes later as a callback (`on_transfer_event`)."""
    target_setting = svc.settings.callbot_transfer_target
    if target_setting is None or svc.control is None:
        raise TransferError("transfer to a person is not available on this line")
    if not call.connection_id:
        raise TransferError("the call is not connected")
    check_transferable(call)
    target = parse_target(target_setting)  # checked at start: cannot fail here
    caller_id = caller_phone_number(call.caller_raw_id) if is_phone_number(target) else None
    control, connection_id = svc.control, call.connection_id
    caller = "the caller's number" if caller_id is not None else "not set"
    await ask(svc, call, reason, shown=f"{describe(target)} (caller id {caller})",
              record={"target": target.raw_id, "reason": reason, "caller_id": caller_id is not None},
              request=lambda: control.transfer(connection_id, target, operation_context=OPERATION_PREFIX + call.call_id,
                                               source_caller_id=caller_id),
              errors=(CallControlError,))


def check_transferable(call: Call) -> None:
    """`TransferError` when ``call`` cannot be handed over now (any transport)."""
    if call.ended:
        raise TransferError("the call is not connected")
    if call.transfer in ("requested", "accepted"):
        raise TransferError("a transfer is already under way")


async def ask(svc: Services, call: Call, reason: str, *, shown: str, record: dict[str, Any],
              request: Callable[[], Awaitable[None]], errors: tuple[type[Exception], ...]) -> None:
    """What every transport's transfer does around its provider's request: count it, log it (the reason's length;
    its text at DEBUG: personal data), record it, mark the call, and turn the provider's refusal (one of ``errors``,
    with a ``status``) into a `TransferError` the model can tell the caller."""
    svc.metrics.inc("transfers_requested")
    log.info("call %s: transfer to %s requested (reason: %d characters)", call.call_id, shown, len(reason))
    log.debug("call %s: transfer reason: %s", call.call_id, reason)
    if call.recorder is not None:
        call.recorder.rest("transfer", record)
    call.transfer = "requested"
    try:
        await request()
    except errors as exc:
        call.transfer = "failed"
        svc.metrics.inc("transfers_failed")
        log.error("call %s: transfer failed: %s", call.call_id, exc)
        code = getattr(exc, "status", None)
        status = f" (HTTP {code})" if code is not None else ""
        raise TransferError(f"the phone system refused the transfer{status}") from None


def on_transfer_event(svc: Services, call: Call, ev: CallEvent) -> None:
    """CallTransferAccepted / CallTransferFailed: tell the call's bridge."""
    accepted = ev.name == "CallTransferAccepted"
    if accepted:
        call.transfer = "accepted"
        svc.metrics.inc("transfers_accepted")
        detail = ""
    else:
        call.transfer = "failed"
        svc.metrics.inc("transfers_failed")
        detail = failure_detail(ev)
    if call.bridge is not None:
        call.bridge.transfer_outcome(accepted, detail)


def failure_detail(ev: CallEvent) -> str:
    """A short reason for the model: ACS's result message and code (they hold no secret), bounded."""
    message = (ev.result_message or "the transfer failed").strip()
    code = f" (code {ev.result_code}/{ev.result_sub_code})" if ev.result_code is not None else ""
    return (message[: MAX_DETAIL - len(code)] + code).strip()


def hang_up_scope(call: Call) -> bool | None:
    """How callbot may hang ``call`` up: True for everyone, False its own leg only (a transfer is under way),
    None not at all (the call was transferred)."""
    if call.transfer == "accepted":
        return None
    return call.transfer != "requested"
