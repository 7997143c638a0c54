"""Call control over the async ACS Call Automation SDK: answer, reject, hang up, transfer, read a call's state.

One `CallControl` (one `CallAutomationClient`, one HTTP session) per process. Every SDK failure becomes a
`CallControlError` that carries the HTTP status and ACS error code but never a key, token or request body.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from azure.communication.callautomation import (
    AudioFormat,
    CallConnectionProperties,
    CommunicationIdentifier,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
    StreamingTransportType,
)
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError

from callbot.audio.formats import MEDIA_FORMATS

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from callbot.config import Settings

logger = logging.getLogger(__name__)

MediaFormat = Literal["pcm24k", "pcm16k"]
RejectReason = Literal["none", "busy", "forbidden"]
_AUDIO_FORMATS: Mapping[str, AudioFormat] = MappingProxyType(
    {name: AudioFormat(f.acs_name) for name, f in MEDIA_FORMATS.items() if f.acs_name is not None})
# Answering must not wait minutes on a struggling service: the caller hears ringing meanwhile.
DEFAULT_CLIENT_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 4,
    "connection_timeout": 10,
    "read_timeout": 30,
})


class ConfigError(ValueError):
    """ACS settings are missing or malformed."""


class CallControlError(RuntimeError):
    """An ACS Call Automation request failed.

    ``status`` is the HTTP status (None when no response arrived), ``code`` the ACS error code when given.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_connection_string(connection_string: str) -> tuple[str, str]:
    """``endpoint=...;accesskey=...`` -> (endpoint without trailing slash, access key).

    The scheme is kept as given (``http://`` for local stand-ins); a bare host gets ``https://``. Errors never
    include the key.
    """
    endpoint = key = None
    for part in connection_string.split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "endpoint":
            endpoint = value.strip()
        elif name == "accesskey":
            key = value.strip()
    if not endpoint or not key:
        raise ConfigError("ACS_CONNECTION_STRING must look like 'endpoint=https://<resource>/;accesskey=<key>'")
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("ACS_CONNECTION_STRING: the access key is not valid base64") from None
    return _normalise_endpoint(endpoint, "ACS_CONNECTION_STRING"), key


def _normalise_endpoint(endpoint: str, source: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    scheme, _, host = endpoint.partition("://")
    if scheme.lower() not in ("http", "https") or not host or "/" in host:
        raise ConfigError(f"{source}: the endpoint must be the http(s) URL of the ACS resource, no path")
    return endpoint


def _error_from(exc: AzureError, action: str) -> CallControlError:
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) if error is not None else None
        code_text = f", ACS error code {code}" if code else ""
        return CallControlError(f"ACS {action} failed: HTTP {status}{code_text}", status=status, code=code)
    return CallControlError(f"ACS {action} failed: {type(exc).__name__} (no response)")


def _is_gone(exc: HttpResponseError) -> bool:
    if exc.status_code == 404:
        return True
    error = getattr(exc, "error", None)
    message = str(getattr(error, "message", "") or "").lower()
    return "not found" in message and "call" in message


