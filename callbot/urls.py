"""The per-call URLs callbot gives ACS when it answers: the callback URL and the media transport URL.

Both carry a per-call token (`callbot.security.CallTokenSigner`) with the lifetime below. They are built here, from
`CALLBOT_PUBLIC_URL`, and served by `callbot.app` (`/api/callbacks/{call_id}`, `/ws/media/{call_id}`).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

CALLBACK_TOKEN_TTL_S = 24 * 3600.0  # checked on every callback, for as long as the call lasts
MEDIA_TOKEN_TTL_S = 120.0  # checked once, at the media socket's handshake


def public_urls(public_url: str, call_id: str, callback_token: str, media_token: str) -> tuple[str, str]:
    """The callback URL and the media transport URL (`wss://`, or `ws://` for an `http://` public URL)."""
    public_url = public_url.rstrip("/")
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    base_path = parts.path
    callback_url = f"{public_url}/api/callbacks/{call_id}?token={quote(callback_token, safe='')}"
    transport_url = f"{scheme}://{parts.netloc}{base_path}/ws/media/{call_id}?token={quote(media_token, safe='')}"
    return callback_url, transport_url
