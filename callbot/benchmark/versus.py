"""`callbot bench --floor --pairs K`: callbot against the stack's floor, interleaved in one session (ABAB).

Each pair runs `callbot bench` (A) and then the floor relay (B) with the same number of calls and window, one after
the other on the same machine, so both see the same noise; K pairs give K ratios. The target (issue 18) is callbot's
CPU per call-second at most `TARGET_RATIO` times the floor's, with every latency and loss figure of the callbot runs
kept (p99 forwarding < 20 ms both ways, barge-in p99 < 5 ms, 0 lost frames, 0 bot frames after StopAudio).
"""

from __future__ import annotations

import statistics
from typing import Any

from callbot.benchmark.floor import run_floor
from callbot.benchmark.report import TARGET_BARGE_IN_P99_MS, TARGET_FORWARD_P99_MS
from callbot.benchmark.run import BenchOptions, Progress, run_once

TARGET_RATIO = 1.3


async def versus_floor(opts: BenchOptions, pairs: int, progress: Progress, server: str = "uvicorn"
                       ) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for k in range(1, pairs + 1):
        progress(f"pair {k}/{pairs}: callbot")
        bench = await run_once(opts, progress)
        progress(f"pair {k}/{pairs}: floor")
        floor = await run_floor(opts.calls, opts.seconds, progress, server)
        runs.append({"callbot": bench, "floor": floor})
    return summarise(runs)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pairs' figures, each pair's ratio, and the verdict (the median ratio; every run's latencies and losses)."""
    rows = []
    for pair in runs:
        bench, floor = pair["callbot"], pair["floor"]
        cpu = bench["server"]["cpu_ms_per_call_second"]
        base = floor["relay_cpu_ms_per_call_second"]
        lat, frames = bench["latency_ms"], bench["frames"]
        rows.append({
            "callbot_cpu_ms": cpu, "floor_cpu_ms": base,
            "ratio": round(cpu / base, 3) if cpu and base else None,
            "caller_to_model_p99": lat["caller_to_model"]["p99"], "model_to_acs_p99": lat["model_to_acs"]["p99"],
            "barge_in_p99": lat["barge_in_to_stop_audio"]["p99"],
            "lost": frames["caller"]["lost"] + frames["bot"]["lost"],
            "after_stop_audio": frames["bot"]["after_stop_audio"], "errors": bench["errors"]["count"],
            "other_cpu_percent": bench["machine"]["other_cpu_percent_of_core"],
        })
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    ratio = round(statistics.median(ratios), 3) if ratios else None
    kept = all(
        (r["caller_to_model_p99"] or 0) < TARGET_FORWARD_P99_MS and (r["model_to_acs_p99"] or 0) < TARGET_FORWARD_P99_MS
        and (r["barge_in_p99"] is None or r["barge_in_p99"] < TARGET_BARGE_IN_P99_MS)
        and r["lost"] == 0 and r["after_stop_audio"] == 0 and r["errors"] == 0 for r in rows)
    config = runs[0]["callbot"]["config"] if runs else {}
    return {"config": config, "pairs": rows, "median_ratio": ratio, "target_ratio": TARGET_RATIO,
            "verdict": {"cpu_ratio_ok": ratio is not None and ratio <= TARGET_RATIO, "figures_kept": kept},
            "runs": runs}


def render_versus(result: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    cfg = result["config"]
    lines = [f"callbot vs the stack's floor: {cfg.get('calls')} calls for {cfg.get('seconds')} s, "
             f"{len(result['pairs'])} interleaved pairs (callbot, then the floor)",
             f"{'pair':>4}{'callbot':>9}{'floor':>7}{'ratio':>7}{'fwd p99':>9}{'acs p99':>9}{'barge p99':>10}"
             f"{'lost':>6}{'other %':>8}"]
    for k, r in enumerate(result["pairs"], 1):
        lines.append(f"{k:>4}{r['callbot_cpu_ms']:>9}{r['floor_cpu_ms']:>7}{ms(r['ratio']):>7}"
                     f"{ms(r['caller_to_model_p99']):>9}{ms(r['model_to_acs_p99']):>9}{ms(r['barge_in_p99']):>10}"
                     f"{r['lost'] + r['after_stop_audio']:>6}{r['other_cpu_percent']:>8}")
    verdict = result["verdict"]
    lines.append(f"median ratio {ms(result['median_ratio'])} (target <= {result['target_ratio']:g}): "
                 f"{'met' if verdict['cpu_ratio_ok'] else 'not met'}; latency and loss targets "
                 f"{'kept in every run' if verdict['figures_kept'] else 'NOT kept in every run'}")
    lines.append("(CPU in ms per call-second; fwd: caller frame -> model append; acs: model delta -> first ACS frame; "
                 "lost: lost frames + bot frames after StopAudio; other: other processes, % of a core)")
    return "\n".join(lines)