class CallControl:
    """Answer / reject / hang up calls through one async `CallAutomationClient`."""

    def __init__(self, client: CallAutomationClient, credential: AsyncTokenCredential | None = None) -> None:
        self._client = client
        self._credential = credential  # closed with us when we own it (Entra mode)

    @classmethod
    def from_settings(cls, settings: Settings, **client_options: Any) -> CallControl:
        """Build from ``ACS_CONNECTION_STRING`` (HMAC key), else ``ACS_ENDPOINT`` (`DefaultAzureCredential`).

        ``client_options`` go to the SDK client (azure-core options such as ``retry_total`` or ``transport``)
        and override `DEFAULT_CLIENT_OPTIONS`.
        """
        options = {**DEFAULT_CLIENT_OPTIONS, **client_options}
        if settings.acs_connection_string is not None:
            endpoint, key = parse_connection_string(settings.acs_connection_string.get_secret_value())
            logger.info("ACS call control: endpoint %s, access key auth", endpoint)
            return cls(CallAutomationClient(endpoint, AzureKeyCredential(key), **options))
        if settings.acs_endpoint:
            from azure.identity.aio import DefaultAzureCredential

            endpoint = _normalise_endpoint(settings.acs_endpoint, "ACS_ENDPOINT")
            credential = DefaultAzureCredential()
            logger.info("ACS call control: endpoint %s, Microsoft Entra auth", endpoint)
            return cls(CallAutomationClient(endpoint, credential, **options), credential)
        raise ConfigError(
            "ACS is not configured: set ACS_CONNECTION_STRING (endpoint=...;accesskey=...) or ACS_ENDPOINT"
        )

    async def answer(
        self,
        incoming_call_context: str,
        *,
        callback_url: str,
        transport_url: str,
        media_format: MediaFormat,
        operation_context: str | None = None,
    ) -> str:
        """Answer with bidirectional mixed-audio WebSocket media streaming; returns the call connection id."""
        streaming = MediaStreamingOptions(
            transport_url=transport_url,
            transport_type=StreamingTransportType.WEBSOCKET,
            content_type=MediaStreamingContentType.AUDIO,
            audio_channel_type=MediaStreamingAudioChannelType.MIXED,
            start_media_streaming=True,
            enable_bidirectional=True,
            audio_format=_AUDIO_FORMATS[media_format],
            enable_dtmf_tones=True,
        )
        try:
            result = await self._client.answer_call(
                incoming_call_context,
                callback_url,
                media_streaming=streaming,
                operation_context=operation_context,
            )
        except AzureError as exc:
            raise _error_from(exc, "answer") from None
        if not result.call_connection_id:
            raise CallControlError("ACS answer returned no callConnectionId")
        logger.info("answered: call connection %s", result.call_connection_id)
        return result.call_connection_id

    async def reject(self, incoming_call_context: str, reason: RejectReason = "busy") -> None:
        """Reject an incoming call (``busy``: the caller hears a busy signal)."""
        try:
            await self._client.reject_call(incoming_call_context, call_reject_reason=reason)
        except AzureError as exc:
            raise _error_from(exc, "reject") from None
        logger.info("rejected an incoming call (%s)", reason)

    async def reject_or_log(self, incoming_call_context: str) -> None:
        """`reject` as busy, in the background: a failure is one ERROR line (the call rings out at ACS)."""
        try:
            await self.reject(incoming_call_context, "busy")
        except CallControlError as exc:
            logger.error("rejecting a call failed: %s", exc)

    async def hang_up(self, call_connection_id: str, *, for_everyone: bool = True) -> bool:
        """End the call (``for_everyone``: terminate, else the bot leaves); False if it had already ended."""
        connection = self._client.get_call_connection(call_connection_id)
        try:
            await connection.hang_up(is_for_everyone=for_everyone)
        except HttpResponseError as exc:
            if _is_gone(exc):
                logger.info("hang up: call connection %s had already ended (HTTP %s)",
                            call_connection_id, exc.status_code)
                return False
            raise _error_from(exc, "hang up") from None
        except AzureError as exc:
            raise _error_from(exc, "hang up") from None
        logger.info("hung up call connection %s", call_connection_id)
        return True

    async def transfer(self, call_connection_id: str, target: CommunicationIdentifier, *, operation_context: str,
                       source_caller_id: PhoneNumberIdentifier | None = None) -> None:
        """Ask ACS to transfer the call to ``target`` (a blind transfer: ACS rings the target, and once it accepts
        removes this application's leg). Returns when ACS has taken the request (HTTP 202); the outcome arrives
        as a ``CallTransferAccepted`` / ``CallTransferFailed`` callback carrying ``operation_context``.
        ``source_caller_id``: the number the target sees calling (PSTN targets only; ACS ignores it otherwise)."""
        connection = self._client.get_call_connection(call_connection_id)
        try:
            await connection.transfer_call_to_participant(
                target, operation_context=operation_context, source_caller_id_number=source_caller_id)
        except AzureError as exc:
            raise _error_from(exc, "transfer") from None
        logger.info("transfer requested: call connection %s, %s", call_connection_id, target.kind.value)

    async def _properties(self, call_connection_id: str) -> CallConnectionProperties | None:
        """The call connection's properties, or None when the call is gone."""
        connection = self._client.get_call_connection(call_connection_id)
        try:
            return await connection.get_call_properties()
        except HttpResponseError as exc:
            if _is_gone(exc):
                return None
            raise _error_from(exc, "get call") from None
        except AzureError as exc:
            raise _error_from(exc, "get call") from None

    async def get_state(self, call_connection_id: str) -> str | None:
        """The call connection state (``connecting``, ``connected``, ...), or None when the call is gone."""
        properties = await self._properties(call_connection_id)
        state = properties.call_connection_state if properties is not None else None
        return str(state.value if hasattr(state, "value") else state) if state is not None else None

    async def media_streaming_active(self, call_connection_id: str) -> bool | None:
        """Whether ACS is streaming this call's media somewhere (to any replica); None when the call is gone."""
        properties = await self._properties(call_connection_id)
        if properties is None:
            return None
        subscription = properties.media_streaming_subscription
        state = getattr(subscription, "state", None) if subscription is not None else None
        return str(getattr(state, "value", state)).lower() == "active"

    async def close(self) -> None:
        """Close the SDK client's HTTP session and, in Entra mode, the credential."""
        try:
            await self._client.close()
        finally:
            if self._credential is not None:
                await self._credential.close()

    async def __aenter__(self) -> CallControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
