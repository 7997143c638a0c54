"""Recordings in Azure Blob Storage (`CALLBOT_RECORDINGS_URL`), against a real Azurite: a live call recorded to an
append blob as it goes, replayed and exported from the blob's URL, a storage outage mid-call (Azurite stopped) that
leaves the call alone, and an outage that ends in time losing nothing."""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from callbot.cli import main
from callbot.config import Settings
from callbot.local.acs.network import PhoneNetwork
from callbot.local.voicelive.protocol import tone
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.recording import CallRecorder, parse_recording
from callbot.recording_store import BlobStore, SinkError, download
from callbot.replay import check_recording
from tests.azurite import KEY, Azurite
from tests.harness import SIGNING_KEY, VOICELIVE_KEY, WEBHOOK_SECRET, run_callbot

CONTAINER = "recordings"


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


async def blob_names(azurite: Azurite) -> list[str]:
    store = BlobStore(azurite.container_url(CONTAINER), azurite.connection_string)
    try:
        return [b.name async for b in store.container.list_blobs()]
    except ResourceNotFoundError:  # no container yet
        return []
    finally:
        await store.close()


async def stored(azurite: Azurite, name: str) -> bytes:
    return await download(f"{azurite.container_url(CONTAINER)}/{name}", azurite.connection_string)


async def wait_for(predicate_coro, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await predicate_coro():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


# -- settings ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://acct.blob.core.windows.net/recordings", "must be an https:// container URL"),
    ("https://acct.blob.core.windows.net", "names no container"),
    ("https://acct.blob.core.windows.net/recordings?sv=2024&sig=SECRETSIG", "must not carry a query"),
    ("http://acct.blob.core.windows.net/recordings", "must use https"),
])
def test_a_bad_recordings_url_is_refused_at_start_without_repeating_it(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, callbot_recordings_url=url)  # type: ignore[call-arg]
    assert problem in str(caught.value)
    assert "SECRETSIG" not in str(caught.value)


