"""The benchmark suite's own plumbing (bench/), at tiny sizes, so that ``make bench`` does not rot.

Not a benchmark: no figure here is compared with a target. It checks that targets turn into exit
codes and summary lines, that a child's own CPU and memory are measured (and a child past its budget
is stopped), that the latency quantiles are read from a Prometheus histogram correctly, and that an
end-to-end pass through ``syncd resync --json`` is counted the way bench/README.md says (creates, 0
writes when nothing changed, one write per changed record).
"""

from __future__ import annotations

import math
import sys

import pytest

import bench.e2e as bench_e2e
from bench import Figure, print_table, run_measured
from bench.e2e import measure_pair
from bench.latency import bucket_of, histogram_quantile, parse_histogram


def test_a_missed_hard_target_fails_the_run_and_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    figures = [
        Figure("b", "fast enough", 12.0, "/s", 10.0, hard=True),
        Figure("b", "too slow", 5.0, "/s", 10.0, hard=True),
        Figure("b", "soft", 1.0, "/s", 10.0),
        Figure("b", "stopped early", 50.0, "/s", 10.0, hard=True, complete=False),
        Figure("b", "at most", 3.0, "ms", 1.0, hard=True, lower_is_better=True),
    ]
    assert [f.met for f in figures] == [True, False, False, False, False]
    assert print_table(figures) == 1
    out = capsys.readouterr().out
    assert "SUMMARY: 3 of 4 hard targets missed" in out
    assert "b: too slow" in out and "b: stopped early" in out and "b: fast enough" not in out.split("SUMMARY")[1]
    assert print_table(figures[:1]) == 0
    assert "SUMMARY: all 1 hard targets met" in capsys.readouterr().out


def test_quantiles_come_from_the_histogram_buckets() -> None:
    text = "\n".join([
        "# TYPE syncd_sync_latency_seconds histogram",
        'syncd_sync_latency_seconds_bucket{connector="zoho_crm",le="0.01"} 50.0',
        'syncd_sync_latency_seconds_bucket{connector="zoho_crm",le="0.05"} 90.0',
        'syncd_sync_latency_seconds_bucket{connector="zoho_crm",le="0.1"} 100.0',
        'syncd_sync_latency_seconds_bucket{connector="zoho_crm",le="+Inf"} 100.0',
        'syncd_sync_latency_seconds_bucket{connector="other",le="0.01"} 0.0',
        'syncd_sync_latency_seconds_bucket{connector="other",le="+Inf"} 7.0',
    ])
    buckets = parse_histogram(text, "syncd_sync_latency_seconds", {"connector": "zoho_crm"})
    assert buckets == [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.05 + 0.05 * 0.9)
    assert bucket_of(0.99, buckets) == (0.05, 0.1)
    assert histogram_quantile(0.5, []) is None


async def test_a_child_is_measured_by_its_own_rusage_and_stopped_at_its_budget() -> None:
    burn = "x = bytearray(80 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); sum(range(3_000_000))"
    run = await run_measured([sys.executable, "-c", burn], timeout=60)
    assert run.returncode == 0 and not run.timed_out
    assert run.max_rss_mb > 80
    assert run.cpu_s > 0.05
    stuck = await run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.0)
    assert stuck.timed_out and stuck.seconds < 10


@pytest.mark.timeout(120)
async def test_an_end_to_end_run_counts_creates_nothing_to_do_and_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    # the start-up CPU a full run subtracts is measured by two extra children; not needed at N = 10
    monkeypatch.setitem(bench_e2e._STARTUP, "cpu", 0.0)
    figures = {f.name.split(": ", 1)[1]: f for f in await measure_pair(
        "zoho_crm", "salesforce_health", "sqlite", 10, baseline=1_000.0,
        budgets={"create": 60.0, "noop": 60.0, "update": 60.0})}
    creates = figures["creates"]
    assert creates.complete and creates.extra["changes"] == 10, creates.note
    assert creates.value is not None
    assert creates.extra["ratio_vs_loopback"] == pytest.approx(creates.value / 1_000.0)
    assert figures["nothing to do, writes"].value == 0
    assert figures["nothing to do, writes"].met is True
    assert figures["updates"].extra["changes"] == 1  # 10 % of 10
    assert figures["updates, salesforce_health writes per change"].value == 1.0
    assert figures["salesforce calls per create"].value is not None


def test_the_latest_table_replaces_the_previous_one_in_the_docs() -> None:
    from bench.docs import fill

    once = fill("intro\n<!-- t -->\nafter\n", "t", "| a |")
    assert once == "intro\n<!-- t -->\n| a |\n<!-- /t -->\nafter\n"
    assert fill(once, "t", "| b |") == "intro\n<!-- t -->\n| b |\n<!-- /t -->\nafter\n"
    with pytest.raises(ValueError, match="marker"):
        fill("no marker", "t", "x")
