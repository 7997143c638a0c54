"""The production image, read from the Dockerfile and .dockerignore (no Docker engine needed)."""

from __future__ import annotations

import re
import shlex

import pytest

from . import REPO, Stage, dockerfile_stages

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_IMAGE = "python:3.13-slim"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_image_is_multi_stage_on_python_3_13_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(stage.base == BASE_IMAGE for stage in stages), [s.base for s in stages]


def test_runtime_stage_copies_only_the_built_virtualenv(stages: list[Stage], runtime: Stage) -> None:
    build_names = {s.name for s in stages[:-1]}
    copies = runtime.all("COPY")
    assert copies, "the runtime stage copies nothing"
    for copy in copies:
        words = copy.args.split()
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        assert source_stage in build_names, f"runtime COPY not from a build stage: {copy.args}"
    assert any("/opt/venv" in c.args for c in copies)
    # Nothing in the runtime stage installs packages or compiles: it only adds the user.
    assert all("pip" not in r.args for r in runtime.all("RUN"))


def test_production_install_is_the_plain_package_without_extras(stages: list[Stage]) -> None:
    runs = " ".join(r.args for s in stages for r in s.all("RUN"))
    assert "pip wheel --no-deps" in runs
    assert re.search(r"pip install /wheels/\*\.whl", runs), runs
    # Neither the offline-speech extra nor the dev extra reaches production.
    assert "[local]" not in runs and "[dev]" not in runs and ".[" not in runs


def test_runtime_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "no USER in the runtime stage: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    # The user exists: created in this stage with that uid (or name).
    created = " ".join(r.args for r in runtime.all("RUN"))
    assert "useradd" in created
    if user.isdigit():
        assert f"--uid {user}" in created
    else:
        assert user in created


def test_port_8000_is_exposed(runtime: Stage) -> None:
    exposed = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.args.split()}
    assert "8000" in exposed


def test_healthcheck_probes_healthz_with_python_not_curl(runtime: Stage) -> None:
    checks = runtime.all("HEALTHCHECK")
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command is not None, "HEALTHCHECK should use the exec form"
    assert command[0] == "python" and command[1] == "-c"
    script = command[2]
    assert "urllib.request" in script and "http://127.0.0.1:8000/healthz" in script
    assert "curl" not in checks[0].args and "wget" not in checks[0].args  # neither exists in slim
    compile(script, "<healthcheck>", "exec")  # valid Python


def test_command_serves_on_all_interfaces_port_8000(runtime: Stage) -> None:
    cmds = runtime.all("CMD")
    assert len(cmds) == 1
    assert cmds[0].exec_form() == ["callbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert not runtime.all("ENTRYPOINT")


def test_proxy_headers_are_trusted_behind_the_ingress(runtime: Stage) -> None:
    env = " ".join(e.args for e in runtime.all("ENV"))
    assert re.search(r'FORWARDED_ALLOW_IPS="\*"', env), env
    assert "/opt/venv/bin" in env  # the callbot script is on PATH


# ---- .dockerignore -------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (Go filepath.Match plus `**`) as a regex over slash paths."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def _included(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends `path` in the build context: the last rule matching it or a parent dir wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            included = negated
    return included


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("callbot/__init__.py", True),
        ("callbot/acs/media.py", True),
        ("callbot/py.typed", True),
        (".env", False),
        (".azure/dev/.env", False),
        ("callbot/.env", False),
        ("callbot/__pycache__/config.cpython-313.pyc", False),
        ("tests/infra/test_dockerfile.py", False),
        ("infra/main.bicep", False),
        (".git/config", False),
        ("demo-call.wav", False),
        ("demo-recordings/call-1.jsonl", False),
        (".venv/bin/python", False),
    ],
)
def test_build_context_holds_only_the_package(path: str, sent: bool) -> None:
    assert _included(path, _dockerignore_rules()) is sent


def test_everything_the_dockerfile_copies_is_in_the_build_context(stages: list[Stage]) -> None:
    rules = _dockerignore_rules()
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            if any(w.startswith("--from=") for w in copy.args.split()):
                continue
            for source in words[:-1]:
                assert _included(source.rstrip("/"), rules), f"{source} is excluded by .dockerignore"


def test_dockerfile_sources_exist_in_the_repo(stages: list[Stage]) -> None:
    missing = []
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy.args:
                continue
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            missing += [s for s in words[:-1] if not (REPO / s).exists()]
    # README.md is pyproject's `readme`; a missing COPY source fails `docker build` outright.
    assert not missing, f"COPY sources missing from the repo (docker build would fail): {missing}"

