"""`callbot dial` as a user runs it (a subprocess) against the real app under uvicorn: how calls end and fail, what
the agent heard, and the local-only channel that tells it; `callbot export-wav` into a missing directory."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path

from callbot.config import Settings
from callbot.local.asr import normalize_words
from callbot.local.faq import Responder, caller_phrases
from tests.local.test_simulator import subprocess_env

RECORDING = Path(__file__).parent.parent / "recordings" / "qa.jsonl"


@dataclasses.dataclass
class Dialled:
    code: int | None
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def run_cli(directory: Path, *args: str, env: dict[str, str] | None = None) -> Dialled:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", *args, cwd=directory, env=env or subprocess_env(directory),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    return Dialled(proc.returncode, stdout.decode(), stderr.decode(), time.monotonic() - started)


# -- what the agent heard ----------------------------------------------------------------------------------------


def test_the_stand_in_answers_the_default_prompt_from_the_sample_faq_and_a_custom_one_as_written() -> None:
    default = Settings.model_fields["callbot_instructions"].default
    assert Responder(default).reply("do you deliver").startswith("Yes, we deliver within five miles")
    assert "do you deliver" in [" ".join(normalize_words(p)) for p in caller_phrases(default)]
    assert Responder("You are a helpful assistant.").reply("do you deliver") == "You said: do you deliver."


# -- export-wav --------------------------------------------------------------------------------------------------


async def test_export_wav_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = await run_cli(tmp_path, "export-wav", str(RECORDING), "missing/call.wav")
    assert result.code == 2 and result.out == "", result
    assert result.err.splitlines() == ["callbot: cannot write missing/call.wav: the directory missing does not "
                                       "exist"], result.err  # fmt: skip
