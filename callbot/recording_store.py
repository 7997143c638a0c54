"""Where recordings go: a local file (`CALLBOT_RECORDINGS_DIR`) or an Azure Blob Storage container
(`CALLBOT_RECORDINGS_URL`), behind one small interface the recorder writes batches through.

A blob recording is an **append blob**, one append per batch, each appended at the position the recorder knows (the
`appendpos` condition: a retried append whose first try did land is recognised, never written twice). Append blobs
were measured against staged blocks (`python -m callbot.benchmark.blob_sink`, figures in the README): the same client
CPU and the same number of requests, but what was appended is readable at once and survives the replica dying
mid-call, where staged blocks are invisible until the final commit. A batch every 2 s costs about 0.55 ms of client
CPU per call-second (every 0.5 s: 1.8 ms), a tenth of what bridging the call costs.

Credentials: `AZURE_STORAGE_CONNECTION_STRING` when set (Azurite, or an account with shared keys), else the
process's `DefaultAzureCredential` (the Container App's managed identity, with *Storage Blob Data Contributor*).
Nothing here puts a key, a token or a connection string into a log line, an error message or a recording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from callbot.config import Settings

log = logging.getLogger(__name__)

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
APPEND_LIMIT = 4 * 1024 * 1024  # the largest append block every service version (and Azurite) takes
BLOB_FLUSH_INTERVAL_S = 2.0  # one request per call per 2 s (the README's measurement)
BLOB_OUTAGE_S = 30.0  # storage down for longer than this: the recording stops (what was appended stays)
REQUEST_TIMEOUT_S = 15.0
CONNECTION_TIMEOUT_S, READ_TIMEOUT_S = 3, 10


class SinkError(OSError):
    """Storage failed; the message is safe for logs (no URL query, no credential)."""


class RecordingSink(Protocol):
    """One recording's destination. `write` appends a batch of whole lines (raises `SinkError`); `close` never
    raises. `outage_s`: how long the recorder keeps buffering and retrying after a failed write (0: give up)."""

    location: str
    flush_interval_s: float
    outage_s: float

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


# -- files --------------------------------------------------------------------------------------------------------

class FileSink:
    """A local file (mode 0600), written in a worker thread so the event loop never waits for the disk."""

    flush_interval_s = 0.25
    outage_s = 0.0  # a full disk does not come back by itself mid-call

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._fh: BinaryIO | None = fh
        self._lock = threading.Lock()  # the final write and close may race a cancelled writer's thread

    @classmethod
    def create(cls, path: Path) -> FileSink:
        """Raises OSError."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return cls(os.fdopen(fd, "wb"), path)

    async def write(self, data: bytes) -> None:
        await asyncio.shield(asyncio.to_thread(self._write, data))

    async def close(self) -> None:
        await asyncio.shield(asyncio.to_thread(self._close))

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._fh is None:
                raise SinkError("the file is closed")
            try:
                self._fh.write(data)
                self._fh.flush()
            except OSError as exc:
                self._close_locked()
                raise SinkError(f"writing {self.path.name} failed ({exc.strerror or type(exc).__name__})") from None

    def _close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass


# -- Azure Blob Storage -------------------------------------------------------------------------------------------

def is_blob_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("https://", "http://"))


def container_url_problem(url: str) -> str | None:
    """Why `url` is not a usable container URL (None: it is). Used by the settings check."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return "must be an https:// container URL (https://<account>.blob.core.windows.net/<container>)"
    if parts.query or parts.fragment:
        return "must not carry a query (SAS tokens are not used: managed identity or a connection string)"
    if "@" in parts.netloc:
        return "must not carry credentials"
    if not parts.path.strip("/"):
        return "names no container (https://<account>.blob.core.windows.net/<container>)"
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "must use https outside local development (http only for a local Azurite)"
    return None


def _split(url: str) -> tuple[str, str]:
    """`https://acct.blob.core.windows.net/c` -> (account URL, path after it); Azurite's path-style
    `http://127.0.0.1:10000/devstoreaccount1/c` keeps the account in the account URL."""
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    path_style = ".blob." not in f".{parts.hostname or ''}"  # Azure's hosts name the account; Azurite's path does
    keep = 1 if path_style and segments else 0
    account = f"{parts.scheme}://{parts.netloc}" + "".join("/" + quote(s) for s in segments[:keep])
    return account, "/".join(segments[keep:])


def _storage_error(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {code}' if code else ''}"


def _service_client(account_url: str, connection_string: str | None) -> tuple[Any, Any]:
    """The SDK's async service client for `account_url`, and the credential to close with it (or None)."""
    from azure.storage.blob.aio import BlobServiceClient, LinearRetry

    # short timeouts and one SDK retry: the recorder retries on its own, and must not sit 15 s in a backoff
    options: dict[str, Any] = {"connection_timeout": CONNECTION_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                               "retry_policy": LinearRetry(backoff=1, retry_total=1, random_jitter_range=0)}
    if connection_string:
        service = BlobServiceClient.from_connection_string(connection_string, **options)
        if service.url.rstrip("/") != account_url.rstrip("/"):
            raise SinkError(f"{account_url} is not the account of {CONNECTION_STRING_ENV} ({service.url})")
        return service, None
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return BlobServiceClient(account_url, credential=credential, **options), credential


