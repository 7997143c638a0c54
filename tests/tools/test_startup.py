"""CALLBOT_TOOLS_FILE at start: a bad file stops `callbot serve` with one line; a good one opens the runner."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from callbot.tools import CallInfo
from tests.harness import run_callbot
from tests.tools.test_load import TOOL, write
from tests.tools.test_runner import ToolServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve(tmp_path: Path, tools_file: Path, **extra: str) -> tuple[int | None, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACS_", "CALLBOT_"))}
    env.update(CALLBOT_LOCAL_DIR=str(tmp_path), CALLBOT_GREETING="", CALLBOT_TOOLS_FILE=str(tools_file), **extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--port", str(_free_port()), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, stderr.decode()


@pytest.mark.parametrize(("text", "problem"), [
    (TOOL + "timeout_s = 60\n", "tool 'lookup': timeout_s must be a number of seconds above 0 and at most 30, not 60"),
    (TOOL + 'headers = { Authorization = "env:LOOKUP_TOKEN" }\n',
     "tool 'lookup': header 'Authorization': environment variable LOOKUP_TOKEN is not set or empty"),
])
async def test_serve_with_a_bad_tools_file_prints_one_line_and_exits_non_zero(tmp_path: Path, text: str,
                                                                             problem: str) -> None:
    path = write(tmp_path, text)
    code, stderr = await _serve(tmp_path, path, LOOKUP_TOKEN="")
    assert code != 0 and code is not None
    assert stderr.strip().splitlines() == [f"callbot: invalid configuration: CALLBOT_TOOLS_FILE {path}: {problem}"]


async def test_serve_with_a_missing_tools_file_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    code, stderr = await _serve(tmp_path, tmp_path / "nowhere.toml")
    assert code not in (0, None)
    [line] = stderr.strip().splitlines()
    assert line.startswith("callbot: invalid configuration: CALLBOT_TOOLS_FILE ") and "cannot read" in line


async def test_the_service_loads_the_file_and_runs_its_tools_until_it_stops(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tool_server = ToolServer()
    await tool_server.start()
    monkeypatch.setenv("LOOKUP_TOKEN", "Bearer start-up-secret")
    path = write(tmp_path, TOOL.replace("https://tools.example.com/lookup", tool_server.url + "/json")
                 + 'headers = { Authorization = "env:LOOKUP_TOKEN" }\n')
    try:
        async with run_callbot(callbot_tools_file=path) as running:
            services = running.services
            assert services.tools is not None and services.tool_runner is not None
            tool = services.tools.tool("lookup")
            assert tool is not None
            result = await services.tool_runner.call(tool, "{}", CallInfo("c1", "+14255550100", None))
            runner = services.tool_runner
        assert (result.outcome, json.loads(result.output)["status"]) == ("ok", "shipped")
        [(_, headers, _)] = tool_server.requests
        assert headers["Authorization"] == "Bearer start-up-secret"
        assert runner._http is None  # closed with the service
    finally:
        await tool_server.runner.cleanup()


async def test_without_a_tools_file_there_are_no_tools(tmp_path: Path) -> None:
    async with run_callbot() as running:
        assert running.services.tools is None and running.services.tool_runner is None
