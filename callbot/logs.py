"""Logging for every `callbot` command: the one log format, and the masking of credentials in server logs."""

from __future__ import annotations

import logging
import re
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # The SDKs log request details (incl. URLs) at INFO; keep them at WARNING unless debugging.
    if level != "DEBUG":
        for noisy in ("azure", "aiohttp.access", "uvicorn.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class RedactSecrets(logging.Filter):
    """Masks credentials in the server's log records.

    uvicorn logs request and WebSocket paths with their query string (`"WebSocket /ws/media/...?token=..."
    [accepted]` at INFO, the access log when enabled), and at DEBUG the WebSocket library logs every handshake
    header (`< authorization: Bearer ...`). Query values of `token`/`secret` and authorization values are masked.
    """

    _QUERY = re.compile(r"([?&](?:token|secret|sig|code)=)[^&\s\"']+", re.IGNORECASE)
    _CREDENTIAL = re.compile(r"(?i)^\s*(bearer|basic|hmac-sha256)\s")
    _HEADERS = frozenset({"authorization", "api-key", "cookie", "set-cookie", "x-api-key"})

    def _clean(self, value: object) -> object:
        if not isinstance(value, str):
            return value
        if self._CREDENTIAL.match(value):
            return "<redacted>"
        return self._QUERY.sub(r"\1<redacted>", value)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self._QUERY.sub(r"\1<redacted>", record.msg)
        if isinstance(record.args, tuple) and record.args:
            args = [self._clean(a) for a in record.args]
            if len(args) == 2 and isinstance(args[0], str) and args[0].strip().lower() in self._HEADERS:
                args[1] = "<redacted>"
            record.args = tuple(args)
        return True


def install_log_redaction() -> None:
    """Adds `RedactSecrets` to the loggers of the server and the WebSocket library (once each)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
