"""Joins what the ACS side, the synthetic model and the process sampler saw into one report; renders it.

Pure functions over the load processes' results (plain dicts), so the accounting is testable without a run.
Frame accounting:
- caller frames: sent by the phone with a send time in the window, minus the distinct ones the model received;
- bot frames: per response that started in the window and had time to finish before the calls were hung up,
  a completed response must arrive whole; an interrupted one as a gap-free prefix (the rest was cut on purpose);
- talk profile: how long each call's bot audio played inside the window (answers begun before it included);
- barge-in: each scripted `speech_started` is matched with the first StopAudio at the phone before the next one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from callbot.benchmark import common as c

TARGET_FORWARD_P99_MS = 20.0
TARGET_BARGE_IN_P99_MS = 5.0
TARGET_RSS_PER_CALL = 1024 * 1024
SETTLE_US = 500_000  # a response or barge-in counts only if it had this long to complete before the hang-up


def percentiles(values_us: Iterable[int]) -> dict[str, Any]:
    """{n, p50, p99, max} in milliseconds (nearest-rank); None when there are no values."""
    ordered = sorted(values_us)
    if not ordered:
        return {"n": 0, "p50": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] / 1000

    return {"n": len(ordered), "p50": round(rank(0.50), 3), "p99": round(rank(0.99), 3),
            "max": round(ordered[-1] / 1000, 3)}


def _barge_in(barges: list[int], stops: list[int]) -> tuple[list[int], int]:
    """Reaction times (µs) of each barge-in to the first StopAudio after it (and before the next barge-in)."""
    reactions, missing = [], 0
    ordered = sorted(barges)
    for i, at in enumerate(ordered):
        until = ordered[i + 1] if i + 1 < len(ordered) else 2**62
        stop = next((s for s in stops if at <= s < until), None)
        if stop is None:
            missing += 1
        else:
            reactions.append(stop - at)
    return reactions, missing


def build(opts: dict[str, Any], acs: dict[str, Any], model: dict[str, Any], proc: dict[str, Any]) -> dict[str, Any]:
    stop = acs["stop"]
    caller_sent = caller_received = caller_lost = 0
    latencies: list[int] = []
    forward: list[int] = []
    jitter: list[int] = []
    reactions: list[int] = []
    bot = {"sent": 0, "received": 0, "lost": 0, "late": 0, "cut_by_barge_in": 0, "after_stop_audio": 0}
    errors: dict[str, int] = {}
    speaking_us = 0

    def error(kind: str, count: int = 1) -> None:
        if count:
            errors[kind] = errors.get(kind, 0) + count

    for key, phone in acs["calls"].items():
        seen = model["calls"].get(key, {"sessions": 0, "received": 0, "latency_us": [], "responses": [],
                                        "speaking_us": 0})
        speaking_us += seen["speaking_us"]
        caller_sent += phone["sent"]
        caller_received += seen["received"]
        caller_lost += max(0, phone["sent"] - seen["received"])
        latencies.extend(seen["latency_us"])
        forward.extend(phone["forward_us"])
        jitter.extend(phone["jitter_us"])
        bot["late"] += phone["late"]
        bot["after_stop_audio"] += phone["after_stop"]
        barges = []
        for r in seen["responses"]:
            got = phone["responses"].get(str(r["number"]))
            count, next_index = (got[0], got[1]) if got else (0, 0)
            if r["barged_us"] is not None:
                if r["barged_us"] > stop - SETTLE_US:
                    continue
                barges.append(r["barged_us"])
                bot["sent"] += next_index
                bot["cut_by_barge_in"] += r["frames"] - next_index
                bot["lost"] += next_index - count
            else:
                if r["first_us"] + r["frames"] * 20_000 + SETTLE_US > stop:
                    continue
                bot["sent"] += r["frames"]
                bot["lost"] += max(0, r["frames"] - count)
            bot["received"] += count
        found, missing = _barge_in(barges, phone["stops_us"])
        reactions.extend(found)
        error("barge-in without StopAudio", missing)
        error("extra Voice Live sessions (reconnects)", max(0, seen["sessions"] - 1))
        error("calls without a Voice Live session", seen["sessions"] == 0)
        error("media sockets closed early", phone["closed_early"])
        error("caller frames not sent", phone["send_errors"])
        error("untagged bot frames", phone["untagged"])
        for kind, count in phone["other_messages"].items():
            error(f"unexpected media message {kind}", count)
    error("calls not placed", len(acs["errors"]))
    error("Voice Live sessions without caller audio", model["orphan_sessions"])
    error("untagged caller frames", model["untagged_frames"])
    for kind, count in model["unexpected_events"].items():
        error(f"unexpected Voice Live event {kind}", count)
    error("server log errors", proc["server_log_errors"])

    placed = acs["placed"]
    call_seconds = placed * proc["wall_s"] if placed else 0.0
    rss_delta = proc["rss_calls"] - proc["rss_idle"]
    forwarding = percentiles(latencies)
    to_acs = percentiles(forward)
    barge = percentiles(reactions)
    lag = percentiles(acs["sender_lag_us"])
    window_us = placed * (acs["t1"] - acs["t0"])
    report: dict[str, Any] = {
        "config": opts,
        "calls": {"requested": opts["calls"], "connected": placed},
        "server": {
            "cpu_ms_per_call_second": round(proc["server_cpu_s"] * 1000 / call_seconds, 3) if call_seconds else None,
            "cpu_percent_of_core": round(100 * proc["server_cpu_s"] / proc["wall_s"], 1),
            "cpu_kernel_share": round(proc["server_sys_s"] / proc["server_cpu_s"], 2) if proc["server_cpu_s"] else None,
            "rss_idle_mib": round(proc["rss_idle"] / 2**20, 1),
            "rss_mib": round(proc["rss_calls"] / 2**20, 1),
            "rss_per_call_kib": round(rss_delta / placed / 1024, 1) if placed else None,
            "log_warnings": proc["server_log_warnings"],
        },
        "latency_ms": {"caller_to_model": forwarding, "model_to_acs": to_acs, "bot_frame_jitter": percentiles(jitter),
                       "barge_in_to_stop_audio": barge},
        "frames": {
            "caller": {"sent": caller_sent, "received": caller_received, "lost": caller_lost,
                       "late": sum(1 for v in latencies if v > c.LATE_S * 1e6)},
            "bot": bot,
        },
        # the talk profile as it ran: the share of the window's call time with the bot's audio playing
        "talk": {"bot_speaking_share": round(speaking_us / window_us, 3) if window_us > 0 else None},
        "errors": {"count": sum(errors.values()), "by_kind": errors, "details": acs["errors"][:10]},
        "load_generator": {
            "acs_cpu_percent_of_core": round(100 * proc["acs_cpu_s"] / proc["wall_s"], 1),
            "model_cpu_percent_of_core": round(100 * proc["model_cpu_s"] / proc["wall_s"], 1),
            "sender_lag_ms": lag,
        },
        "machine": {"cpus": os.cpu_count(), "pinning": proc.get("pinning", ""),
                    "other_cpu_percent_of_core": round(100 * proc["other_cpu_s"] / proc["wall_s"], 1)},
    }
    lost = caller_lost + bot["lost"]
    worst_forward = max(forwarding["p99"] or 0.0, to_acs["p99"] or 0.0)
    report["verdict"] = {
        "capacity_ok": bool(placed == opts["calls"] and lost == 0 and not errors and forwarding["n"]
                            and worst_forward < TARGET_FORWARD_P99_MS and bot["after_stop_audio"] == 0),
        "barge_in_ok": barge["p99"] is not None and barge["p99"] < TARGET_BARGE_IN_P99_MS,
        "rss_ok": placed > 0 and rss_delta / placed < TARGET_RSS_PER_CALL,
    }
    warnings = []
    lg = report["load_generator"]
    if max(lg["acs_cpu_percent_of_core"], lg["model_cpu_percent_of_core"]) > 85 or (lag["p99"] or 0) > 5.0:
        warnings.append("the load generator was near saturation (or starved): the figures may understate callbot")
    if report["machine"]["other_cpu_percent_of_core"] > 20:
        warnings.append("other processes competed for the CPU during the window: latencies are not callbot's alone")
    report["warnings"] = warnings
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def render(report: dict[str, Any]) -> str:
    cfg, srv, lat, frames = report["config"], report["server"], report["latency_ms"], report["frames"]
    barge = (f"barge-in every {cfg['barge_in_every']:g} s" if cfg["barge_in_every"] else
             f"no barge-in, answers of {cfg.get('answer_s', 3.0):g} s then {cfg.get('pause_s', 1.0):g} s silence")
    over = " over Twilio Media Streams (mu-law 8 kHz)" if cfg.get("transport") == "twilio" else ""
    extras = ", OpenTelemetry exporting (OTLP)" if cfg.get("telemetry") else ""
    extras += f", caller audio in {cfg['append_ms']} ms appends" if cfg.get("append_ms", 20) != 20 else ""
    extras += f", bot audio in {cfg['chunk_ms']} ms messages" if cfg.get("chunk_ms", 20) != 20 else ""
    lines = [f"callbot bench: {report['calls']['connected']}/{cfg['calls']} calls{over} for {cfg['seconds']:g} s, "
             f"{barge}{extras}",
             "", f"{'latency (ms)':34}{'p50':>9}{'p99':>9}{'max':>9}{'n':>9}"]
    phone, stop = ("Twilio", "clear") if over else ("ACS", "StopAudio")
    names = {"caller_to_model": "caller frame -> model append", "model_to_acs": f"model delta -> first {phone} frame",
             "bot_frame_jitter": "bot audio pacing jitter", "barge_in_to_stop_audio": f"speech_started -> {stop}"}
    for key, label in names.items():
        p = lat[key]
        lines.append(f"{label:34}{_ms(p['p50']):>9}{_ms(p['p99']):>9}{_ms(p['max']):>9}{p['n']:>9}")
    caller, bot = frames["caller"], frames["bot"]
    lg = report["load_generator"]
    lines += [
        "",
        f"server CPU      {srv['cpu_ms_per_call_second']} ms per call-second ({srv['cpu_percent_of_core']}% of a core, "
        f"{round(100 * (srv['cpu_kernel_share'] or 0))}% in the kernel)",
        f"server RSS      {srv['rss_mib']} MiB (idle {srv['rss_idle_mib']} MiB): "
        f"{srv['rss_per_call_kib']} KiB per call",
        f"caller frames   {caller['sent']} sent, {caller['lost']} lost, {caller['late']} late (> 40 ms)",
        f"bot frames      {bot['sent']} sent, {bot['lost']} lost, {bot['late']} late (> 40 ms behind pace), "
        f"{bot['cut_by_barge_in']} cut by barge-in, {bot['after_stop_audio']} after {stop}",
        f"bot speaking    {_share(report['talk']['bot_speaking_share'])} of the window's call time",
        f"errors          {report['errors']['count']}"
        + "".join(f"\n  {kind}: {n}" for kind, n in report["errors"]["by_kind"].items()),
        f"load generator  {phone} side {lg['acs_cpu_percent_of_core']}% of a core, model "
        f"{lg['model_cpu_percent_of_core']}%, frame sender lag p99 {_ms(lg['sender_lag_ms']['p99'])} ms",
        f"machine         {report['machine']['cpus']} CPUs ({report['machine']['pinning']}); other processes used "
        f"{report['machine']['other_cpu_percent_of_core']}% of a core during the window",
    ]
    verdict = report["verdict"]
    lines.append("targets met     " + ", ".join(f"{k.removesuffix('_ok')} {'yes' if v else 'no'}"
                                               for k, v in verdict.items()))
    lines.extend(f"warning: {w}" for w in report["warnings"])
    return "\n".join(lines)


def render_sweep(sweep: dict[str, Any]) -> str:
    lines = [f"{'calls':>6}{'fwd p99':>9}{'acs p99':>9}{'barge p99':>10}{'cpu ms/cs':>10}{'cpu %':>7}{'rss/call':>9}"
             f"{'lost':>6}{'errors':>7}{'loadgen %':>10}{'other %':>8}  ok"]
    for r in sweep["runs"]:
        lat, srv, lg = r["latency_ms"], r["server"], r["load_generator"]
        lost = r["frames"]["caller"]["lost"] + r["frames"]["bot"]["lost"]
        loadgen = lg["acs_cpu_percent_of_core"] + lg["model_cpu_percent_of_core"]
        lines.append(f"{r['config']['calls']:>6}{_ms(lat['caller_to_model']['p99']):>9}"
                     f"{_ms(lat['model_to_acs']['p99']):>9}{_ms(lat['barge_in_to_stop_audio']['p99']):>10}"
                     f"{srv['cpu_ms_per_call_second'] or '-':>10}{srv['cpu_percent_of_core']:>7}"
                     f"{srv['rss_per_call_kib'] or '-':>9}{lost:>6}{r['errors']['count']:>7}{loadgen:>10.0f}"
                     f"{r['machine']['other_cpu_percent_of_core']:>8}  "
                     f"{'yes' if r['verdict']['capacity_ok'] else 'no'}")
    lines.append(f"largest N with p99 forwarding < {TARGET_FORWARD_P99_MS:g} ms and 0 lost frames: "
                 f"{sweep['max_calls']} calls per replica")
    lines.append("(fwd: caller frame -> model append; acs: model delta -> first ACS frame; loadgen: ACS side + model "
                 "CPU; other: CPU used by other processes on the machine, % of a core)")
    return "\n".join(lines)
