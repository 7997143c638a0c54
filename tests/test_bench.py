"""`callbot bench`: a real three-call run end to end (correctness, not speed), and the report's frame accounting."""

from __future__ import annotations

import asyncio
import binascii
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from callbot.acs import media
from callbot.benchmark import common
from callbot.benchmark.report import build, percentiles
from callbot.benchmark.versus import render_versus, summarise


@pytest.mark.parametrize(("transport", "stop", "append_ms"),
                         [("acs", "StopAudio", 20), ("twilio", "clear", 20), ("acs", "StopAudio", 40)])
async def test_bench_three_calls_loses_no_frame_and_reports_every_figure(tmp_path: Path, transport: str,
                                                                         stop: str, append_ms: int) -> None:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "bench", "--calls", "3", "--seconds", "3", "--barge-in-every", "1",
        "--transport", transport, "--append-ms", str(append_ms), "--chunk-ms", str(append_ms), "--json", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert f"speech_started -> {stop}" in stdout.decode()
    assert "placing calls" in stderr.decode()  # progress is shown while it runs

    report = json.loads(out.read_text())
    assert report["calls"] == {"requested": 3, "connected": 3}
    assert report["errors"]["count"] == 0, report["errors"]
    caller, bot = report["frames"]["caller"], report["frames"]["bot"]
    assert caller["sent"] >= 3 * 3 * 50 * 0.9
    assert caller["lost"] == 0 and caller["received"] == caller["sent"]
    assert bot["sent"] > 0 and bot["lost"] == 0
    assert bot["cut_by_barge_in"] > 0
    assert bot["after_stop_audio"] == 0
    for figure in ("caller_to_model", "model_to_acs", "bot_frame_jitter", "barge_in_to_stop_audio"):
        stats = report["latency_ms"][figure]
        assert stats["n"] > 0, figure
        assert 0 <= stats["p50"] <= stats["p99"] <= stats["max"], figure
    server = report["server"]
    assert server["cpu_ms_per_call_second"] > 0
    assert server["rss_mib"] >= server["rss_idle_mib"] > 0
    assert set(report["verdict"]) == {"capacity_ok", "barge_in_ok", "rss_ok"}  # CPU: against the floor (--pairs)
    assert report["machine"]["pinning"]  # says where the server and the load ran
    assert report["config"]["transport"] == transport
    assert report["config"]["append_ms"] == append_ms
    jitter = report["latency_ms"]["bot_frame_jitter"]["n"]  # one figure per message after each answer's first
    if append_ms == 40:  # every frame counted, and the first of each pair waited for the second: that is in p99
        assert "caller audio in 40 ms appends, bot audio in 40 ms messages" in stdout.decode()
        assert report["latency_ms"]["caller_to_model"]["p99"] >= 19
        assert jitter < 0.6 * bot["sent"]  # the server got CALLBOT_PLAYBACK_CHUNK_MS=40: two frames a message


async def test_bench_floor_relays_a_calls_messages_on_both_stacks_and_pairs_callbot_with_it(tmp_path: Path) -> None:
    """The floor on both stacks; on aiohttp's, as one interleaved pair with a callbot run (`--pairs`)."""
    for stack, pairs in (("uvicorn", []), ("aiohttp", ["--pairs", "1"])):
        out = tmp_path / f"floor-{stack}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbot", "bench", "--floor", stack, *pairs, "--calls", "3", "--seconds", "1",
            "--json", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        report = json.loads(out.read_text())
        if pairs:
            assert "median ratio" in stdout.decode()
            [pair] = report["pairs"]
            bench, report = report["runs"][0]["callbot"], report["runs"][0]["floor"]
            assert bench["config"]["calls"] == 3 and bench["frames"]["caller"]["lost"] == 0
            assert pair["ratio"] == round(pair["callbot_cpu_ms"] / pair["floor_cpu_ms"], 3) > 0
        else:
            assert "ms per call-second" in stdout.decode()
        assert report["server"] == stack and report["calls"] == 3
        # every caller message reached the model's side and the bot's messages came back, at the call's rates
        assert 45 <= report["relayed_per_call_second"]["to_model"] <= 55
        assert 15 <= report["relayed_per_call_second"]["to_caller"] <= 25
        assert 0 < report["relay_cpu_percent_of_core"] < 100


