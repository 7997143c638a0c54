"""Opening Voice Live sessions with the real SDK: API key, Microsoft Entra tokens, and failures."""

from __future__ import annotations

import base64
import socket
from typing import Any

import aiohttp
import pytest
from azure.ai.voicelive.aio import ConnectionError as VoiceLiveConnectionError
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from callbot.config import Settings
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.voicelive.connection import (
    ENTRA_SCOPE,
    PERMANENT_CAUSES,
    VoiceLiveConnector,
    VoiceLiveUnavailable,
    classify,
    receive_event,
    send_now,
)
from tests.harness import VOICELIVE_KEY, StaticToken


class ScopeRecorder(StaticToken):
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return await super().get_token(*scopes, **kwargs)


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


async def test_entra_mode_sends_a_bearer_token_for_the_ai_scope() -> None:
    credential = ScopeRecorder()
    async with VoiceLiveServer(accept_bearer=True) as server:
        connector = VoiceLiveConnector(settings(), endpoint=server.url, credential=credential)
        assert connector.auth_mode == "entra"
        async with connector.session() as conn:
            event = await receive_event(conn)
            assert event is not None and event["type"] == "session.created"
        session = await server.wait_for_session()
        assert session.headers["Authorization"] == "Bearer entra-token"
        assert credential.scopes == [(ENTRA_SCOPE,)] and ENTRA_SCOPE == "https://ai.azure.com/.default"
        assert session.query["model"] == "gpt-realtime"


async def test_api_key_mode_sends_the_key_and_a_wrong_key_is_unavailable_without_leaking_it() -> None:
    async with VoiceLiveServer(api_key=VOICELIVE_KEY) as server:
        good = VoiceLiveConnector(settings(azure_voicelive_api_key=VOICELIVE_KEY), endpoint=server.url)
        async with good.session():
            pass
        assert (await server.wait_for_session()).headers["api-key"] == VOICELIVE_KEY
        bad = VoiceLiveConnector(settings(azure_voicelive_api_key="wrong-key-123456"), endpoint=server.url)
        with pytest.raises(VoiceLiveUnavailable) as info:
            async with bad.session():
                pass
        assert "wrong-key-123456" not in str(info.value)


async def test_send_now_writes_on_the_sdks_own_socket_at_once_and_declines_once_it_is_closed() -> None:
    async with VoiceLiveServer(api_key=VOICELIVE_KEY) as server:
        connector = VoiceLiveConnector(settings(azure_voicelive_api_key=VOICELIVE_KEY), endpoint=server.url)
        audio = [base64.b64encode(bytes([i]) * 960).decode() for i in range(5)]
        async with connector.session() as conn:
            session = await server.wait_for_session()
            assert all(send_now(conn, {"type": "input_audio_buffer.append", "audio": a}) for a in audio), \
                "the SDK's connection is the aiohttp socket send_now knows: nothing fell back to the writer"
            await session.wait_for("input_audio_buffer.append", count=5)
            assert bytes(session.input_audio) == b"".join(bytes([i]) * 960 for i in range(5))
            await conn.close()
            assert not send_now(conn, {"type": "input_audio_buffer.append", "audio": audio[0]})


async def test_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connector = VoiceLiveConnector(settings(azure_voicelive_api_key="k"), endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(VoiceLiveUnavailable):
        async with connector.session():
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RefusingCredential(StaticToken):
    """A Microsoft Entra credential that cannot get a token (as DefaultAzureCredential with no identity)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                        "credentials.\nAttempted credentials: ...")


async def unavailable(connector: VoiceLiveConnector) -> VoiceLiveUnavailable:
    with pytest.raises(VoiceLiveUnavailable) as info:
        async with connector.session():
            pass
    return info.value


async def test_a_refused_connection_is_a_transient_cause() -> None:
    failure = await unavailable(VoiceLiveConnector(settings(azure_voicelive_api_key="k"),
                                                   endpoint=f"http://127.0.0.1:{free_port()}"))
    assert (failure.cause, failure.permanent) == ("refused", False)


async def test_a_refused_key_is_a_permanent_auth_cause() -> None:
    async with VoiceLiveServer(api_key=VOICELIVE_KEY) as server:
        failure = await unavailable(VoiceLiveConnector(settings(azure_voicelive_api_key="wrong-key-123456"),
                                                       endpoint=server.url))
    assert (failure.cause, failure.permanent) == ("auth", True)
    assert "HTTP 401" in str(failure) and "wrong-key" not in str(failure)


async def test_a_credential_without_a_token_is_a_permanent_cause_not_an_exception_group() -> None:
    async with VoiceLiveServer(accept_bearer=True) as server:
        failure = await unavailable(VoiceLiveConnector(settings(), endpoint=server.url,
                                                       credential=RefusingCredential()))
    assert (failure.cause, failure.permanent) == ("credential", True)
    assert "\n" not in str(failure), "one line"


async def test_an_untrusted_certificate_is_a_permanent_tls_cause(tls_server: str) -> None:
    failure = await unavailable(VoiceLiveConnector(settings(azure_voicelive_api_key="k"), endpoint=tls_server))
    assert (failure.cause, failure.permanent) == ("tls", True)


def test_dns_and_url_failures_are_named() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("nowhere.invalid", 443, True, True, None, None, None)
    dns = aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name or service not known"))
    assert classify(_sdk_error(dns)) == ("dns", "the endpoint's host name does not resolve")
    assert classify(_sdk_error(aiohttp.InvalidURL("x")))[0] == "bad_url"
    assert "bad_url" in PERMANENT_CAUSES and "dns" not in PERMANENT_CAUSES


def _sdk_error(cause: BaseException) -> BaseException:
    try:
        raise VoiceLiveConnectionError(f"Failed to establish WebSocket connection: {cause}") from cause
    except VoiceLiveConnectionError as exc:
        return exc
