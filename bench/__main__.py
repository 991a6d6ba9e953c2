"""``python -m bench`` (``make bench``, ``make bench-quick``, ``make bench-profile``).

Runs the benchmarks one after another (never two at once: they would measure each other) and prints
one table, every figure beside its target. Each benchmark writes ``bench/results/<name>.json``; the
whole run writes ``bench/results/summary.json`` and a Markdown table, ``bench/results/latest.md``
(full run) or ``latest-quick.md`` (``--quick``). Exit status 1 when any hard target is missed or a
benchmark could not run (the last line, ``SUMMARY: ...``, lists them), else 0.

Options: ``--quick`` (smaller N, one pair, SQLite: a smoke run under a minute), ``--only NAME``
(repeatable; ``sandbox_reads`` runs only when asked), ``--profile`` (pyinstrument over the first and the
update pass instead of the benchmarks; reports in ``bench/results/profile/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench import RESULTS, ROOT, Figure, print_table, write_results

BENCHMARKS = ("baseline", "ledger_batch", "e2e", "latency", "scale", "webhook_intake", "explain", "sandbox_reads")
DEFAULT = BENCHMARKS[:-1]
"""``sandbox_reads`` (issue 4's sandbox ceiling) runs with ``--only sandbox_reads``: it checks the
instrument, not syncd, and the full run has to stay under 10 minutes."""
QUICK = ("baseline", "ledger_batch", "e2e", "latency", "scale", "explain")
"""``--quick`` leaves out webhook intake too (its per-delivery mode alone takes a minute when loaded)."""
TIME_LIMIT_S = {"baseline": 90.0, "ledger_batch": 120.0, "e2e": 420.0, "latency": 150.0, "scale": 330.0,
                "webhook_intake": 150.0, "explain": 240.0, "sandbox_reads": 200.0}
"""Per benchmark, a safety net (each benchmark bounds its own passes well inside it); a benchmark past
it is stopped and reported as failed."""
PROFILE_N = 1_000


def _runner(name: str, baseline: float | None) -> Callable[[bool], Awaitable[list[Figure]]]:
    if name == "baseline":
        from bench import baseline as module_baseline

        return lambda quick: module_baseline.run(quick=quick)
    if name == "ledger_batch":
        from bench import ledger_batch

        return lambda quick: ledger_batch.run(quick=quick)
    if name == "webhook_intake":
        from bench import webhook_intake

        return lambda quick: webhook_intake.run(quick=quick)
    if name == "sandbox_reads":
        from bench import sandbox_reads

        return lambda quick: sandbox_reads.run(quick=quick)
    if name == "latency":
        from bench import latency

        return lambda quick: latency.run(quick=quick)
    if name == "explain":
        return _explain
    if name == "scale":
        from bench import scale

        return lambda quick: scale.run(quick=quick)
    from bench import e2e

    return lambda quick: e2e.run(quick=quick, baseline=baseline)


async def _explain(quick: bool) -> list[Figure]:
    """``syncd explain`` on one appointment with 1,000 history entries (quick: a smaller ledger),
    SQLite and PostgreSQL: the median of the best round is the hard figure."""
    from bench import explain

    out: list[Figure] = []
    for postgres in (False, True):
        got = await explain.figures(quick=quick, postgres=postgres)
        out.append(Figure("explain", f"explain, 1,000 entries, {got['appointments']:,} appointments "
                          f"({got['database']}), median", got["median_ms"], "ms", target=got["target_ms"],
                          hard=True, lower_is_better=True, extra=dict(got)))
    return out


async def run_all(names: Sequence[str], quick: bool) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    failures: list[str] = []
    baseline: float | None = None
    for name in names:
        started = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        limit = TIME_LIMIT_S[name]
        try:
            got = await asyncio.wait_for(_runner(name, baseline)(quick), limit)
            figures += got
            write_results(name, got, quick=quick, seconds=time.monotonic() - started)
            if name == "baseline" and got:
                baseline = got[0].value
        except TimeoutError:
            failures.append(f"{name}: stopped after {limit:.0f} s")
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        print(f"  {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return figures, failures


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _md(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(figures: Sequence[Figure], failures: Sequence[str], header: str) -> str:
    """The run as a Markdown table (bench/README.md and README.md "Performance" quote it)."""
    lines = [header, "", "| benchmark | figure | value | unit | target | |", "|---|---|---:|---|---|---|"]
    for f in figures:
        target = "-" if f.target is None else ("≤ " if f.lower_is_better else "≥ ") + _md(f.target)
        verdict = {None: "", True: "ok", False: "**missed**" if f.hard else "below"}[f.met]
        if not f.complete:
            verdict += " (stopped)"
        lines.append(f"| {f.bench} | {f.name} | {_md(f.value)} | {f.unit} | {target} | {verdict} |")
    missed = [f for f in figures if f.hard and f.met is False]
    hard = [f for f in figures if f.hard and f.target is not None]
    lines += ["", f"{len(missed)} of {len(hard)} hard targets missed."]
    lines += [f"Benchmark failed: {x}" for x in failures]
    return "\n".join(lines) + "\n"


async def profile() -> int:
    """pyinstrument over the first pass and the update pass (Zoho CRM -> Salesforce, SQLite)."""
    from bench import e2e

    out = RESULTS / "profile"
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread((out / "COMMIT").write_text, f"commit {commit()}\n", encoding="utf-8")
    figures = await e2e.run(n=PROFILE_N, pairs=[e2e.PAIRS[0]], backends=["sqlite"], baseline=None, profile=out,
                            budgets={"create": 600.0, "noop": 120.0, "update": 300.0})
    print_table(figures)
    from bench.docs import profile_excerpt

    for report in sorted(out.glob("*-total.txt")):
        print(f"\n== {report.relative_to(ROOT)} (syncd's functions by total time; the call tree is beside it) ==")
        print(profile_excerpt(report.read_text(encoding="utf-8"), lines=40, only_ours=True))
    print("\npython -m bench.docs copies these into bench/README.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="syncd benchmarks (make bench)")
    parser.add_argument("--quick", action="store_true", help="smaller counts, one pair, SQLite (under a minute)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--profile", action="store_true",
                        help=f"profile the first and update passes (N = {PROFILE_N:,}) with pyinstrument")
    args = parser.parse_args(argv)
    if args.profile:
        return asyncio.run(profile())
    default = QUICK if args.quick else DEFAULT
    names = [n for n in BENCHMARKS if (n in args.only if args.only else n in default)]
    load1, _, _ = os.getloadavg()
    started = time.monotonic()
    figures, failures = asyncio.run(run_all(names, args.quick))
    header = (f"syncd benchmarks{' (quick)' if args.quick else ''}, commit {commit()}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} CPUs, load average "
              f"{load1:.2f} at start, {time.monotonic() - started:.0f} s")
    print(header)
    code = print_table(figures, failures=failures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({
        "header": header, "quick": args.quick, "exit_code": code, "failures": failures,
        "missed": [f"{f.bench}: {f.name}" for f in figures if f.hard and f.met is False],
    }, indent=2) + "\n", encoding="utf-8")
    if not args.only:
        name = "latest-quick.md" if args.quick else "latest.md"
        Path(RESULTS / name).write_text(markdown(figures, failures, header), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
