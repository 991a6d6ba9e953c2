"""Scale and memory: a full resync over a large ledger, then a poll with 10 changes, at 1,000 / 10,000 /
100,000 appointments.

For each size (one pair; Zoho CRM -> Salesforce by default: Zoho reads by modified time, a change feed):

1. **a ledger that already knows every appointment, built fast**: both sandboxes (own process, rate
   limits off) are seeded with the same N appointments, and the crosswalk links every pair of them
   (``appointment`` rows, one bulk import in one transaction through ``syncd.crosswalk.import_rows``,
   the same path as ``syncd crosswalk import``). No vendor create is made: 100,000 of them would take
   longer than the whole benchmark may;
2. **full resync** (``syncd resync --json``, a child process bounded in time): reads both sides and
   reconciles every record; its peak RSS (the child's own ``ru_maxrss``) is the *memory* figure at
   the largest size (hard target: < 200 MB at N = 100,000), its time and calls are reported;
3. **a poll with 10 changes**: another user edits 10 source records, then ``syncd resync --json
   --since <just before the edits>`` (what a poll reads: the changes since its cursor). Reported:
   the pass's time and the calls each vendor answered (sandbox request log). For a vendor with a
   change feed these should stay flat as N grows; for a date-window vendor they grow with the window.

A size whose full resync does not finish in its budget is reported as stopped; its poll is skipped.

Run alone: ``python -m bench.scale [--quick] [--size N]... [--pair SOURCE:TARGET]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from bench import Figure, MeasuredRun, print_table, sandboxes, sqlite_ledger_url, syncd_command, write_results
from bench.e2e import AUTH, NOTES_FIELD, Calls, appointment_records, control, measured_child, setup_pair
from syncd.sandboxkit.control import edit_of

__all__ = ["run"]

BENCH = "scale"
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000,)
PAIR = ("zoho_crm", "salesforce_health")
CHANGES = 10
TARGET_RSS_MB = 200.0
MEMORY_N = 100_000
FULL_BUDGET_S = {1_000: 20.0, 10_000: 30.0, 100_000: 60.0}
"""Seconds the full resync may take (the nothing-to-do target, 5,000 records/s, allows 20 s at 100,000)."""
POLL_BUDGET_S = 30.0


async def _edit(session: aiohttp.ClientSession, vendor: str, url: str, count: int) -> int:
    records = appointment_records(vendor, await control(session, "GET", f"{url}/_sandbox/records"))
    step = max(1, len(records) // count)
    chosen = records[::step][:count]
    edits = [edit_of(rec, {NOTES_FIELD[vendor]: f"bench scale edit {i}"}) for i, rec in enumerate(chosen)]
    await control(session, "POST", f"{url}/_sandbox/records", {"records": edits})
    return len(edits)


async def measure_size(source: str, target: str, n: int, budget: float, memory_n: int) -> list[Figure]:
    label = f"{source}->{target} N={n:,}"
    timeout = aiohttp.ClientTimeout(total=300)
    async with sandboxes([source, target]) as child, sqlite_ledger_url() as ledger_url, \
            aiohttp.ClientSession(timeout=timeout) as session:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            started = time.perf_counter()
            setup = await setup_pair(session, source, target, n, child.urls, ledger_url, Path(tmp),
                                     seed_target_appointments=True)
            setup_s = time.perf_counter() - started
            print(f"  {label}: full resync (set up in {setup_s:.1f} s) ...", file=sys.stderr, flush=True)
            urls = {v: child.urls[v] for v in (source, target)}
            config = str(setup.config_path)
            full, calls = await measured_child(
                session, urls, syncd_command("resync", "--json", "--config", config), budget
            )
            figures = _full_resync_figures(label, n, memory_n, full, calls, setup_s)
            if full.timed_out:
                figures.append(Figure(BENCH, f"{label}: poll with {CHANGES} changes", None, "s",
                                      note="not measured: the full resync was stopped"))
                return figures
            since = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0)
            edited = await _edit(session, source, child.urls[source], CHANGES)
            poll, calls = await measured_child(
                session, urls,
                syncd_command("resync", "--json", "--config", config, "--since",
                              since.isoformat().replace("+00:00", "Z")),
                POLL_BUDGET_S,
            )
            figures += _poll_figures(label, n, source, target, edited, poll, calls)
    return figures


def _full_resync_figures(
    label: str, n: int, memory_n: int, full: MeasuredRun, calls: dict[str, Calls], setup_s: float
) -> list[Figure]:
    """Throughput and peak memory of the full resync (hard RSS target at ``memory_n`` records);
    ``calls``: the source's, then the target's."""
    source, target = calls
    seconds = float(full.json().get("duration_s") or full.seconds) if not full.timed_out else full.seconds
    writes = sum(c.writes for c in calls.values())
    note = (f"ledger and sandboxes set up in {setup_s:.1f} s (links bulk-inserted, no vendor creates); "
            f"{writes:,} writes, reads {source} {calls[source].reads:,}, {target} {calls[target].reads:,}")
    if full.timed_out:
        note = f"STOPPED after {full.seconds:.0f} s (budget); " + note
    figures = [Figure(BENCH, f"{label}: full resync", n / seconds if not full.timed_out else None,
                      "records/s", note=f"{seconds:.1f} s; " + note, complete=not full.timed_out,
                      extra={"n": n, "seconds": seconds, "timed_out": full.timed_out,
                             "max_rss_mb": full.max_rss_mb, "cpu_s": full.cpu_s,
                             "exit_code": full.returncode,
                             "calls": {v: c.routes for v, c in calls.items()}})]
    if n == memory_n:
        figures.append(Figure(BENCH, f"{label}: peak RSS of the full resync", full.max_rss_mb, "MB",
                              TARGET_RSS_MB, hard=True, lower_is_better=True, complete=not full.timed_out,
                              note=("peak until it was stopped; " if full.timed_out else "")
                              + "the syncd child's own ru_maxrss"))
    else:
        figures.append(Figure(BENCH, f"{label}: peak RSS of the full resync", full.max_rss_mb, "MB",
                              note="the syncd child's own ru_maxrss"))
    return figures


def _poll_figures(
    label: str, n: int, source: str, target: str, edited: int, poll: MeasuredRun, calls: dict[str, Calls]
) -> list[Figure]:
    """Time and vendor calls of the incremental pass after ``edited`` edits."""
    pdoc = poll.json()
    pseconds = float(pdoc.get("duration_s") or poll.seconds) if not poll.timed_out else poll.seconds
    counts = (pdoc.get("connectors") or {}).get(target) or {}
    changed = sum(int(counts.get(k, 0)) for k in ("created", "updated", "cancelled"))
    total_calls = sum(c.total for c in calls.values())
    detail = (f"{edited} edits, {changed} written; {source}: {calls[source].reads} reads; "
              f"{target}: {calls[target].reads} reads, {calls[target].writes} writes; exit {poll.returncode}")
    if poll.timed_out:
        detail = f"STOPPED after {poll.seconds:.0f} s; " + detail
    extra: dict[str, object] = {"n": n, "seconds": pseconds, "changes": changed, "edited": edited,
                                "calls": {v: c.routes for v, c in calls.items()}, "cpu_s": poll.cpu_s}
    return [
        Figure(BENCH, f"{label}: poll with {CHANGES} changes, time", pseconds, "s",
               note=detail, extra=extra, complete=not poll.timed_out),
        Figure(BENCH, f"{label}: poll with {CHANGES} changes, vendor calls", total_calls,
               "calls", note="every call either sandbox answered, token calls included"),
    ]


async def run(*, quick: bool = False, sizes: Sequence[int] | None = None,
              pair: Sequence[str] = PAIR) -> list[Figure]:
    source, target = pair
    chosen = list(sizes or (QUICK_SIZES if quick else SIZES))
    memory_n = max(chosen)
    figures: list[Figure] = []
    for n in chosen:
        budget = FULL_BUDGET_S.get(n, max(20.0, n / 1_000))
        figures += await measure_size(source, target, n, budget, memory_n if memory_n == MEMORY_N or quick
                                      else -1)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--size", type=int, action="append", help="ledger sizes (repeatable)")
    parser.add_argument("--pair", default=":".join(PAIR), help="SOURCE:TARGET vendor types")
    args = parser.parse_args(argv)
    pair = tuple(args.pair.split(":"))
    if len(pair) != 2 or pair[0] == pair[1] or any(p not in AUTH for p in pair):
        parser.error(f"--pair: two different vendor types among {', '.join(AUTH)}")
    started = time.monotonic()
    figures = asyncio.run(run(quick=args.quick, sizes=args.size, pair=pair))
    write_results(BENCH, figures, quick=args.quick, seconds=time.monotonic() - started)
    return print_table(figures)


if __name__ == "__main__":
    sys.exit(main())
