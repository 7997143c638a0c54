"""The `callbot` command line: serve, demo, dial, replay, export-wav, bench."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from callbot import __version__

log = logging.getLogger(__name__)


def _settings(**overrides: object) -> object:
    from callbot.config import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise SystemExit(f"callbot: invalid configuration: {problems}") from None


def _problem(error: Any) -> str:
    """One validation error as a short phrase: the setting's name (when pydantic knows it) and what is wrong."""
    message = str(error["msg"]).removeprefix("Value error, ")
    name = ".".join(str(p) for p in error["loc"]).upper()
    return message if not name or message.startswith(name) else f"{name}: {message}"


def _check_tools_file(settings: Any) -> None:
    """A bad CALLBOT_TOOLS_FILE stops `serve` with one line, like any other invalid setting."""
    if settings.callbot_tools_file is None:
        return
    import os

    from callbot.tools import ToolsFileError, load_tools_file

    try:
        load_tools_file(settings.callbot_tools_file, os.environ)
    except ToolsFileError as exc:
        raise SystemExit(f"callbot: invalid configuration: CALLBOT_TOOLS_FILE {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from callbot.app import create_app
    from callbot.config import Settings
    from callbot.logs import setup_logging
    from callbot.server import KEEP_ALIVE_S, WS_MAX_BYTES, DrainingServer

    settings = _settings()
    assert isinstance(settings, Settings)
    local_notice = ""
    if settings.acs_connection_string is None and settings.acs_endpoint is None:
        # no ACS configured: local development mode, trusting the phone simulator (`callbot dial`)
        from callbot.local.profile import load_profile, local_mode_notice, serve_overrides

        profile = load_profile()
        settings = _settings(**serve_overrides(settings, profile, args.host, args.port))
        assert isinstance(settings, Settings)
        local_notice = local_mode_notice(profile)
    _check_tools_file(settings)
    setup_logging(settings.log_level)
    if settings.offline:
        log.warning("AZURE_VOICELIVE_ENDPOINT is not set: using the built-in offline Voice Live stand-in")
    if local_notice:
        log.warning("%s", local_notice)
    if settings.web_phone:
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        log.warning("web phone: talk to the agent at http://%s:%d/phone%s", shown, args.port,
                    "" if settings.callbot_web_phone_key is None else " (asks for CALLBOT_WEB_PHONE_KEY)")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        proxy_headers=True,
        ws_max_size=WS_MAX_BYTES,
        ws_ping_interval=20.0,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=int(settings.callbot_drain_seconds) + 5,
        access_log=False,
    )
    DrainingServer(config, app).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbot", description="An Azure AI Voice Live agent on a phone line.")
    parser.add_argument("--version", action="version", version=f"callbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    serve.set_defaults(func=cmd_serve)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    registers = []
    for module in ("callbot.local.cli", "callbot.replay_cli", "callbot.bench"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        registers.append(mod.register_commands)
    return registers


_EXTRA_COMMANDS = _extra_commands()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result