def test_the_floor_verdict_takes_the_median_ratio_and_every_runs_latencies_and_losses() -> None:
    def pair(cpu: float, floor: float, fwd: float = 1.0, lost: int = 0) -> dict[str, Any]:
        latency = {"caller_to_model": {"p99": fwd}, "model_to_acs": {"p99": 1.0},
                   "barge_in_to_stop_audio": {"p99": 1.0}}
        frames = {"caller": {"lost": lost}, "bot": {"lost": 0, "after_stop_audio": 0}}
        return {"callbot": {"config": {"calls": 100, "seconds": 10}, "server": {"cpu_ms_per_call_second": cpu},
                            "latency_ms": latency, "frames": frames, "errors": {"count": 0},
                            "machine": {"other_cpu_percent_of_core": 1.0}},
                "floor": {"relay_cpu_ms_per_call_second": floor}}

    result = summarise([pair(5.0, 4.0), pair(6.0, 4.0), pair(4.8, 4.0)])
    assert result["median_ratio"] == 1.25 and result["verdict"] == {"cpu_ratio_ok": True, "figures_kept": True}
    assert summarise([pair(5.0, 4.0), pair(6.0, 4.0), pair(5.6, 4.0)])["verdict"]["cpu_ratio_ok"] is False
    assert summarise([pair(5.0, 4.0), pair(5.0, 4.0, fwd=25.0)])["verdict"]["figures_kept"] is False
    assert summarise([pair(5.0, 4.0, lost=1)])["verdict"]["figures_kept"] is False
    assert "median ratio 1.25 (target <= 1.3): met" in render_versus(result)


def test_frame_tags_survive_as_base64_prefixes() -> None:
    caller = common.caller_frame_b64(7, 123456, 99_000_001)
    assert len(caller) == len(common.caller_frame_b64(0, 0, 0))
    assert common.read_caller_tag(caller) == (7, 123456, 99_000_001)
    delta = common.bot_frames_b64(3, 2, 10, 5, 42)
    frame_chars = len(delta) // 5
    assert common.read_bot_tag(delta[3 * frame_chars:]) == (3, 2, 13, 42)


def test_mulaw_frame_tags_survive_whole_frame_encoding() -> None:
    caller = common.caller_frame_mulaw(7, 123456, 99_000_001)
    assert len(binascii.a2b_base64(caller)) == common.MULAW_FRAME_BYTES
    assert common.read_caller_tag(caller) == (7, 123456, 99_000_001)
    raw = binascii.a2b_base64(common.bot_frames_mulaw(3, 2, 10, 5, 42))
    assert len(raw) == 5 * common.MULAW_FRAME_BYTES
    assert common.read_bot_tags(raw, common.MULAW_FRAME_BYTES) == [(3, 2, 10 + i, 42) for i in range(5)]
    assert common.read_bot_tags(raw[:17], common.MULAW_FRAME_BYTES) == []  # not even one whole tag


def test_every_frame_of_a_joined_caller_append_is_read() -> None:
    from callbot.bridge.caller_audio import join_b64

    pcm = join_b64([common.caller_frame_b64(7, 10, 1), common.caller_frame_b64(7, 11, 2)])
    assert common.read_caller_tags(pcm, common.FRAME_BYTES) == [(7, 10, 1), (7, 11, 2)]
    mulaw = join_b64([common.caller_frame_mulaw(7, 10, 1), common.caller_frame_mulaw(7, 11, 2)])
    assert common.read_caller_tags(mulaw, common.MULAW_FRAME_BYTES) == [(7, 10, 1), (7, 11, 2)]
    assert common.read_caller_tags(common.caller_frame_b64(1, 2, 3), common.FRAME_BYTES) == [(1, 2, 3)]


def _run(phone_call: dict[str, object], model_call: dict[str, object]) -> dict[str, object]:
    acs = {"t0": 0, "t1": 5_000_000, "stop": 10_000_000, "placed": 1, "errors": [], "sender_lag_us": [100],
           "calls": {"0": phone_call}}
    model = {"calls": {"0": {"speaking_us": 0, **model_call}}, "sessions": 1, "orphan_sessions": 0,
             "untagged_frames": 0, "unexpected_events": {}}
    proc = {"wall_s": 1.0, "server_cpu_s": 0.01, "server_sys_s": 0.004, "acs_cpu_s": 0.1, "model_cpu_s": 0.1,
            "other_cpu_s": 0.0, "rss_idle": 100, "rss_calls": 200, "server_log_errors": 0, "server_log_warnings": 0}
    return build({"calls": 1, "seconds": 1.0, "barge_in_every": 1.0}, acs, model, proc)


def _phone(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"sent": 50, "send_errors": 0, "responses": {}, "forward_us": [], "jitter_us": [],
                               "late": 0, "after_stop": 0, "stops_us": [], "untagged": 0, "other_messages": {},
                               "closed_early": False, "close_code": None}
    base.update(overrides)
    return base


def test_report_counts_gaps_in_interrupted_answers_as_lost_and_the_cut_tail_as_cut() -> None:
    responses = [{"number": 1, "first_us": 1_000_000, "frames": 150, "barged_us": 2_000_000, "cancelled": False}]
    phone = _phone(responses={"1": [55, 60, 1, 2_100_000]}, stops_us=[2_001_500])
    report = _run(phone, {"sessions": 1, "received": 49, "latency_us": [500] * 49, "responses": responses})
    assert report["frames"]["caller"]["lost"] == 1  # type: ignore[index]
    assert report["frames"]["bot"] == {"sent": 60, "received": 55, "lost": 5, "late": 0,  # type: ignore[index]
                                       "cut_by_barge_in": 90, "after_stop_audio": 0}
    assert report["latency_ms"]["barge_in_to_stop_audio"]["p50"] == 1.5  # type: ignore[index]


