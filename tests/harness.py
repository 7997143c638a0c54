"""Runs the real callbot app under uvicorn on 127.0.0.1 with settings built for a test."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from azure.core.credentials import AccessToken

from callbot.config import Settings
from callbot.server import InProcess, serve_in_process

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
SIGNING_KEY = "test-signing-key-0123456789abcdef"
VOICELIVE_KEY = "test-voicelive-key-abcdef0123456789"


Running = InProcess


def make_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "callbot_public_url": f"http://127.0.0.1:{port}",
        "callbot_webhook_secret": WEBHOOK_SECRET,
        "callbot_signing_key": SIGNING_KEY,
        "azure_voicelive_api_key": VOICELIVE_KEY,
        "callbot_greeting": "",
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_callbot(**overrides: Any) -> AbstractAsyncContextManager[InProcess]:
    """Serve callbot with `overrides` (settings field names) on a free port; yields its URL, settings, services."""
    return serve_in_process(lambda port: make_settings(port, **overrides))


class StaticToken:
    """An `AsyncTokenCredential` with a fixed token (no Microsoft Entra offline): Bearer-auth paths in tests."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("entra-token", 4_000_000_000)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None
