"""``python -m bench`` (``make bench``): run every benchmark and print one table of figures.

Each figure shows its target where there is one. Exit status 1 when a hard target is missed (a
sandbox serving fewer than 2,000 simple reads/s) or when a benchmark could not run; 0 otherwise.
Soft targets (reference figures) are shown as ``below (soft)`` and do not fail the run.

Options: ``--quick`` (smaller counts, for a smoke run), ``--only NAME`` (repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence

from bench import Figure, print_table

BENCHMARKS = ("sandbox_reads", "ledger_batch", "webhook_intake", "e2e")
TIME_LIMIT_S = 150.0
"""Per benchmark; a benchmark past it is stopped and reported as failed."""


def _runner(name: str) -> Callable[[bool], Awaitable[list[Figure]]]:
    if name == "sandbox_reads":
        from bench import sandbox_reads

        return lambda quick: sandbox_reads.run(quick=quick)
    if name == "ledger_batch":
        from bench import ledger_batch

        return lambda quick: ledger_batch.run(quick=quick)
    if name == "webhook_intake":
        from bench import webhook_intake

        return lambda quick: webhook_intake.run(quick=quick)
    from bench import e2e

    return lambda quick: e2e.run(quick=quick)


async def run_all(names: Sequence[str], quick: bool) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    failures: list[str] = []
    for name in names:
        started = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            figures += await asyncio.wait_for(_runner(name)(quick), TIME_LIMIT_S)
        except TimeoutError:
            failures.append(f"{name}: stopped after {TIME_LIMIT_S:.0f} s")
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        print(f"  {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return figures, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="syncd benchmarks (make bench)")
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, not figures to quote)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these (repeatable): {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    load1, _, _ = os.getloadavg()
    started = time.monotonic()
    figures, failures = asyncio.run(run_all(names, args.quick))
    print(
        f"syncd benchmarks: {os.cpu_count()} CPUs, load average {load1:.2f} at start, "
        f"{time.monotonic() - started:.0f} s{' (quick)' if args.quick else ''}"
    )
    return print_table(figures, failures=failures)


if __name__ == "__main__":
    sys.exit(main())
