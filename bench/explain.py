"""``syncd explain`` latency: one appointment with 1,000 lineage entries on a 100,000-appointment ledger.

Builds an SQLite ledger (a file in a temporary directory, migrated by alembic like any ledger) holding
100,000 appointments, each with two links and three lineage entries, plus one appointment with 1,000
lineage entries; then times what ``syncd explain REF --json`` does after the interpreter has started:
open the ledger, check its schema revision, run :func:`syncd.lineage.explain` (the query the console's
appointment page runs too) and serialise the document. Best of 3 rounds of 20 calls each, by
canonical id and by ``NAME:EXTERNAL_ID``; the figure is the median of the best round (the slowest
call of that round is printed beside it, without a target: on a shared machine it measures the
neighbours).

Target (issue 19): **hard: < 100 ms**. Exit 1 on a miss, 0 otherwise.

Self-contained (no import from the rest of ``bench``): ``python -m bench.explain [--quick]``;
``--quick`` builds 10,000 appointments instead (a smoke run, not a figure to quote). ``--postgres``
measures on PostgreSQL (``SYNCD_BENCH_PG``, else ``SYNCD_TEST_PG``, else
``postgresql://postgres@127.0.0.1:5432``; a new database, dropped afterwards) instead of SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from syncd.config import Config, parse_config
from syncd.ledger.models import AppointmentRow, LineageEntry, Link
from syncd.ledger.store import Ledger
from syncd.lineage import explain

__all__ = ["TARGET_MS", "figures", "main", "measure", "run"]

TARGET_MS = 100.0
APPOINTMENTS = 100_000
QUICK_APPOINTMENTS = 10_000
HISTORY = 1_000
PER_APPOINTMENT = 3
ROUNDS = 3
CALLS = 20
CHUNK = 5_000
SUBJECT = "apt_BENCH_EXPLAIN"
FIELDS = ("status", "start", "end", "patient", "practitioner", "location", "service_type", "description", "notes",
          "cancellation_reason")


def _config(url: str) -> Config:
    return parse_config({
        "ledger": {"url": url},
        "connectors": {
            "zoho": {"type": "zoho_crm", "base_url": "http://127.0.0.1:9", "accounts_url": "http://127.0.0.1:9",
                     "client_id": "c", "client_secret": "s", "refresh_token": "r"},
            "dent": {"type": "dentally", "base_url": "http://127.0.0.1:9", "access_token": "t", "user_agent": "u"},
        },
        "sync": [{"name": "g", "members": ["zoho", "dent"]}],
    })


def _snapshot(n: int) -> dict[str, Any]:
    start = datetime(2030, 1, 7, 8, tzinfo=UTC) + timedelta(minutes=30 * (n % 5000))
    return {"status": "booked", "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{start + timedelta(minutes=30):%Y-%m-%dT%H:%M:%SZ}", "patient": f"P-{n % 9000:05d}",
            "practitioner": f"DR-{n % 20:03d}", "location": "LOC-1", "service_type": "SVC-1", "description": None,
            "notes": "invented bench note", "cancellation_reason": None, "native_status": "Confirmed", "extra": {}}


def _entries(cid: str, count: int, at: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        kind = ("read", "merge", "write")[i % 3]
        sources = {}
        if kind == "merge":
            field = FIELDS[i % len(FIELDS)]
            sources = {field: {"source": "zoho", "changed_at": f"{at:%Y-%m-%dT%H:%M:%SZ}", "rule": "only_change"}}
        rows.append({"at": at + timedelta(seconds=i), "canonical_id": cid, "kind": kind, "action": kind,
                     "connector": "dent" if kind == "write" else "zoho", "fields": ["notes"], "outcome": "ok",
                     "rule": "only_change" if sources else None, "detail": f"as 9{i:08d}", "sources": sources})
    return rows


async def build(ledger: Ledger, appointments: int) -> None:
    """Fill the ledger: ``appointments`` appointments (two links and three lineage entries each) and the
    subject with :data:`HISTORY` entries."""
    at = datetime.now(UTC) - timedelta(days=30)
    now = datetime.now(UTC)
    appt_t, link_t = AppointmentRow.__table__, Link.__table__  # type: ignore[attr-defined]
    lineage_t = LineageEntry.__table__  # type: ignore[attr-defined]
    for first in range(0, appointments, CHUNK):
        ids = range(first, min(first + CHUNK, appointments))
        appts = [{"canonical_id": f"apt_{n:08d}", "sync_group": "g", "snapshot": _snapshot(n),
                  "fingerprint": f"{n:016x}", "slot_key": None, "updated_at": now, "claimed_by": None,
                  "claimed_until": None} for n in ids]
        links = [{"canonical_id": f"apt_{n:08d}", "connector": name, "external_id": f"{prefix}{n}",
                  "version": "1", "fingerprint": None, "written_fingerprint": None, "written_version": None,
                  "modified_at": now, "seen": None, "retired": False, "created_at": now, "updated_at": now}
                 for n in ids for name, prefix in (("zoho", "55459740000"), ("dent", "7"))]
        history = [row for n in ids for row in _entries(f"apt_{n:08d}", PER_APPOINTMENT, at)]
        async with ledger.transaction() as tx:
            await tx.conn.execute(sa.insert(appt_t), appts)
            await tx.conn.execute(sa.insert(link_t), links)
            await tx.conn.execute(sa.insert(lineage_t), history)
    async with ledger.transaction() as tx:
        await tx.conn.execute(sa.insert(appt_t), [{"canonical_id": SUBJECT, "sync_group": "g",
                                                   "snapshot": _snapshot(1), "fingerprint": "f", "slot_key": None,
                                                   "updated_at": now, "claimed_by": None, "claimed_until": None}])
        await tx.conn.execute(sa.insert(link_t), [{
            "canonical_id": SUBJECT, "connector": "zoho", "external_id": "SUBJECT-1", "version": "9",
            "fingerprint": None, "written_fingerprint": None, "written_version": None, "modified_at": now,
            "seen": None, "retired": False, "created_at": now, "updated_at": now}])
        await tx.conn.execute(sa.insert(lineage_t), _entries(SUBJECT, HISTORY, at))
    if ledger.dialect == "postgresql":
        async with ledger.transaction() as tx:
            await tx.conn.execute(sa.text("ANALYZE"))


async def _one_call(config: Config, ref: str) -> float:
    """What the command does once the interpreter runs: open, check the revision, explain, serialise."""
    started = time.perf_counter()
    ledger = await Ledger.open(config.ledger.url, create=False)
    try:
        if await ledger.revision() != Ledger.head_revision():
            raise RuntimeError("ledger not at the newest revision")
        document = await explain(config, ledger, ref)
    finally:
        await ledger.close()
    if document is None or len(document["history"]) != HISTORY:
        raise RuntimeError(f"explain found {0 if document is None else len(document['history'])} entries")
    json.dumps(document, sort_keys=True, default=str)
    return (time.perf_counter() - started) * 1000.0


async def measure(config: Config) -> dict[str, float]:
    """Best of :data:`ROUNDS` rounds (by median) of :data:`CALLS` calls, alternating both kinds of REF."""
    rounds = []
    for _ in range(ROUNDS):
        times = [await _one_call(config, SUBJECT if i % 2 == 0 else "zoho:SUBJECT-1") for i in range(CALLS)]
        rounds.append(times)
    best = min(rounds, key=statistics.median)
    return {"median_ms": statistics.median(best), "max_ms": max(best)}


@asynccontextmanager
async def _ledger_url(postgres: bool) -> AsyncIterator[str]:
    if not postgres:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-explain-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}"
        return
    import asyncpg

    base = os.environ.get("SYNCD_BENCH_PG") or os.environ.get("SYNCD_TEST_PG") or "postgresql://postgres@127.0.0.1:5432"
    name = f"syncd_bench_explain_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(f"{base}/postgres", timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}"
    finally:
        admin = await asyncpg.connect(f"{base}/postgres", timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def figures(*, quick: bool = False, postgres: bool = False) -> dict[str, Any]:
    """Build the ledger and measure: ``{"median_ms", "max_ms", "target_ms", "ok", "appointments",
    "entries", "built_s", "database"}`` (``ok``: the median is under the target). For a suite runner
    that prints its own table."""
    appointments = QUICK_APPOINTMENTS if quick else APPOINTMENTS
    async with _ledger_url(postgres) as url:
        config = _config(url)
        ledger = await Ledger.open(url)
        try:
            await ledger.upgrade()
            started = time.perf_counter()
            await build(ledger, appointments)
            built_s = time.perf_counter() - started
        finally:
            await ledger.close()
        measured = await measure(config)
    return {**measured, "target_ms": TARGET_MS, "ok": measured["median_ms"] < TARGET_MS,
            "appointments": appointments, "entries": appointments * PER_APPOINTMENT + HISTORY, "built_s": built_s,
            "database": "postgresql" if postgres else "sqlite"}


async def run(*, quick: bool = False, postgres: bool = False) -> int:
    """Measure and print the figures beside the target; 0 when met, 1 on a miss."""
    result = await figures(quick=quick, postgres=postgres)
    print(f"explain bench ({result['database']}): {result['appointments']:,} appointments, "
          f"{result['entries']:,} lineage entries, built in {result['built_s']:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'figure':<44} {'value':>10}  target")
    print(f"{'explain (1,000 entries), median of 20':<44} {result['median_ms']:>8.1f} ms  < {TARGET_MS:.0f} ms (hard)")
    print(f"{'explain (1,000 entries), slowest of 20':<44} {result['max_ms']:>8.1f} ms  (no target)")
    print("result: ok" if result["ok"] else "result: TARGET MISSED")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_APPOINTMENTS:,} appointments (smoke run)")
    parser.add_argument("--postgres", action="store_true", help="measure on PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    return asyncio.run(run(quick=args.quick, postgres=args.postgres))


if __name__ == "__main__":
    sys.exit(main())
