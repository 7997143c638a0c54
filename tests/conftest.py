from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from callbot.local.acs.network import PhoneNetwork
from callbot.local.voicelive.server import VoiceLiveServer
from tests.harness import VOICELIVE_KEY

if TYPE_CHECKING:
    from tests.azurite import Azurite


@pytest.fixture
async def phone() -> AsyncIterator[PhoneNetwork]:
    async with PhoneNetwork() as network:
        yield network


@pytest.fixture
async def voicelive() -> AsyncIterator[VoiceLiveServer]:
    server = VoiceLiveServer(api_key=VOICELIVE_KEY)
    async with server:
        yield server


def self_signed_context() -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp()
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
async def tls_server() -> AsyncIterator[str]:
    """An https:// Voice Live endpoint on loopback whose certificate no client trusts."""
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def azurite_executable() -> str:
    """Azurite's blob service, installed by `.ci/install-azurite` when missing (skips, saying why, if it cannot be)."""
    from tests.azurite import find_azurite

    executable, why = find_azurite()
    if executable is None:
        pytest.skip(f"Azurite unavailable: {why}")
    return executable


@pytest.fixture
async def azurite(azurite_executable: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Azurite]:
    """A fresh Azurite blob service on a free port (its own data directory), stopped after the test."""
    from tests.azurite import Azurite

    server = Azurite(azurite_executable, tmp_path_factory.mktemp("azurite"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
