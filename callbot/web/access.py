"""Who may place a web call: the access key, exchanged for a short-lived signed session token, with key attempts
rate-limited per client address. Per-app state (the limiter) lives in the app's services, never in the module."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pydantic import SecretStr

from callbot.security import check_webhook_secret

SESSION_TOKEN_TTL_S = 60.0  # the page opens its socket right away; a leaked token is useless a minute later
ATTEMPTS_PER_MINUTE = 5  # per client address
ATTEMPT_BURST = 5
MAX_TRACKED_CLIENTS = 10000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class KeyAttempts:
    """A token bucket per client address for key checks: a wrong key costs a token, so does a right one (cheap for
    a person, useless for guessing). Bounded memory: the oldest addresses are forgotten first."""

    def __init__(self, per_minute: float = ATTEMPTS_PER_MINUTE, burst: float = ATTEMPT_BURST) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clients: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """0 when an attempt is allowed now (and counted), else the seconds until the next one is."""
        bucket = self.clients.pop(client, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self.clients[client] = bucket
        while len(self.clients) > MAX_TRACKED_CLIENTS:
            self.clients.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def key_ok(expected: SecretStr | None, provided: object) -> bool:
    """The key matches (constant time); with no key configured (local development mode) any request is let in."""
    if expected is None:
        return True
    return isinstance(provided, str) and check_webhook_secret(expected, provided)
