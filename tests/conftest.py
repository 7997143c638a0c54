from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callbot.local.phone import PhoneNetwork
from callbot.local.voicelive_server import VoiceLiveServer
from tests.harness import VOICELIVE_KEY


@pytest.fixture
async def phone() -> AsyncIterator[PhoneNetwork]:
    async with PhoneNetwork() as network:
        yield network


@pytest.fixture
async def voicelive() -> AsyncIterator[VoiceLiveServer]:
    server = VoiceLiveServer(api_key=VOICELIVE_KEY)
    async with server:
        yield server