class BlobStore:
    """The recordings container of this process (one HTTP session and credential for every call's blob).
    Created at start-up, closed at shutdown (`close`)."""

    def __init__(self, container_url: str, connection_string: str | None = None) -> None:
        self.url = container_url.rstrip("/")
        account, container = _split(self.url)
        if not container or "/" in container:
            raise SinkError(f"{self.url} is not a container URL")
        self._service, self._credential = _service_client(account, connection_string)
        self.container = self._service.get_container_client(container)
        self._created = False

    async def ensure_container(self) -> None:
        """Create the container when missing (infra creates it; Azurite starts empty). Raises SinkError."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await self.container.create_container()
        except ResourceExistsError:
            pass
        except (AzureError, OSError, TimeoutError) as exc:
            raise SinkError(f"container {self.url}: {_storage_error(exc)}") from None
        self._created = True

    def sink(self, name: str) -> BlobSink:
        return BlobSink(self, name)

    async def close(self) -> None:
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()


class BlobSink:
    """One call's append blob, created by the first write (the recorder's writer task, off the audio path)."""

    flush_interval_s = BLOB_FLUSH_INTERVAL_S
    outage_s = BLOB_OUTAGE_S

    def __init__(self, store: BlobStore, name: str) -> None:
        self._store = store
        self._blob = store.container.get_blob_client(name)
        self.location = f"{store.url}/{quote(name)}"
        self.length = -1  # bytes stored; -1: the blob is not created yet

    async def write(self, data: bytes) -> None:
        from azure.core.exceptions import AzureError

        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if self.length < 0:
                    await self._create()
                for start in range(0, len(data), APPEND_LIMIT):
                    await self._append(data[start:start + APPEND_LIMIT])
        except (AzureError, OSError, TimeoutError) as exc:
            raise SinkError(f"appending to {self.location} failed ({_storage_error(exc)})") from None

    async def _create(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type="application/x-ndjson")
        try:
            await self._blob.create_append_blob(content_settings=settings)
        except ResourceNotFoundError:  # no container yet (a fresh Azurite): create it once, then the blob
            if self._store._created:
                raise
            await self._store.ensure_container()
            await self._blob.create_append_blob(content_settings=settings)
        self.length = 0

    async def _append(self, piece: bytes) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            await self._blob.append_block(piece, appendpos_condition=self.length)
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "AppendPositionConditionNotMet":
                raise
            # an earlier try of this append landed although its answer was lost: the blob says so by its size
            size = (await self._blob.get_blob_properties()).size
            if size != self.length + len(piece):
                raise
        self.length += len(piece)

    async def close(self) -> None:
        """Nothing to commit: every append is already stored."""


async def open_recordings(settings: Settings) -> Path | BlobStore | None:
    """Where this process records calls: the directory, the container (checked, created when missing), or None.
    A container that cannot be reached at start-up is logged, not fatal: each call's recording tries again."""
    if settings.callbot_recordings_url is None:
        return settings.callbot_recordings_dir
    secret = settings.azure_storage_connection_string
    store = BlobStore(settings.callbot_recordings_url, secret.get_secret_value() if secret is not None else None)
    try:
        await store.ensure_container()
    except SinkError as exc:
        log.error("recordings: %s; calls are still taken, each recording tries again", exc)
    else:
        log.info("recordings: to %s (%s)", store.url, "connection string" if secret is not None else "identity")
    return store


# -- reading ------------------------------------------------------------------------------------------------------

async def download(url: str, connection_string: str | None = None) -> bytes:
    """A recording blob's bytes (`callbot replay` / `export-wav` given a URL). Raises SinkError."""
    from azure.core.exceptions import AzureError

    account, path = _split(url)
    container, _, name = path.partition("/")
    if not container or not name:
        raise SinkError(f"{url.split('?')[0]} names no blob (https://<account>.blob.core.windows.net/<container>/<name>)")
    service, credential = _service_client(account, connection_string)
    try:
        async with asyncio.timeout(60):
            stream = await service.get_blob_client(container, name).download_blob()
            data: bytes = await stream.readall()
            return data
    except (AzureError, OSError, TimeoutError) as exc:
        raise SinkError(f"reading {url.split('?')[0]} failed ({_storage_error(exc)})") from None
    finally:
        await service.close()
        if credential is not None:
            await credential.close()


def read_location(location: str | Path) -> bytes:
    """A recording's bytes from a file path or a blob URL (blocking: for the command line)."""
    if is_blob_url(location):
        return asyncio.run(download(str(location), os.environ.get(CONNECTION_STRING_ENV) or None))
    return Path(location).read_bytes()
