"""`callbot replay` and `callbot export-wav`: a recorded call against the current code, and as a WAV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from callbot.recording import RecordingError, load_recording
from callbot.replay import check_recording


def cmd_replay(args: argparse.Namespace) -> int:
    from callbot.logs import setup_logging

    setup_logging("INFO" if args.verbose else "WARNING")
    try:
        recording = load_recording(args.file)
        report = check_recording(recording, frame_tolerance=args.frame_tolerance)
    except (OSError, RecordingError) as exc:
        sys.stderr.write(f"callbot: cannot replay {args.file}: {exc}\n")
        return 2
    sys.stdout.write(report.text())
    if args.wav is not None:
        from callbot.export_wav import export_wav, wav_line

        sys.stdout.write(wav_line(export_wav(recording, args.wav, bot=report.result.messages)))
    return 0 if report.ok else 1


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("replay", help="replay a recorded call against the current code and report differences")
    rp.add_argument("file", help="a recording: a .jsonl file (CALLBOT_RECORDINGS_DIR) or a blob URL (_URL)")
    rp.add_argument("--wav", type=Path, help="also write the replayed call as a two-channel WAV")
    rp.add_argument("--frame-tolerance", type=int, default=1,
                    help="audio frames a run may differ by (live ticks run a little late; default 1)")
    rp.add_argument("-v", "--verbose", action="store_true", help="show the bridge's log while replaying")
    rp.set_defaults(func=cmd_replay)
    ex = sub.add_parser("export-wav", help="write a recorded call as a WAV: caller left, bot right, as heard")
    ex.add_argument("file", help="a recording: a .jsonl file (CALLBOT_RECORDINGS_DIR) or a blob URL (_URL)")
    ex.add_argument("out", type=Path, help="the WAV to write: caller on the left channel, bot on the right")
    ex.set_defaults(func=_cmd_export_wav)


def _cmd_export_wav(args: argparse.Namespace) -> int:
    from callbot.export_wav import cmd_export_wav

    return cmd_export_wav(args)
