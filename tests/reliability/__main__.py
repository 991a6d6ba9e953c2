"""``python -m tests.reliability [--quick]``: the reliability table (``make reliability``).

Runs SQLite with one replica, then PostgreSQL with two and with three replicas (one of them killed
over and over, then left dead while the survivors finish), prints one table and ends with
``lost=N duplicated=N converged=P%``; exits 1 unless that reads 0, 0 and 100 %.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.reliability.harness import Result, Scenario, run_scenario

FULL = (
    Scenario("sqlite-1", database="sqlite", replicas=1, changes=300, kills=24, hard_kills=6, seconds=150),
    Scenario("postgres-2", database="postgres", replicas=2, changes=300, kills=20, hard_kills=6, seconds=150),
    Scenario("postgres-3", database="postgres", replicas=3, changes=300, kills=20, hard_kills=6, seconds=150),
)
QUICK = (
    Scenario("sqlite-1", database="sqlite", replicas=1, changes=40, kills=8, hard_kills=2, seconds=30,
             settle_seconds=60),
    Scenario("postgres-2", database="postgres", replicas=2, changes=40, kills=6, hard_kills=2, seconds=30,
             settle_seconds=60),
    Scenario("postgres-3", database="postgres", replicas=3, changes=40, kills=6, hard_kills=2, seconds=30,
             settle_seconds=60),
)
HEADER = ("scenario", "replicas", "kills", "faults", "changes", "appointments", "lost", "duplicated", "converged",
          "conflicts", "seconds")


def table(results: list[Result]) -> str:
    rows = [HEADER]
    for r in results:
        rows.append((r.scenario.name, str(r.scenario.replicas), f"{r.kills + r.hard_kills}", str(r.faults),
                     str(r.changes), str(r.appointments), str(r.lost), str(r.duplicated), f"{r.converged:.1f}%",
                     str(r.conflicts), f"{r.seconds:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def summary(results: list[Result]) -> str:
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    converged = min((r.converged for r in results), default=100.0)
    return f"lost={lost} duplicated={duplicated} converged={converged:g}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer kills and changes (under 5 minutes)")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledger)")
    args = parser.parse_args(argv)
    chosen = [s for s in (QUICK if args.quick else FULL) if not args.only or s.name in args.only]
    work = Path(tempfile.mkdtemp(prefix="syncd-reliability-"))
    results: list[Result] = []
    for scenario in chosen:
        print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
        result = asyncio.run(run_scenario(scenario, work / scenario.name))
        results.append(result)
        for problem in result.problems[:20]:
            print(f"  {scenario.name}: {problem}", file=sys.stderr)
        if len(result.problems) > 20:
            print(f"  {scenario.name}: ... {len(result.problems) - 20} more", file=sys.stderr)
    print(table(results))
    print(summary(results))
    if args.keep or not all(r.ok for r in results):
        print(f"work directory (logs, ledgers): {work}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
