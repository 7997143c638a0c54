"""Opening Voice Live sessions with the real `azure-ai-voicelive` SDK.

One `VoiceLiveConnector` per process holds the credential (an API key, or one `DefaultAzureCredential` whose token
cache every call shares) and opens one connection per call. Events are received raw (`recv_bytes` + orjson) because
building an SDK model for every 20 ms audio delta costs more than the rest of the bridge put together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from azure.ai.voicelive.aio import ConnectionClosed, VoiceLiveConnection, connect
from azure.ai.voicelive.aio import ConnectionError as VoiceLiveConnectionError
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError

from callbot.config import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
ENTRA_SCOPE = "https://ai.azure.com/.default"


# A ping when the socket has been quiet this long; no pong within half of it and the session counts as dropped. A
# network drop without FIN or RST is otherwise silent: the caller would talk into a dead socket until TCP gave up.
HEARTBEAT_S = 5.0


class VoiceLiveUnavailable(Exception):
    """The session could not be opened. `cause` is a short, fixed word for logs and metrics (`auth`, `credential`,
    `dns`, `refused`, `tls`, `timeout`, `rejected`, `bad_url`, `unreachable`); `permanent` causes are not retried
    within a call: the same configuration would fail again, and the caller should hear the apology at once."""

    def __init__(self, detail: str, cause: str = "unreachable", permanent: bool = False) -> None:
        super().__init__(detail)
        self.cause = cause
        self.permanent = permanent


PERMANENT_CAUSES = frozenset({"auth", "credential", "tls", "bad_url", "rejected"})


def classify(exc: BaseException) -> tuple[str, str]:
    """(cause, detail) of a failed connect, from the SDK's error and the aiohttp error beneath it."""
    inner = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(inner, aiohttp.WSServerHandshakeError):
        status = inner.status
        if status in (401, 403):
            return "auth", f"the service refused the credential (HTTP {status})"
        if status in (400, 404):
            return "rejected", f"the service refused the connection (HTTP {status}): check the endpoint and model"
        return "refused", f"the service answered HTTP {status}"
    if isinstance(inner, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls", f"TLS failed: {type(inner).__name__}"
    if isinstance(inner, aiohttp.ClientConnectorDNSError):
        return "dns", "the endpoint's host name does not resolve"
    if isinstance(inner, aiohttp.ClientConnectorError):
        return "refused", f"cannot connect to {inner.host}:{inner.port}"
    if isinstance(inner, aiohttp.InvalidURL | ValueError):
        return "bad_url", "the endpoint is not a usable URL"
    return "unreachable", _safe_reason(exc)


class VoiceLiveConnector:
    def __init__(self, settings: Settings, endpoint: str | None = None,
                 credential: AzureKeyCredential | AsyncTokenCredential | None = None) -> None:
        self.settings = settings
        resolved = endpoint or settings.azure_voicelive_endpoint
        if not resolved:
            raise ValueError("no Voice Live endpoint configured")
        self.endpoint: str = resolved
        self._owns_credential = credential is None
        if credential is not None:
            self.credential = credential
        elif settings.azure_voicelive_api_key is not None:
            self.credential = AzureKeyCredential(settings.azure_voicelive_api_key.get_secret_value())
        else:
            from azure.identity.aio import DefaultAzureCredential

            self.credential = DefaultAzureCredential()

    @property
    def auth_mode(self) -> str:
        return "api-key" if isinstance(self.credential, AzureKeyCredential) else "entra"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[VoiceLiveConnection]:
        s = self.settings
        kwargs: dict[str, Any] = {}
        if s.azure_voicelive_agent_name:
            kwargs["agent_name"] = s.azure_voicelive_agent_name
            kwargs["project_name"] = s.azure_voicelive_project_name
        else:
            kwargs["model"] = s.azure_voicelive_model
        if s.azure_voicelive_api_version:
            kwargs["api_version"] = s.azure_voicelive_api_version
        manager = connect(
            endpoint=self.endpoint,
            credential=self.credential,
            connection_options={"heartbeat": HEARTBEAT_S, "close_timeout": 1.0, "max_msg_size": 8 * 1024 * 1024},
            credential_scopes=[ENTRA_SCOPE],
            **kwargs,
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                conn = await manager.__aenter__()
        except TimeoutError:
            raise VoiceLiveUnavailable(f"connect timed out after {CONNECT_TIMEOUT_S:.0f} s", "timeout") from None
        except VoiceLiveConnectionError as exc:
            cause, detail = classify(exc)
            raise VoiceLiveUnavailable(detail, cause, cause in PERMANENT_CAUSES) from None
        except ClientAuthenticationError as exc:  # the Entra credential could not get a token
            detail = f"no Microsoft Entra token ({_safe_reason(exc)})"
            raise VoiceLiveUnavailable(detail, "credential", True) from None
        except AzureError as exc:
            raise VoiceLiveUnavailable(_safe_reason(exc)) from None
        except OSError as exc:
            raise VoiceLiveUnavailable(type(exc).__name__) from None
        try:
            yield conn
        finally:
            await asyncio.shield(conn.close())

    async def close(self) -> None:
        if self._owns_credential and not isinstance(self.credential, AzureKeyCredential):
            await self.credential.close()


def _safe_reason(exc: BaseException) -> str:
    """The SDK's message names the failure (status, refused, ...) but never the key; keep it short anyway."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


async def receive_event(conn: VoiceLiveConnection) -> dict[str, Any] | None:
    """The next server event as a dict; None when the session has ended (closed or dropped)."""
    while True:
        try:
            raw = await conn.recv_bytes()
        except (ConnectionClosed, VoiceLiveConnectionError):
            return None
        if not raw:
            continue
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("Voice Live sent a message that is not JSON; skipped")
            continue
        if isinstance(event, dict):
            return event
        log.warning("Voice Live sent a JSON %s instead of an event object; skipped", type(event).__name__)


async def send_event(conn: VoiceLiveConnection, event: dict[str, Any]) -> None:
    """Send one client event (a plain wire dict) as a text frame; raises one of `SendError` when it cannot.

    The hot path: one `input_audio_buffer.append` per 20 ms per call. The SDK's `conn.send` copies the dict and
    serialises it with the stdlib `json` (~4.5 µs for an audio append; orjson takes ~0.2 µs). The message on the
    wire is the same JSON text, so this serialises with orjson and writes the frame on the SDK's own aiohttp
    WebSocket. That socket is the SDK's private `_connection` attribute: when it is not an aiohttp
    `ClientWebSocketResponse` (a future SDK), or orjson cannot serialise the event, `conn.send` is used instead.
    Failures are raised as the SDK raises them (its `ConnectionError`), so callers handle one error type.
    """
    ws = getattr(conn, "_connection", None)
    if isinstance(ws, aiohttp.ClientWebSocketResponse):
        try:
            payload = orjson.dumps(event)
        except orjson.JSONEncodeError:
            pass  # e.g. an SDK model inside the dict: the SDK knows how to serialise it
        else:
            try:
                await ws.send_frame(payload, aiohttp.WSMsgType.TEXT)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise VoiceLiveConnectionError(f"Failed to send event: {exc}") from exc
            return
    await conn.send(event)


def send_now(conn: VoiceLiveConnection, event: dict[str, Any]) -> bool:
    """Send one client event now, without suspending, when that cannot block; False (nothing sent) otherwise.

    The caller audio path: an append written straight from the caller's reader costs no task hand-off to a writer.
    The frame goes to the SDK's aiohttp WebSocket as `send_event` writes it (orjson, a text frame), through the
    writer's synchronous frame write (the part of `send_frame` that never awaits: it awaits only to drain a paused
    transport), and only while the transport keeps up: open, writing not paused, its write buffer at or below its
    low-water mark. False for everything else (a buffer filling up, a closing socket, compression, an SDK or aiohttp
    without those parts, an event orjson cannot serialise): the caller sends it through its outbox and writer
    (`send_event`), which waits for the socket and keeps the outbox's bounds. Use it only while that outbox is empty,
    so events keep their order.
    """
    ws = getattr(conn, "_connection", None)
    if not isinstance(ws, aiohttp.ClientWebSocketResponse) or ws.closed:
        return False
    writer = getattr(ws, "_writer", None)
    write = getattr(writer, "_write_websocket_frame", None)
    transport: Any = getattr(writer, "transport", None)
    protocol = getattr(writer, "protocol", None)
    if write is None or getattr(writer, "_closing", True) or getattr(writer, "compress", 1) \
            or getattr(protocol, "writing_paused", True):
        return False
    try:  # asyncio's and uvloop's transports alike (uvloop's are not `asyncio.WriteTransport` subclasses)
        if transport.is_closing() or transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]:
            return False
    except AttributeError:
        return False
    try:
        payload = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return False
    try:
        write(payload, aiohttp.WSMsgType.TEXT, 0)
    except (aiohttp.ClientError, ConnectionError, RuntimeError):
        return False  # the writer's path meets the same failure and ends the session
    return True


SendError = (VoiceLiveConnectionError, ConnectionClosed)
