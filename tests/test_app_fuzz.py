"""Malformed and fuzzed input on the webhook and the callbacks while a real call goes on, and a scan of every log
record (and the recording) of a whole call for secrets.

Hypothesis runs in a worker thread (`asyncio.to_thread`) and hands each example's requests to the test's event loop,
where callbot, the phone network and the Voice Live server keep running meanwhile and a good call streams real-time
audio through it all. Invariants: never a 5xx, the process stays healthy, /metrics stays valid Prometheus text, and
the good call still carries audio both ways.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbot.local.acs.identity import LocalAcsIdentity
from callbot.local.acs.network import PhoneCall, PhoneNetwork
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.security import CallTokenSigner
from tests.harness import SIGNING_KEY, VOICELIVE_KEY, WEBHOOK_SECRET, Running, run_callbot
from tests.test_app_calls import (
    call_id_of,
    converse,
    eventually,
    metrics,
    phone_env,
    post,
    post_webhook,
    query_token,
    speechlike,
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
CALL_TYPES = ["CallConnected", "ParticipantsUpdated", "PlayCompleted", "PlayFailed", "MediaStreamingStarted",
              "MediaStreamingStopped", "RecognizeCompleted", "ContinuousDtmfRecognitionToneReceived"]
ENDING_TYPES = ["CallDisconnected", "MediaStreamingFailed", "AnswerFailed", "CreateCallFailed"]
METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
PROMETHEUS_LINE = re.compile(rf"(# TYPE {METRIC_NAME} (counter|gauge|summary|histogram))|(# HELP {METRIC_NAME} [^\n]*)"
                             rf"|({METRIC_NAME}(\{{{LABEL}(,{LABEL})*\}})? -?[0-9.e+]+)")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)


def grid_event(event_type: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Event Grid events that are nearly right: the right envelope, fuzzed data."""
    data = st.fixed_dictionaries({}, optional={
        "validationCode": json_values, "validationUrl": json_values, "incomingCallContext": json_values,
        "from": json_values | st.fixed_dictionaries({"rawId": json_values}, optional={"phoneNumber": json_values}),
        "to": json_values | st.fixed_dictionaries({"rawId": json_values}),
        "correlationId": json_values, "serverCallId": json_values, "callerDisplayName": json_values,
    })
    return st.fixed_dictionaries({"eventType": event_type}, optional={
        "id": st.text(max_size=8) | json_values, "data": data | json_values, "subject": json_values})


