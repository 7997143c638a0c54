"""The OpenAPI docs (`/docs`, `/openapi.json`): on in local development mode or with CALLBOT_API_DOCS=on, 404 otherwise,
and never holding a configured value; and the move to FastAPI changed no reply of the webhook or the callbacks."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from callbot.config import Settings
from callbot.local.acs.network import PhoneNetwork
from callbot.local.profile import load_profile, serve_overrides
from callbot.local.voicelive.server import VoiceLiveServer
from tests.harness import WEBHOOK_SECRET, run_callbot
from tests.test_app_calls import phone_env, post, post_webhook

DOC_PATHS = ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect")
HTTP_ROUTES = {"/api/incoming-call", "/api/callbacks/{call_id}", "/healthz", "/readyz", "/metrics"}


async def get(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.content_type, await resp.read()


def configured_values(settings: Settings) -> list[str]:
    """Every secret, and every other configured string long enough to be recognisable."""
    values = [v.get_secret_value() for _, v in settings if isinstance(v, SecretStr)]
    values += [settings.acs_resource_id or "", settings.callbot_acs_jwks_url]
    return [v for v in values if len(v) >= 8]


@pytest.mark.parametrize("setting", [None, "off"], ids=["unset", "off"])
async def test_docs_and_schema_are_not_found_unless_turned_on(setting: str | None) -> None:
    overrides = {} if setting is None else {"callbot_api_docs": setting}
    async with run_callbot(**overrides) as cb:
        assert not cb.settings.api_docs
        unknown = await get(f"{cb.url}/no-such-route")
        for path in DOC_PATHS:
            assert await get(f"{cb.url}{path}") == unknown == (404, "text/plain", b"Not Found"), path
        assert (await get(f"{cb.url}/healthz"))[0] == 200


async def test_docs_describe_every_http_route_and_hold_no_configured_value(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(callbot_api_docs="on", azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        status, content_type, schema_bytes = await get(f"{cb.url}/openapi.json")
        assert (status, content_type) == (200, "application/json")
        status, content_type, page = await get(f"{cb.url}/docs")
        assert (status, content_type) == (200, "text/html")
        assert b"/openapi.json" in page
        assert (await get(f"{cb.url}/redoc"))[0] == 404, "one docs page, not two"
        settings = cb.settings
    schema = orjson.loads(schema_bytes)
    assert set(schema["paths"]) == HTTP_ROUTES
    webhook = schema["paths"]["/api/incoming-call"]["post"]
    callback = schema["paths"]["/api/callbacks/{call_id}"]["post"]
    for operation in (webhook, callback):
        assert set(operation["responses"]) == {"200", "400", "401", "413"}, "no 422: nothing is validated"
        assert operation["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert [p["name"] for p in webhook["parameters"]] == ["secret"]
    assert [p["name"] for p in callback["parameters"]] == ["call_id", "token"]
    secrets = configured_values(settings)
    assert WEBHOOK_SECRET in secrets and len(secrets) >= 5
    for text in (schema_bytes.decode(), page.decode()):
        assert not [s for s in secrets if s in text]


def test_local_development_mode_turns_docs_on_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = load_profile(tmp_path)
    monkeypatch.delenv("CALLBOT_API_DOCS", raising=False)
    assert Settings(_env_file=None).callbot_api_docs is None  # type: ignore[call-arg]
    overrides = serve_overrides(Settings(_env_file=None), profile, "127.0.0.1", 8000)  # type: ignore[call-arg]
    assert overrides["callbot_api_docs"] == "on"
    for explicit in ("off", " OFF "):
        monkeypatch.setenv("CALLBOT_API_DOCS", explicit)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert "callbot_api_docs" not in serve_overrides(settings, profile, "127.0.0.1", 8000)
        assert settings.callbot_api_docs == "off" and not settings.api_docs
    monkeypatch.setenv("CALLBOT_API_DOCS", "On")
    assert Settings(_env_file=None).api_docs  # type: ignore[call-arg]
    monkeypatch.setenv("CALLBOT_API_DOCS", "yes")
    with pytest.raises(ValidationError, match="callbot_api_docs"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_callbot_serve_has_docs_in_local_development_mode_only(tmp_path: Path) -> None:
    """Two real `callbot serve` processes: one with no ACS configured (local development mode), one with ACS."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACS_", "CALLBOT_"))}
    base.update(CALLBOT_LOCAL_DIR=str(tmp_path), CALLBOT_GREETING="")
    with_acs = {**base, "ACS_CONNECTION_STRING": "endpoint=http://127.0.0.1:9/;accesskey=c2VjcmV0LWFjY2Vzcy1rZXk=",
                "CALLBOT_WEBHOOK_SECRET": "production-webhook-secret"}
    ports = {"local": _free_port(), "production": _free_port()}
    procs = {name: await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--port", str(ports[name]), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        for name, env in (("local", base), ("production", with_acs))}
    try:
        seen: dict[str, dict[str, tuple[int, bytes]]] = {}
        async with aiohttp.ClientSession() as http:
            for name, port in ports.items():
                for _ in range(300):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz"):
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                seen[name] = {}
                for path in ("/docs", "/openapi.json"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        seen[name][path] = (resp.status, await resp.read())
    finally:
        for proc in procs.values():
            proc.terminate()
        logs = {name: (await asyncio.wait_for(proc.communicate(), 30))[1].decode() for name, proc in procs.items()}
    assert seen["local"]["/docs"][0] == seen["local"]["/openapi.json"][0] == 200, logs["local"]
    assert seen["production"]["/docs"][0] == seen["production"]["/openapi.json"][0] == 404, logs["production"]
    profile = load_profile(tmp_path, create=False)
    schema = seen["local"]["/openapi.json"][1].decode() + seen["local"]["/docs"][1].decode()
    for secret in (profile.acs_access_key, profile.webhook_secret, profile.signing_key, profile.resource_id):
        assert secret not in schema


async def test_webhook_and_callbacks_answer_as_before_fastapi_never_with_its_own_shapes(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    """Odd queries, headers and content types reach callbot's own checks: no 422, no FastAPI JSON error bodies."""
    unauthorized = (401, b'{"error":"unauthorized"}')
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        hook = f"{cb.url}/api/incoming-call"
        assert await post_webhook(cb, [], secret=None) == unauthorized
        assert await post(f"{hook}?secret=&secret", b"[]") == unauthorized
        assert await post(f"{hook}?secret={WEBHOOK_SECRET}x", b"[]", headers={"Authorization": "x" * 9000}) \
            == unauthorized
        status, body = await post(f"{hook}?secret={WEBHOOK_SECRET}", b"a=b",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 400 and list(orjson.loads(body)) == ["error"]
        assert await post_webhook(cb, [], headers={"Content-Type": "text/plain"}) == (200, b'{"accepted":0}')
        callback = f"{cb.url}/api/callbacks/some-call"
        assert await post(callback, b"[]") == unauthorized
        assert await post(f"{callback}?token=&token=x", b"not json", headers={"Content-Type": ""}) == unauthorized
        assert await post(f"{cb.url}/api/callbacks/", b"[]") == (404, b"Not Found")
        async with aiohttp.ClientSession() as http, http.get(hook) as resp:
            assert (resp.status, await resp.read(), resp.headers.get("allow")) == (405, b"Method Not Allowed", "POST")
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{cb.url}/healthz") as resp:
                assert (resp.status, await resp.read()) == (405, b"Method Not Allowed")
            for path in ("/healthz", "/readyz", "/metrics"):  # HEAD answers like GET, without a body
                async with http.head(f"{cb.url}{path}") as head, http.get(f"{cb.url}{path}") as got:
                    assert (head.status, head.content_type) == (got.status, got.content_type), path
                    assert await head.read() == b""
