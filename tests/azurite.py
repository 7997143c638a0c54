"""A real Azurite (the Azure Storage emulator) for the Blob Storage tests: found or installed by the project's own
script (`.ci/install-azurite`), started on a free loopback port with its data in a temporary directory, stoppable
and restartable on the same port and data (a storage outage)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def find_azurite() -> tuple[str | None, str]:
    """(the azurite-blob executable, or None and why)."""
    configured = os.environ.get("CALLBOT_AZURITE")
    if configured:
        return (configured, "") if os.access(configured, os.X_OK) else (None, f"CALLBOT_AZURITE={configured} is "
                                                                         "not executable")
    if shutil.which("node") is None:
        return None, "no node on this machine (Azurite is a Node.js program)"
    try:
        done = subprocess.run(["bash", str(ROOT / ".ci" / "install-azurite")], capture_output=True, text=True,
                              timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f".ci/install-azurite failed: {exc}"
    lines = done.stdout.strip().splitlines()
    if lines and os.access(lines[-1], os.X_OK):
        return lines[-1], ""
    return None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "azurite could not be installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """One Azurite blob service. `start`/`stop` may be repeated: the port and the data stay."""

    def __init__(self, executable: str, location: Path) -> None:
        self.executable = executable
        self.location = location
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.account_url};")

    def container_url(self, name: str) -> str:
        return f"{self.account_url}/{name}"

    async def start(self) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(  # noqa: ASYNC220 - started once per test, not on a hot path
            [self.executable, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
             str(self.location), "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        for _ in range(300):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"azurite exited with {self.process.returncode}: {err[-500:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise RuntimeError("azurite did not listen within 15 s")

    async def stop(self) -> None:
        """A graceful stop (Azurite saves its metadata), as an outage: requests to the port are refused."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGINT)
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)
