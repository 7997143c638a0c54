"""The orchestrator of `callbot bench`: starts the processes, samples the server, collects and joins the results.

One run: the synthetic model process, the ACS side process, then `python -m callbot serve` configured against both
(production settings: uvicorn as `callbot serve` runs it, INFO logging, signed tokens), all on 127.0.0.1. The
server's CPU (user + system, all threads) is read from its own accounting (psutil) at the start and end of the
measurement window; its RSS idle (before the first call) and at N calls (the maximum sampled in the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from callbot.benchmark import common as c
from callbot.benchmark import report
from callbot.server import NotReady, wait_until_ready

Progress = Callable[[str], None]
SERVER_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BenchOptions:
    calls: int = 50
    seconds: float = 10.0
    barge_in_every: float = 3.0
    answer_s: float = c.RESPONSE_S  # without barge-in: each bot answer's length ...
    pause_s: float = c.PAUSE_S  # ... and the silence after it (the talk profile)
    warmup: float = 3.0
    grace: float = 2.0
    transport: str = "acs"  # or "twilio" (Media Streams, mu-law 8 kHz, CALLBOT_TWILIO_MODEL_AUDIO=g711_ulaw)
    telemetry: bool = False  # the server exports traces and metrics over OTLP/HTTP (to a collector that drops them)
    append_ms: int = 20  # CALLBOT_MODEL_APPEND_MS: caller audio to the model in 20 or 40 ms appends
    chunk_ms: int = 20  # CALLBOT_PLAYBACK_CHUNK_MS: bot audio in AudioData messages of this many ms
    server_command: tuple[str, ...] = field(default=(sys.executable, "-m", "callbot", "serve"))
    keep_logs: bool = False


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        raise c.BenchError("callbot bench needs psutil (pip install psutil)") from None
    return psutil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def _read(path: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(Path(path).read_bytes())
    return data


def _count_log_levels(path: Path, upto: int) -> tuple[int, int, list[str]]:
    with path.open("rb") as fh:
        text = fh.read(upto).decode("utf-8", "replace")
    errors = [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]
    warnings = sum(1 for line in text.splitlines() if " WARNING " in line)
    return len(errors), warnings, errors[:5]


class Child:
    """A load process: config as argv, events as JSON lines on stdout, commands as JSON lines on stdin."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, module: str, config: dict[str, Any], log_path: Path) -> Child:
        log = await asyncio.to_thread(_open_log, log_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, orjson.dumps(config).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        return cls(module.rsplit(".", 1)[-1], proc, log)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not one of ours (a library writing to stdout)
            if isinstance(event, dict):
                await self.events.put(event)
        await self.events.put({"type": "exited"})

    async def expect(self, *types: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                event = await self.events.get()
        except TimeoutError:
            raise c.BenchError(f"the {self.name} process sent nothing for {timeout:.0f} s") from None
        if event["type"] in types:
            return event
        if event["type"] == "failed":
            raise c.BenchError(f"the {self.name} process failed: {event.get('error')}")
        raise c.BenchError(f"the {self.name} process sent {event['type']!r}, expected {' or '.join(types)}")

    def send(self, command: dict[str, Any]) -> None:
        if self.proc.stdin is not None and self.proc.returncode is None:
            self.proc.stdin.write(orjson.dumps(command) + b"\n")

    async def stop(self) -> None:
        self.send({"cmd": "exit"})
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        self.log.close()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    try:
        await wait_until_ready(url, proc, SERVER_READY_TIMEOUT_S)
    except NotReady as exc:
        raise c.BenchError(str(exc)) from None


def _server_env(opts: BenchOptions, port: int, phone_env: dict[str, str], model_url: str, secrets_: dict[str, str],
                collector: str | None = None) -> dict[str, str]:
    """The server's environment: this one without any callbot, Azure or telemetry setting, then the run's own.
    `collector`: an OTLP/HTTP endpoint: telemetry on (else off whatever this environment says)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "ACS_", "CALLBOT_", "OTEL_", "APPLICATIONINSIGHTS_")) and k != "LOG_LEVEL"}
    if collector is not None:
        env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_METRIC_EXPORT_INTERVAL": "10000"})
    env.update(phone_env)
    env.update({
        "AZURE_VOICELIVE_ENDPOINT": model_url, "AZURE_VOICELIVE_API_KEY": secrets_["api_key"],
        "CALLBOT_WEBHOOK_SECRET": secrets_["webhook"], "CALLBOT_SIGNING_KEY": secrets_["signing"],
        "CALLBOT_PUBLIC_URL": f"http://127.0.0.1:{port}", "CALLBOT_GREETING": "",
        "CALLBOT_MAX_CONCURRENT_CALLS": str(opts.calls + 10), "CALLBOT_DRAIN_SECONDS": "0", "LOG_LEVEL": "INFO",
        "CALLBOT_TWILIO_MODEL_AUDIO": "g711_ulaw",  # the tags survive only untranscoded audio
        "CALLBOT_MODEL_APPEND_MS": str(opts.append_ms), "CALLBOT_PLAYBACK_CHUNK_MS": str(opts.chunk_ms),
    })
    return env


@dataclass
class _Sampler:
    """Samples the server's RSS while the window is open."""

    process: Any
    rss_max: int = 0

    async def run(self) -> None:
        while True:
            self.rss_max = max(self.rss_max, self.process.memory_info().rss)
            await asyncio.sleep(0.5)


def _pin(psutil: Any, server: Any, load: list[Any]) -> str:
    """With two or more CPUs, the server gets the first to itself and the load generator the rest, so the two never
    compete for a core and the server's CPU cost is less at the mercy of scheduling (runs vary less)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return "not pinned (no CPU affinity here)"
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    try:
        server.cpu_affinity(cpus[:1])
        for process in load:
            process.cpu_affinity(cpus[1:])
    except (OSError, AttributeError, psutil.Error) as exc:
        return f"not pinned ({type(exc).__name__})"
    return f"server on CPU {cpus[0]}, load generator on CPU {','.join(map(str, cpus[1:]))}"


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy(psutil: Any) -> float:
    """CPU seconds the whole machine has been busy (all cores): to see what else ran during the window."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def run_once(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    psutil = _psutil()
    c.raise_file_limit()
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="callbot-bench-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    keys = {"api_key": secrets.token_urlsafe(24), "webhook": secrets.token_urlsafe(24),
            "signing": secrets.token_urlsafe(32)}
    children: list[Child] = []
    server: asyncio.subprocess.Process | None = None
    server_log: IO[bytes] | None = None
    failed = True
    collector, stop_collector = (await _null_collector()) if opts.telemetry else (None, None)
    try:
        model = await Child.start("callbot.benchmark.model", {
            "api_key": keys["api_key"], "barge_in_every": opts.barge_in_every, "answer_s": opts.answer_s,
            "pause_s": opts.pause_s,
            "audio": "g711_ulaw" if opts.transport == "twilio" else "pcm16",
            "result_path": str(tmp / "model.json")}, tmp / "model.log")
        children.append(model)
        model_url = (await model.expect("ready", timeout=20))["url"]
        acs = await Child.start(f"callbot.benchmark.{opts.transport}", {
            "url": url, "secret": keys["webhook"], "calls": opts.calls, "seconds": opts.seconds,
            "warmup": opts.warmup, "grace": opts.grace, "result_path": str(tmp / "acs.json")}, tmp / "acs.log")
        children.append(acs)
        phone_env = (await acs.expect("ready", timeout=20))["env"]
        server_log = await asyncio.to_thread(_open_log, tmp / "server.log")
        server = await asyncio.create_subprocess_exec(
            *opts.server_command, "--port", str(port), cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=server_log,
            env=_server_env(opts, port, phone_env, model_url, keys, collector))
        await _wait_ready(url, server)
        srv = psutil.Process(server.pid)
        await asyncio.sleep(0.5)
        rss_idle = srv.memory_info().rss
        acs.send({"cmd": "go"})
        progress(f"placing {opts.calls} calls")
        while (event := await acs.expect("progress", "window", timeout=60))["type"] == "progress":
            progress(f"placing calls: {event['connected']}/{opts.calls} connected, {event['failed']} failed")
        t0 = event["t0"]
        procs = {"server": srv, "acs": psutil.Process(acs.proc.pid), "model": psutil.Process(model.proc.pid)}
        pinning = _pin(psutil, srv, [procs["acs"], procs["model"]])
        cpu0 = {name: _cpu(p) for name, p in procs.items()}
        sys0 = srv.cpu_times().system
        busy0 = _machine_busy(psutil)
        wall0 = time.monotonic()
        sampler = _Sampler(srv)
        sampling = asyncio.create_task(sampler.run())
        ticker = asyncio.create_task(_tick(progress, opts.seconds))
        try:
            t1 = (await acs.expect("window_end", timeout=opts.seconds + 30))["t1"]
        finally:
            ticker.cancel()
            sampling.cancel()
        wall = time.monotonic() - wall0
        cpu = {name: _cpu(p) - cpu0[name] for name, p in procs.items()}
        server_sys = srv.cpu_times().system - sys0
        other = max(0.0, _machine_busy(psutil) - busy0 - sum(cpu.values()))
        log_size = (tmp / "server.log").stat().st_size
        progress("collecting results")
        acs_result = await asyncio.to_thread(_read, (await acs.expect("result", timeout=opts.grace + 60))["path"])
        if not acs_result["placed"]:
            raise c.BenchError("no call could be placed: " + "; ".join(acs_result["errors"][:3]))
        model.send({"cmd": "report", "t0": t0, "t1": t1})
        model_result = await asyncio.to_thread(_read, (await model.expect("result", timeout=60))["path"])
        log_errors, log_warnings, error_lines = await asyncio.to_thread(
            _count_log_levels, tmp / "server.log", log_size)
        proc_stats = {"wall_s": wall, "server_cpu_s": cpu["server"], "server_sys_s": server_sys,
                      "acs_cpu_s": cpu["acs"], "model_cpu_s": cpu["model"], "other_cpu_s": other,
                      "rss_idle": rss_idle, "rss_calls": sampler.rss_max, "pinning": pinning,
                      "server_log_errors": log_errors, "server_log_warnings": log_warnings}
        options = {k: v for k, v in asdict(opts).items() if k not in ("server_command", "keep_logs")}
        result = report.build(options, acs_result, model_result, proc_stats)
        result["errors"]["details"].extend(error_lines)
        failed = result["errors"]["count"] > 0
        return result
    finally:
        for child in reversed(children):
            await child.stop()
        if server is not None:
            await _stop_server(server)
        if stop_collector is not None:
            await stop_collector()
        if server_log is not None:
            server_log.close()
        if opts.keep_logs or failed:
            progress(f"logs kept in {tmp}")
        else:
            await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _null_collector() -> tuple[str, Callable[[], Awaitable[None]]]:
    """An OTLP/HTTP endpoint that takes every export and drops it: what the server pays to export, nothing more."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", accept)
    app.router.add_post("/v1/metrics", accept)
    app.router.add_post("/v1/logs", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner.cleanup


async def _tick(progress: Progress, seconds: float) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        progress(f"measuring: {min(seconds, time.monotonic() - start):.0f}/{seconds:g} s")


async def _stop_server(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        try:
            async with asyncio.timeout(15):
                await server.wait()
        except TimeoutError:
            server.kill()
            await server.wait()


async def sweep(opts: BenchOptions, progress: Progress, max_calls: int = 2000) -> dict[str, Any]:
    """The largest N that keeps p99 forwarding < 20 ms with no lost frame: doubling from `opts.calls`, then
    bisecting down to 10% (or 10 calls)."""
    runs: list[dict[str, Any]] = []

    async def attempt(n: int) -> bool:
        progress(f"sweep: {n} calls")
        result = await run_once(replace(opts, calls=n), progress)
        runs.append(result)
        ok = bool(result["verdict"]["capacity_ok"])
        progress(f"sweep: {n} calls -> {'ok' if ok else 'not ok'}")
        return ok

    good, bad = 0, None
    n = opts.calls
    while n <= max_calls:
        if not await attempt(n):
            bad = n
            break
        good, n = n, n * 2
    while bad is not None and bad - good > max(10, good // 10):
        mid = (good + bad) // 2
        if await attempt(mid):
            good = mid
        else:
            bad = mid
    return {"max_calls": good, "runs": sorted(runs, key=lambda r: int(r["config"]["calls"]))}
