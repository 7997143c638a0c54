"""The local development profile: what ``callbot serve`` (offline, no ACS configured) and ``callbot dial`` share.

Security stays on in local mode: callbot verifies ACS-signed JWTs against a JWKS, per-call URL tokens and the
webhook secret. With no ACS of its own, ``callbot serve`` trusts the phone simulator instead, and both commands
read the same material from a JSON file, ``./.callbot-local/profile.json`` (directory: ``CALLBOT_LOCAL_DIR``),
created with mode 0600 on first use by either command:

* ``acs_access_key``: the HMAC key of the simulator's ACS REST stand-in (callbot's ``ACS_CONNECTION_STRING``),
* ``acs_identity_pem``: the RSA key the simulator signs ACS tokens with (its JWKS is ``CALLBOT_ACS_JWKS_URL``),
* ``resource_id`` (``ACS_RESOURCE_ID``, the token audience), ``webhook_secret``, ``signing_key``,
* ``host``, ``acs_port`` (8765) and ``jwks_port`` (8766): where ``callbot dial`` serves ACS REST and the JWKS,
* ``twilio_account_sid``, ``twilio_auth_token`` and ``twilio_port`` (8767): the Twilio stand-in of ``callbot dial
  --twilio`` (callbot's ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``TWILIO_API_BASE_URL``); a profile written
  before Twilio gets credentials derived from its signing key, so every command reading it agrees without a rewrite.

Keep the directory out of version control (``.callbot-local/`` in ``.gitignore``). All functions here block
(file I/O, RSA key generation): call them before the event loop starts, or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import stat
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from callbot.config import Settings
from callbot.local.acs.identity import JWKS_PATH, LocalAcsIdentity
from callbot.local.twilio.messages import derived_credentials, sid

log = logging.getLogger(__name__)

DIR_ENV = "CALLBOT_LOCAL_DIR"
DEFAULT_DIR = ".callbot-local"
FILE_NAME = "profile.json"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_ACS_PORT = 8765
DEFAULT_JWKS_PORT = 8766
DEFAULT_TWILIO_PORT = 8767
VERSION = 1


class ProfileError(RuntimeError):
    """The profile file exists but cannot be used."""


@dataclass(frozen=True)
class LocalProfile:
    acs_access_key: str  # base64, as in a connection string
    acs_identity_pem: str
    resource_id: str
    webhook_secret: str
    signing_key: str
    host: str = DEFAULT_HOST
    acs_port: int = DEFAULT_ACS_PORT
    jwks_port: int = DEFAULT_JWKS_PORT
    twilio_account_sid: str = ""  # empty: derived from the signing key (a profile from before Twilio)
    twilio_auth_token: str = ""
    twilio_port: int = DEFAULT_TWILIO_PORT
    path: Path | None = None

    def __post_init__(self) -> None:
        if not (self.twilio_account_sid and self.twilio_auth_token):
            account, token = derived_credentials(self.signing_key)
            object.__setattr__(self, "twilio_account_sid", account)
            object.__setattr__(self, "twilio_auth_token", token)

    @property
    def twilio_url(self) -> str:
        return f"http://{self.host}:{self.twilio_port}"

    @property
    def acs_url(self) -> str:
        return f"http://{self.host}:{self.acs_port}"

    @property
    def jwks_url(self) -> str:
        return f"http://{self.host}:{self.jwks_port}{JWKS_PATH}"

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.acs_url}/;accesskey={self.acs_access_key}"

    def identity(self) -> LocalAcsIdentity:
        key = serialization.load_pem_private_key(self.acs_identity_pem.encode("ascii"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ProfileError("acs_identity_pem is not an RSA private key")
        return LocalAcsIdentity(private_key=key)

    @classmethod
    def generate(cls) -> LocalProfile:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")  # fmt: skip
        return cls(
            acs_access_key=base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            acs_identity_pem=pem,
            resource_id=str(uuid.uuid4()),
            webhook_secret=secrets.token_urlsafe(24),
            signing_key=secrets.token_urlsafe(32),
            twilio_account_sid=sid("AC"),
            twilio_auth_token=secrets.token_hex(16),
        )

    def to_json(self) -> str:
        data = {"version": VERSION, **asdict(self)}
        data.pop("path")
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path | None = None) -> LocalProfile:
        try:
            data = json.loads(text)
            fields = {k: data[k] for k in ("acs_access_key", "acs_identity_pem", "resource_id", "webhook_secret",
                                           "signing_key")}  # fmt: skip
            extra = {k: data[k] for k in ("host", "acs_port", "jwks_port", "twilio_account_sid", "twilio_auth_token",
                                          "twilio_port") if k in data}  # fmt: skip
            profile = cls(**fields, **extra, path=path)
            base64.b64decode(profile.acs_access_key, validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProfileError(f"{path or 'profile'}: not a callbot local profile ({type(exc).__name__}); "
                               "delete it to have a new one created") from None  # fmt: skip
        return profile


def profile_path(directory: str | Path | None = None) -> Path:
    base = Path(directory) if directory is not None else Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)
    return base / FILE_NAME


def load_profile(directory: str | Path | None = None, *, create: bool = True) -> LocalProfile:
    """The profile in ``directory`` (default: ``$CALLBOT_LOCAL_DIR`` or ``./.callbot-local``), created if missing.

    Creation is atomic (written to a private temporary file, then hard-linked into place), so two commands
    starting at once end up with the same profile.
    """
    path = profile_path(directory)
    if not path.exists():
        if not create:
            raise ProfileError(f"no local profile at {path}")
        _create(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); it holds local secrets: chmod 600 it", path, mode)
    return LocalProfile.from_json(path.read_text(encoding="utf-8"), path)


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(LocalProfile.generate().to_json())
        with contextlib.suppress(FileExistsError):  # somebody else won the race: theirs is used
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created the local development profile %s", path)


def serve_overrides(settings: Settings, profile: LocalProfile, host: str, port: int) -> dict[str, Any]:
    """Settings for ``callbot serve`` in local development mode: the profile's values for every one of
    ACS_CONNECTION_STRING, ACS_RESOURCE_ID, CALLBOT_ACS_JWKS_URL, CALLBOT_WEBHOOK_SECRET, CALLBOT_SIGNING_KEY
    and CALLBOT_PUBLIC_URL (``http://host:port``) not set explicitly (environment or ``.env``), and the OpenAPI
    docs on (CALLBOT_API_DOCS) unless set. Twilio as a group: the profile's TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
    and TWILIO_API_BASE_URL (the stand-in's) when neither the sid nor the token is set."""
    public_host = DEFAULT_HOST if host in ("0.0.0.0", "::", "") else host
    public_host = f"[{public_host}]" if ":" in public_host else public_host
    wanted: dict[str, Any] = {
        "acs_connection_string": profile.connection_string,
        "acs_resource_id": profile.resource_id,
        "callbot_acs_jwks_url": profile.jwks_url,
        "callbot_webhook_secret": profile.webhook_secret,
        "callbot_signing_key": profile.signing_key,
        "callbot_public_url": f"http://{public_host}:{port}",
        "callbot_api_docs": "on",
    }
    explicit = settings.model_fields_set
    overrides = {name: value for name, value in wanted.items()
                 if name not in explicit or getattr(settings, name) is None}  # fmt: skip
    twilio = {"twilio_account_sid": profile.twilio_account_sid, "twilio_auth_token": profile.twilio_auth_token,
              "twilio_api_base_url": profile.twilio_url}
    if all(name in Settings.model_fields for name in twilio) and all(
            getattr(settings, name) is None for name in ("twilio_account_sid", "twilio_auth_token")):  # fmt: skip
        overrides.update(twilio)
    return overrides


def needs_local_acs(settings: Settings) -> bool:
    """No ACS configured at all: ``callbot serve`` runs in local development mode."""
    return settings.acs_connection_string is None and settings.acs_endpoint is None


def local_mode_notice(profile: LocalProfile) -> str:
    """The warning ``callbot serve`` logs in local development mode (no secrets in it)."""
    return (f"local development mode: no ACS_CONNECTION_STRING or ACS_ENDPOINT, so callbot trusts the local phone "
            f"simulator ('callbot dial'): ACS REST at {profile.acs_url}, signing keys at {profile.jwks_url}, "
            f"Twilio REST at {profile.twilio_url} unless TWILIO_* are set (profile {profile.path}). Do not expose "
            "this instance to a network.")  # fmt: skip