def cloud_event(types: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """ACS CloudEvents that are nearly right."""
    type_ = st.sampled_from(types).map(lambda t: "Microsoft.Communication." + t) | st.text(max_size=30)
    data = st.fixed_dictionaries({}, optional={
        "callConnectionId": st.text(min_size=1, max_size=12) | json_values,
        "resultInformation": json_values | st.fixed_dictionaries(
            {}, optional={"code": json_values, "subCode": json_values, "message": json_values}),
        "operationContext": json_values, "serverCallId": json_values, "correlationId": json_values,
    })
    return st.fixed_dictionaries({"type": type_}, optional={
        "id": st.text(max_size=8) | json_values, "data": data | json_values, "source": json_values,
        "subject": st.text(max_size=40) | json_values})


def body(structured: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    as_json = (st.lists(structured, max_size=3) | structured | json_values).map(
        lambda v: json.dumps(v).encode())  # stdlib: NaN and Infinity included, as a sloppy sender would
    return as_json | st.binary(max_size=512)


def batch(structured: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(body(structured), min_size=1, max_size=6)


class Stream:
    """Keeps the good call talking at real time (50 frames/s) until stopped."""

    def __init__(self, call: PhoneCall) -> None:
        self.call = call
        self.sent = bytearray()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        chunk = speechlike(200, seed=9)
        while not self.stop.is_set():
            await self.call.stream(chunk, realtime=True)
            self.sent += chunk

    async def finish(self) -> bytes:
        self.stop.set()
        await self.task
        return bytes(self.sent)


async def test_fuzzed_webhook_and_callback_bodies_never_5xx_and_a_live_call_is_unaffected(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        live_id = call_id_of(call.answered)
        other_id = secrets.token_hex(16)  # a call that is not live here: every event type may be sent to it
        signer = CallTokenSigner.from_settings(cb.settings)
        other_url = f"{cb.url}/api/callbacks/{other_id}?token=" \
                    f"{signer.issue(other_id, purpose='callback', expires_at=time.time() + 600)}"
        auth = {"Authorization": phone.authorization(), "Content-Type": "application/json"}
        statuses: dict[str, list[int]] = {"webhook": [], "live-callback": [], "other-callback": []}
        stream = Stream(call)

        loop = asyncio.get_running_loop()
        http = aiohttp.ClientSession()  # TCP_NODELAY: a request costs well under a millisecond

        async def post_status(url: str, data: bytes, headers: dict[str, str]) -> int:
            async with http.post(url, data=data, headers=headers) as resp:
                await resp.read()
                return resp.status

        def fuzz() -> None:  # runs in a worker thread; requests go out on the event loop
            def send(kind: str, url: str, bodies: list[bytes], headers: dict[str, str]) -> None:
                # the bodies of one example are posted concurrently
                async def all_of() -> list[int]:
                    return list(await asyncio.gather(*(post_status(url, data, headers) for data in bodies)))

                got = asyncio.run_coroutine_threadsafe(all_of(), loop).result(20)
                statuses[kind].extend(got)
                assert all(status < 500 for status in got), (kind, got, [data[:200] for data in bodies])

            webhook = f"{cb.url}/api/incoming-call?secret={WEBHOOK_SECRET}"
            grid_types = st.sampled_from(["Microsoft.EventGrid.SubscriptionValidationEvent",
                                          "Microsoft.Communication.IncomingCall"]) | st.text(max_size=30)

            @FUZZ
            @given(batch(grid_event(grid_types)))
            def webhook_bodies(bodies: list[bytes]) -> None:
                send("webhook", webhook, bodies, {"Content-Type": "application/json"})

            @FUZZ
            @given(batch(cloud_event(CALL_TYPES)))
            def live_callback_bodies(bodies: list[bytes]) -> None:
                send("live-callback", call.answered.callback_uri, bodies, auth)

            @FUZZ
            @given(batch(cloud_event(CALL_TYPES + ENDING_TYPES)))
            def other_callback_bodies(bodies: list[bytes]) -> None:
                send("other-callback", other_url, bodies, auth)

            webhook_bodies()
            live_callback_bodies()
            other_callback_bodies()

        try:
            await asyncio.to_thread(fuzz)
        finally:
            await http.close()
        sent = await stream.finish()
        assert all(len(v) >= 100 for v in statuses.values()), {k: len(v) for k, v in statuses.items()}
        assert {s for v in statuses.values() for s in v} <= {200, 400, 401, 413}

        # the process is alive and the good call still carries audio both ways
        async with aiohttp.ClientSession() as check:
            async with check.get(f"{cb.url}/healthz") as resp:
                assert resp.status == 200
            async with check.get(f"{cb.url}/metrics") as resp:
                exposition = await resp.text()
        assert all(PROMETHEUS_LINE.fullmatch(line) for line in exposition.splitlines()), exposition
        assert live_id in cb.services.registry.calls
        assert not call.closed.is_set()
        await eventually(lambda: len(session.input_audio) >= len(sent), 5, "streamed audio reached Voice Live")
        assert bytes(session.input_audio).endswith(sent)
        before = len(session.input_audio)
        await converse(call, session)
        assert len(session.input_audio) > before
        await call.hang_up()
    assert not [r for r in caplog.records if "Exception in ASGI" in r.getMessage() or "unhandled" in r.getMessage()]


# -- hand-picked bad input ---------------------------------------------------------------------------------------------

BAD_BODIES: dict[str, bytes] = {
    "empty": b"",
    "not-json": b"this is not json",
    "truncated": b'[{"id": "1", "eventType": ',
    "invalid-utf8": b'["\xff\xfe"]',
    "null": b"null",
    "number": b"42",
    "string": b'"hello"',
    "object": b'{"id": "1"}',
    "empty-array": b"[]",
    "array-of-empty-objects": b"[{}, {}]",
    "array-of-scalars": b"[1, true, null]",
    "wrong-types": b'[{"id": 1, "eventType": ["x"], "type": {}, "data": "x"}]',
    "unknown-event-type": b'[{"id": "1", "eventType": "Contoso.Unknown", "type": "Contoso.Unknown",'
                          b' "data": {"callConnectionId": "421f0600-0000-0000-0000-000000000000"}}]',
    "missing-data": b'[{"id": "1", "eventType": "Microsoft.Communication.IncomingCall",'
                    b' "type": "Microsoft.Communication.CallConnected"}]',
    "bad-incoming-call": b'[{"id": "1", "eventType": "Microsoft.Communication.IncomingCall", "data": {"from": 3}}]',
    "too-many-events": orjson.dumps([{"id": str(i), "eventType": "X", "type": "X", "data": {}} for i in range(500)]),
    "deeply-nested": b"[" * 200_000 + b"]" * 200_000,
    "huge-number": b"[" + b"9" * 100_000 + b"]",
}


def assert_not_5xx(results: dict[str, int]) -> None:
    bad = {name: status for name, status in results.items() if not (200 <= status < 300 or 400 <= status < 500)}
    assert not bad, f"unexpected statuses: {bad}"


async def test_bad_webhook_and_callback_bodies_get_4xx_or_an_acknowledgement_never_500(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        auth = {"Authorization": phone.authorization()}
        hook: dict[str, int] = {}
        back: dict[str, int] = {}
        for name, body in BAD_BODIES.items():
            hook[name] = (await post_webhook(cb, body))[0]
            back[name] = (await post(call.answered.callback_uri, body, headers=auth))[0]
        assert_not_5xx(hook)
        assert_not_5xx(back)
        assert hook["not-json"] == back["not-json"] == 400
        assert hook["empty-array"] == back["empty-array"] == 200
        assert hook["unknown-event-type"] == back["unknown-event-type"] == 200
        assert hook["too-many-events"] == back["too-many-events"] == 400
        huge = b"[" + b" " * (10 * 1024 * 1024) + b"]"
        assert (await post_webhook(cb, huge))[0] == 413
        assert (await post(call.answered.callback_uri, huge, headers=auth))[0] == 413

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
            for _ in range(10):
                yield b" " * (1024 * 1024)

        assert (await post_webhook(cb, chunked()))[0] == 413
        assert (await metrics(cb))["callbot_body_too_large_total"] == 3
        assert cb.services.registry.calls, "the live call survived all of it"
        await converse(call, await voicelive.wait_for_session())
        await call.hang_up()
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]


# -- secrets never reach the logs --------------------------------------------------------------------------------------


async def whole_call(phone: PhoneNetwork, voicelive: VoiceLiveServer, cb: Running) -> list[str]:
    """A call exercising the usual paths, including refusals; returns every secret value it involved."""
    stranger = await LocalAcsIdentity.create()
    bad_jwt = stranger.authorization(phone.resource_id)
    await post_webhook(cb, [{"id": "1", "eventType": "Microsoft.Communication.IncomingCall",
                             "data": {"incomingCallContext": 7, "from": WEBHOOK_SECRET}}])  # bad request
    await post_webhook(cb, [], secret=WEBHOOK_SECRET[:-1])  # wrong secret
    call = await phone.place_call(cb.url, WEBHOOK_SECRET)
    answered = call.answered
    session = await voicelive.wait_for_session()
    await session.wait_for("response.create")  # the greeting ("Hello there": 11 x 60 ms of tone)
    await call.wait_for_audio(frames=33)
    await converse(call, session)
    await session.speech_started()
    await session.speech_stopped()
    await session.transcription_completed("item_1", "my account number is 1234")
    await post(answered.callback_uri, b"[]", headers={"Authorization": bad_jwt})  # refused: bad JWT
    await post(answered.callback_uri.split("?")[0] + "?token=" + query_token(answered.transport_url or ""), b"[]",
               headers={"Authorization": phone.authorization()})  # refused: media token on a callback
    assert phone.http is not None and answered.transport_url
    refused = await phone.http.ws_connect(answered.transport_url, headers={"Authorization": bad_jwt})
    await refused.receive(timeout=5)
    await refused.close()
    await phone.callback(call, "PlayFailed", result_code=500, result_message="Action failed.")
    await call.hang_up()
    await asyncio.wait_for(session.closed.wait(), 2)
    await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
    access_key = phone.acs.connection_string.split("accesskey=", 1)[1]
    return [VOICELIVE_KEY, access_key, WEBHOOK_SECRET, SIGNING_KEY, query_token(answered.callback_uri),
            query_token(answered.transport_url), phone.authorization().rsplit(".", 1)[1], bad_jwt.rsplit(".", 1)[1],
            answered.incoming_call_context]


async def test_no_secret_appears_in_any_log_record_of_a_whole_call(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("", "callbot", "azure", "uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp", "websockets"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_greeting="Hello there",
                           **phone_env(phone)) as cb:
        secret_values = await whole_call(phone, voicelive, cb)
    records = caplog.records
    assert len(records) > 50, "logging was captured at DEBUG"
    assert any(r.name.startswith("uvicorn") and "WebSocket /ws/media/" in r.getMessage() for r in records), \
        "uvicorn's WebSocket log lines (which carry the URL) were produced and scanned"
    texts = [caplog.text] + [r.getMessage() for r in records] + [repr(r.__dict__) for r in records]
    for value in secret_values:
        leaks = [t[:300] for t in texts if value in t]
        assert not leaks, f"a secret ({value[:4]}...) appears in the log: {leaks[:3]}"


async def test_no_secret_appears_in_the_call_recording(phone: PhoneNetwork, voicelive: VoiceLiveServer,
                                                       tmp_path: Path) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_recordings_dir=tmp_path,
                           callbot_greeting="Hello there", **phone_env(phone)) as cb:
        secret_values = await whole_call(phone, voicelive, cb)
    files = await asyncio.to_thread(lambda: [p for p in tmp_path.rglob("*") if p.is_file()])
    if not files:
        pytest.skip("CALLBOT_RECORDINGS_DIR produced no recording: callbot.recording is not wired into the "
                    "service yet")
    for path in files:
        content = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
        for value in secret_values:
            assert value not in content, f"a secret ({value[:4]}...) appears in {path.name}"

