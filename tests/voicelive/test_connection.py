"""Opening Voice Live sessions with the real SDK: API key, Microsoft Entra tokens, and failures."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from callbot.config import Settings
from callbot.local.voicelive_server import VoiceLiveServer
from callbot.voicelive.connection import ENTRA_SCOPE, VoiceLiveConnector, VoiceLiveUnavailable, receive_event
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


async def test_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connector = VoiceLiveConnector(settings(azure_voicelive_api_key="k"), endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(VoiceLiveUnavailable):
        async with connector.session():
            pass
