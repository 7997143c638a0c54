"""`callbot bench`: N concurrent simulated calls against a real `callbot serve` process; prints what it costs.

    callbot bench --calls N --seconds S [--barge-in-every T] [--sweep] [--json OUT]
    callbot bench --floor [uvicorn|aiohttp] --calls N --seconds S   (a call's messages through the bare stack)
    callbot bench --floor --pairs K --calls N --seconds S   (callbot, then the floor, K times: the CPU ratio)

The processes and the accounting are in `callbot.benchmark`. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from callbot.benchmark.common import BenchError
from callbot.benchmark.floor import format_floor, run_floor
from callbot.benchmark.report import render, render_sweep
from callbot.benchmark.run import BenchOptions, run_once, sweep
from callbot.benchmark.versus import render_versus, versus_floor


def _progress(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def _positive(kind: type[int] | type[float], *, zero: bool = False) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, not {text}")
        return value

    return parse


# talk profiles: (barge-in every T s, answer length, pause after it); "heavy" is the independent harness's load (the
# bot speaks 2 s of every 3 s, 100 ms deltas faster than real time, caller frames all the time, no barge-in)
TALK_PROFILES = MappingProxyType({"default": (3.0, 3.0, 1.0), "heavy": (0.0, 2.0, 1.0)})


def cmd_bench(args: argparse.Namespace) -> int:
    barge, answer, pause = TALK_PROFILES[args.talk]
    opts = BenchOptions(calls=args.calls, seconds=args.seconds,
                        barge_in_every=barge if args.barge_in_every is None else args.barge_in_every,
                        answer_s=answer if args.answer_seconds is None else args.answer_seconds,
                        pause_s=pause if args.pause_seconds is None else args.pause_seconds,
                        keep_logs=args.keep_logs, transport=args.transport, telemetry=args.telemetry,
                        append_ms=args.append_ms, chunk_ms=args.chunk_ms)
    if args.pairs and not args.floor:
        sys.stderr.write("callbot bench: --pairs needs --floor (it pairs callbot runs with floor runs)\n")
        return 2
    try:
        if args.floor and args.pairs:
            result = asyncio.run(versus_floor(opts, args.pairs, _progress, args.floor))
            text = render_versus(result)
        elif args.floor:
            result = asyncio.run(run_floor(args.calls, args.seconds, _progress, args.floor))
            text = format_floor(result)
        elif args.sweep:
            result = asyncio.run(sweep(opts, _progress, max_calls=args.max_calls))
            text = render_sweep(result)
        else:
            result = asyncio.run(run_once(opts, _progress))
            text = render(result)
    except BenchError as exc:
        sys.stderr.write(f"callbot bench: {exc}\n")
        return 2
    sys.stdout.write(text + "\n")
    if args.json is not None:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench", help="load benchmark: N concurrent simulated calls against a real `callbot serve`",
        description="Starts `callbot serve` and a load generator (ACS side + a synthetic Voice Live service, each in "
                    "its own process) playing N concurrent calls; reports the server's CPU per call-second, RSS per "
                    "call, forwarding delays, pacing jitter, barge-in reaction, lost frames and errors.")
    bench.add_argument("--calls", type=_positive(int), default=50, help="concurrent calls (sweep: the first N)")
    bench.add_argument("--seconds", type=_positive(float), default=10.0, help="measurement window per run")
    bench.add_argument("--talk", choices=sorted(TALK_PROFILES), default="default",
                       help="talk profile: default (each answer cut by a barge-in 3 s after its first audio, the "
                            "next one 0.4 s later: the bot speaks ~88%% of the time, measured) or heavy (no barge-in, "
                            "the bot speaks 2 s of every 3 s)")
    bench.add_argument("--barge-in-every", type=_positive(float, zero=True), default=None, metavar="T",
                       help="interrupt every bot answer T s after its first audio (0: never); default: the profile's")
    bench.add_argument("--answer-seconds", type=_positive(float), default=None, metavar="S",
                       help="without barge-in: each bot answer's length (default: the profile's, 3 or heavy 2)")
    bench.add_argument("--pause-seconds", type=_positive(float, zero=True), default=None, metavar="S",
                       help="without barge-in: the silence after each answer (default: the profile's, 1)")
    bench.add_argument("--transport", choices=["acs", "twilio"], default="acs",
                       help="the phone side: ACS media streaming (PCM 24 kHz, the default) or Twilio Media Streams "
                            "(mu-law 8 kHz, model audio g711_ulaw)")
    bench.add_argument("--telemetry", action="store_true",
                       help="the server exports its traces and metrics over OTLP/HTTP (to a local collector that "
                            "drops them): what OpenTelemetry costs; off by default, as in a server with nothing set")
    bench.add_argument("--append-ms", type=int, choices=[20, 40], default=20,
                       help="the server's CALLBOT_MODEL_APPEND_MS: caller audio to the model in 20 ms appends (the "
                            "default) or 40 ms ones (half the messages; the first frame of each waits 20 ms)")
    bench.add_argument("--chunk-ms", type=int, choices=[20, 40, 60, 80, 100], default=20,
                       help="the server's CALLBOT_PLAYBACK_CHUNK_MS: bot audio in AudioData messages of this many ms")
    bench.add_argument("--sweep", action="store_true",
                       help="find the largest N with p99 forwarding < 20 ms and 0 lost frames (doubling, then bisect)")
    bench.add_argument("--floor", nargs="?", const="uvicorn", choices=["uvicorn", "aiohttp"],
                       help="measure the stack's floor instead: N sockets relaying a call's message mix with no "
                            "bridge logic, on callbot's server stack (uvicorn, the default) or on aiohttp's server")
    bench.add_argument("--pairs", type=_positive(int), default=0, metavar="K",
                       help="with --floor: K interleaved pairs of a callbot run and a floor run (ABAB, same calls and "
                            "window); reports each pair's CPU ratio and the median against the 1.3x target")
    bench.add_argument("--max-calls", type=_positive(int), default=2000, help="upper bound of --sweep")
    bench.add_argument("--json", metavar="OUT", help="also write the full report as JSON to OUT")
    bench.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (kept anyway on errors)")
    bench.set_defaults(func=cmd_bench)