@pytest.mark.parametrize(("first_us", "frames", "barged_us", "expected_us"), [
    (1_000_000, 100, None, 2_000_000),  # inside the window: its frames at the real-time pace
    (-1_000_000, 100, None, 1_000_000),  # begun before the window: only the part inside it
    (4_000_000, 100, None, 1_000_000),  # running past the window's end
    (1_000_000, 150, 2_000_000, 1_000_000),  # cut by a barge-in after 1 s
    (6_000_000, 100, None, 0),  # after the window
])
def test_an_answer_counts_as_speaking_only_while_it_played_inside_the_window(
        first_us: int, frames: int, barged_us: int | None, expected_us: int) -> None:
    assert common.speaking_us(first_us, frames, barged_us, 0, 5_000_000) == expected_us


def test_report_gives_the_bot_speaking_share_of_the_window_call_time() -> None:
    report = _run(_phone(), {"sessions": 1, "received": 50, "latency_us": [500] * 50, "responses": [],
                             "speaking_us": 3_000_000})
    assert report["talk"] == {"bot_speaking_share": 0.6}


def test_report_flags_a_barge_in_that_never_stopped_the_audio() -> None:
    responses = [{"number": 1, "first_us": 1_000_000, "frames": 150, "barged_us": 2_000_000, "cancelled": False}]
    report = _run(_phone(responses={"1": [60, 60, 0, 2_100_000]}),
                  {"sessions": 1, "received": 50, "latency_us": [500] * 50, "responses": responses})
    assert report["errors"]["by_kind"] == {"barge-in without StopAudio": 1}  # type: ignore[index]
    assert report["verdict"]["capacity_ok"] is False  # type: ignore[index]


def test_percentiles_use_nearest_rank_in_milliseconds() -> None:
    assert percentiles(range(1000, 101_000, 1000)) == {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"n": 0, "p50": None, "p99": None, "max": None}


# -- hot-path optimisations keep behaviour ----------------------------------------------------------------------

_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_STRICT_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.text(alphabet=_B64_CHARS, max_size=16),
    st.text(max_size=12),
    st.binary(max_size=12).map(lambda raw: binascii.b2a_base64(raw, newline=False).decode()),
))
@example("0000=")  # accepted by 3.11/3.12's strict a2b_base64, refused by 3.13's and by callbot
@example("AA==AA==")
def test_media_base64_check_accepts_exactly_canonical_padded_base64(text: str) -> None:
    # The oracle is the rule itself (alphabet only, whole 4-character groups, `=` only as the last one or two
    # characters), not `a2b_base64(strict_mode=True)`: that accepts text after padding ('0000=') on 3.11 and 3.12.
    if _STRICT_B64.fullmatch(text):
        expected: int | None = len(binascii.a2b_base64(text))
    else:
        expected = None
    assert media.strict_b64_length(text) == expected


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.text(alphabet=_B64_CHARS + "\n -_", max_size=16),
    st.text(max_size=12),
    st.binary(max_size=48).map(lambda raw: binascii.b2a_base64(raw, newline=False).decode()),
))
def test_model_audio_base64_decodes_exactly_as_the_stdlib_reads_it(text: str) -> None:
    try:
        expected: bytes | None = binascii.a2b_base64(text)
    except ValueError:  # binascii.Error, or text that is not ASCII
        expected = None
    try:
        got: bytes | None = media.decode_b64(text)
    except ValueError:
        got = None
    assert got == expected


def test_bench_telemetry_is_off_whatever_the_environment_says_and_on_only_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from callbot.benchmark.run import BenchOptions, _server_env

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=x")
    keys = {"api_key": "k", "webhook": "w", "signing": "s"}
    off = _server_env(BenchOptions(calls=10), 1, {}, "http://m", keys)
    assert not [k for k in off if k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))]
    on = _server_env(BenchOptions(calls=10), 1, {}, "http://m", keys, collector="http://127.0.0.1:4318")
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert on["OTEL_TRACES_EXPORTER"] == on["OTEL_METRICS_EXPORTER"] == "otlp"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" not in on


async def test_bench_heavy_talk_profile_has_the_bot_speaking_two_seconds_of_every_three_without_barge_in(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "bench", "--calls", "3", "--seconds", "6", "--talk", "heavy",
        "--json", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "no barge-in, answers of 2 s then 1 s silence" in stdout.decode()
    report = json.loads(out.read_text())
    bot = report["frames"]["bot"]
    assert bot["cut_by_barge_in"] == 0 and bot["lost"] == 0
    # 2 s of every 2.75-3.25 s, timed inside the window (whole answers begun in a 6 s window vary from 1 to 3 a call)
    assert 0.55 < report["talk"]["bot_speaking_share"] < 0.75, report["talk"]
    assert "bot speaking    " in stdout.decode()


def test_pairs_without_floor_is_refused_with_the_reason() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "callbot", "bench", "--pairs", "2"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2 and "--pairs needs --floor" in proc.stderr