def test_recordings_go_to_a_directory_or_a_container_not_both(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(_env_file=None, callbot_recordings_dir=str(tmp_path),  # type: ignore[call-arg]
                 callbot_recordings_url="https://acct.blob.core.windows.net/recordings")


def test_the_connection_string_is_a_secret_in_the_public_settings() -> None:
    s = Settings(_env_file=None, callbot_recordings_url="http://127.0.0.1:10000/devstoreaccount1/r",  # type: ignore[call-arg]
                 azure_storage_connection_string=f"AccountName=a;AccountKey={KEY}")
    assert s.public_dict()["azure_storage_connection_string"] == "<set>"
    assert KEY not in str(s.public_dict())


# -- the sink against Azurite --------------------------------------------------------------------------------------

async def test_the_recorder_streams_to_an_append_blob_while_the_call_goes_on(azurite: Azurite) -> None:
    store = BlobStore(azurite.container_url(CONTAINER), azurite.connection_string)  # the container does not exist yet
    try:
        rec = CallRecorder.open(store, "call-blob", settings())
        assert rec is not None and rec.path is None and rec.location.startswith(azurite.container_url(CONTAINER))
        for i in range(20):
            rec.acs_in(f'{{"kind":"AudioData","audioData":{{"data":"AAAA"}},"n":{i}}}')
        name = await first_blob(azurite)
        await wait_for(lambda: _has_lines(azurite, name, 21))  # header + 20, stored before the call ends
        rec.acs_out('{"kind":"StopAudio"}')
        await rec.close("caller_hung_up")
        recording = parse_recording((await stored(azurite, name)).splitlines(keepends=True))
        assert recording.call_id == "call-blob"
        assert [r.kind for r in recording.records][-2:] == ["StopAudio", "end"]
        assert not recording.truncated
    finally:
        await store.close()


async def first_blob(azurite: Azurite) -> str:
    async def some() -> bool:
        return bool(await blob_names(azurite))

    await wait_for(some)
    (name,) = await blob_names(azurite)
    return name


async def _has_lines(azurite: Azurite, name: str, count: int) -> bool:
    return len((await stored(azurite, name)).splitlines()) >= count


async def test_an_append_retried_after_a_lost_answer_is_not_stored_twice(azurite: Azurite) -> None:
    store = BlobStore(azurite.container_url(CONTAINER), azurite.connection_string)
    try:
        sink = store.sink("retried.jsonl")
        await sink.write(b"one\n")
        await sink.write(b"two\n")
        sink.length -= 4  # as if the answer to "two" had been lost: the recorder tries the same batch again
        await sink.write(b"two\n")
        await sink.write(b"three\n")
        assert await stored(azurite, "retried.jsonl") == b"one\ntwo\nthree\n"
        sink.length -= 1  # a position that matches nothing stored: an error, never a silent overwrite
        with pytest.raises(SinkError, match="appending to"):
            await sink.write(b"four\n")
    finally:
        await store.close()


async def test_storage_back_within_the_outage_window_loses_nothing(
        azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "callbot.recording")
    store = BlobStore(azurite.container_url(CONTAINER), azurite.connection_string)
    try:
        rec = CallRecorder.open(store, "call-outage", settings())
        assert rec is not None
        rec.acs_in('{"kind":"AudioData","n":"before"}')
        name = await first_blob(azurite)
        await wait_for(lambda: _has_lines(azurite, name, 2))
        await azurite.stop()
        for i in range(10):  # the call goes on while storage is down: the tap never waits
            rec.acs_in(f'{{"kind":"AudioData","n":"during-{i}"}}')
            await asyncio.sleep(0.3)
        assert any("buffering for up to 30 s" in r.getMessage() for r in caplog.records), caplog.text
        await azurite.start()
        rec.acs_in('{"kind":"AudioData","n":"after"}')
        await rec.close("caller_hung_up")
        lines = (await stored(azurite, name)).splitlines()
        assert [line.count(b"during-") for line in lines].count(1) == 10
        assert b"before" in lines[1] and b"after" in lines[-2] and b'"kind":"end"' in lines[-1]
        assert any("storage is back" in r.getMessage() for r in caplog.records)
        assert not any("incomplete" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


# -- live calls ----------------------------------------------------------------------------------------------------

async def _barge_in_call(phone: PhoneNetwork, voicelive: VoiceLiveServer, url: str,
                         during: asyncio.Future[None] | None = None) -> None:
    """A call with an answer, a barge-in, more caller audio and a hang-up. `during`: awaited mid-answer."""
    call = await phone.place_call(url, WEBHOOK_SECRET)
    session = await voicelive.wait_for_session()
    await session.wait_for("session.update")
    await call.stream(tone(300, "pcm16_16000hz", frequency=220.0))
    await session.start_response(text="A long answer", audio=tone(10000, "pcm16_16000hz"), realtime_factor=0.5)
    await call.wait_for_audio(frames=1)
    if during is not None:
        await during
    await asyncio.sleep(0.5)
    frames_before = len(call.bot_audio())
    await asyncio.sleep(0.5)
    assert len(call.bot_audio()) > frames_before, "bot audio kept coming"
    await session.speech_started()
    await call.wait_for_stop()
    await session.wait_for("conversation.item.truncate")
    await call.stream(tone(200, "pcm16_16000hz", frequency=220.0))
    await call.hang_up()


async def _until_idle(cb) -> None:  # type: ignore[no-untyped-def]
    for _ in range(300):
        if not cb.services.registry.calls:
            return
        await asyncio.sleep(0.02)


async def test_a_live_call_recorded_to_a_blob_replays_and_exports_from_its_url(
        tmp_path: Path, phone: PhoneNetwork, voicelive: VoiceLiveServer, azurite: Azurite,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k.lower(): v for k, v in phone.env().items()}
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_media_format="pcm16k",
                           callbot_recordings_url=azurite.container_url(CONTAINER),
                           azure_storage_connection_string=azurite.connection_string, **env) as cb:
        await _barge_in_call(phone, voicelive, cb.url)
        await _until_idle(cb)
    (name,) = await blob_names(azurite)
    data = await stored(azurite, name)
    for secret in (VOICELIVE_KEY, SIGNING_KEY, WEBHOOK_SECRET, KEY, "AccountKey"):
        assert secret.encode() not in data
    url = f"{azurite.container_url(CONTAINER)}/{name}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    assert await asyncio.to_thread(main, ["replay", url]) == 0
    assert await asyncio.to_thread(main, ["export-wav", url, str(tmp_path / "call.wav")]) == 0
    with wave.open(str(tmp_path / "call.wav")) as w:
        assert w.getnchannels() == 2 and w.getnframes() / w.getframerate() > 1.0
    report = check_recording(parse_recording(data.splitlines(keepends=True)))
    assert report.ok, report.text()
    assert "StopAudio" in [m.kind for m in report.recorded]


async def test_a_missing_blob_is_a_clear_error_without_the_key(
        azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    assert await asyncio.to_thread(main, ["replay", f"{azurite.container_url(CONTAINER)}/nothing.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "nothing.jsonl" in err and "reading" in err
    assert KEY not in err and "AccountKey" not in err


async def test_a_storage_outage_mid_call_leaves_the_call_alone_and_keeps_what_was_stored(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "callbot")
    env = {k.lower(): v for k, v in phone.env().items()}

    async def outage() -> None:
        await asyncio.sleep(2.5)  # a batch or more is stored first
        await azurite.stop()

    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_media_format="pcm16k",
                           callbot_recordings_url=azurite.container_url(CONTAINER),
                           azure_storage_connection_string=azurite.connection_string, **env) as cb:
        await _barge_in_call(phone, voicelive, cb.url, during=asyncio.ensure_future(outage()))
        await _until_idle(cb)
        assert not cb.services.registry.calls

        async def closed() -> bool:  # the recorder's last write fails after its retry: then it says so
            return any("incomplete" in r.getMessage() for r in caplog.records)

        await wait_for(closed, timeout=30)
    await azurite.start()  # to read what was stored before the outage
    (name,) = await blob_names(azurite)
    recording = parse_recording((await stored(azurite, name)).splitlines(keepends=True))
    kinds = [r.kind for r in recording.records]
    assert "AudioData" in kinds and "end" not in kinds, "the stored part: the call's start, not its tail"
    messages = [r.getMessage() for r in caplog.records]
    assert any("buffering for up to 30 s" in m for m in messages)
    assert any("recording" in m and "incomplete" in m for m in messages)
    assert any(r.levelno >= logging.ERROR and "recording" in r.getMessage() for r in caplog.records)
