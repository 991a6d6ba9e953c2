"""Ledger batch throughput: a page of 500 records in one transaction vs one transaction per record.

Each record costs what the engine stores for a new appointment read from a source and planned for one
target: the page's lookups (links by external id, merge bases by canonical id), then its merge base,
its source link, one queued write (plus the read-back of the stored outbox rows), one audit entry and
the source cursor, all through :class:`syncd.ledger.store.Tx` (the ledger's only code path).

- ``page``: 500 records per transaction (the ledger's batch-first design);
- ``per-record``: the same work, one record per transaction (what a naive writer would do).

Measured on SQLite (a file in a temporary directory, WAL) and on PostgreSQL when reachable (a new
database, dropped afterwards). Best of 3 runs of the page path, one run of the per-record path,
bounded in count and time. Hard target: the page path stores >= 10,000 records/s on each backend
(the per-record figure is shown beside it).

Run alone: ``python -m bench.ledger_batch [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bench import Figure, pg_database, pg_reachable, print_table, sqlite_ledger_url, write_results
from syncd.ledger.models import AppointmentRow, AuditEntry, Link, OutboxItem
from syncd.ledger.store import Ledger
from syncd.model import Appointment, Status

__all__ = ["PAGE", "run", "store_page"]

BENCH = "ledger_batch"
PAGE = 500
PAGES = 4
QUICK_PAGES = 2
SINGLES = 100
QUICK_SINGLES = 50
RUNS = 3
MAX_SECONDS = 20.0
TARGET_RECORDS_PER_S = 10_000.0
"""Hard target (issue 16): the batched path stores at least 10,000 records/s on SQLite and PostgreSQL."""
SOURCE = "src"
TARGET = "dst"


def _appointment(n: int) -> Appointment:
    start = datetime(2030, 1, 7, 8, tzinfo=UTC) + timedelta(hours=n % 2000)
    return Appointment(
        status=Status.BOOKED,
        start=start,
        end=start + timedelta(minutes=30),
        patient=f"P-{n % 5000:05d}",
        practitioner=f"DR-{n % 20:03d}",
        location="LOC-1",
        service_type="SVC-1",
        notes="invented bench note",
        native_status="Confirmed",
    )


async def store_page(ledger: Ledger, records: Sequence[tuple[str, str, Appointment]], cursor: str) -> None:
    """One transaction storing ``records`` ((canonical id, source external id, appointment)) the way
    the engine stores a page: bulk lookups, then a handful of bulk writes and the cursor."""
    async with ledger.transaction() as tx:
        await tx.links_for(SOURCE, [ext for _, ext, _ in records])
        await tx.appointments([cid for cid, _, _ in records])
        await tx.save_appointments(
            AppointmentRow(canonical_id=cid, sync_group="g", snapshot=appt.to_json(), fingerprint=appt.fingerprint())
            for cid, _, appt in records
        )
        await tx.upsert_links(
            Link(canonical_id=cid, connector=SOURCE, external_id=ext, version="1", fingerprint=appt.fingerprint())
            for cid, ext, appt in records
        )
        outbox = [
            OutboxItem(idempotency_key=f"{cid}:{TARGET}:create:1", canonical_id=cid, connector=TARGET, op="create",
                       payload={"appointment": appt.to_json()})
            for cid, _, appt in records
        ]
        await tx.outbox_add(outbox)
        await tx.outbox_by_keys([o.idempotency_key for o in outbox])
        await tx.add_audit(
            AuditEntry(canonical_id=cid, connector=SOURCE, action="created", fields=["status", "start", "end"],
                       fingerprint_after=appt.fingerprint())
            for cid, _, appt in records
        )
        await tx.set_cursor(SOURCE, cursor)


def _records(count: int) -> list[tuple[str, str, Appointment]]:
    tag = uuid.uuid4().hex[:8]
    return [(f"apt_{tag}_{i:06d}", f"{tag}-{i}", _appointment(i)) for i in range(count)]


async def _paged(ledger: Ledger, pages: int) -> float:
    records = _records(PAGE * pages)
    started = time.perf_counter()
    done = 0
    for p in range(pages):
        await store_page(ledger, records[p * PAGE : (p + 1) * PAGE], f"cursor-{p}")
        done += PAGE
        if time.perf_counter() - started > MAX_SECONDS:
            break
    return done / (time.perf_counter() - started)


async def _singles(ledger: Ledger, count: int) -> float:
    records = _records(count)
    started = time.perf_counter()
    done = 0
    for i, record in enumerate(records):
        await store_page(ledger, [record], f"cursor-{i}")
        done += 1
        if time.perf_counter() - started > MAX_SECONDS:
            break
    return done / (time.perf_counter() - started)


async def measure(url: str, label: str, *, quick: bool) -> list[Figure]:
    ledger = await Ledger.open(url)
    try:
        await ledger.upgrade()
        await _paged(ledger, 1)  # warm-up: connections, statement caches
        runs = 1 if quick else RUNS
        paged = max([await _paged(ledger, QUICK_PAGES if quick else PAGES) for _ in range(runs)])
        singles = await _singles(ledger, QUICK_SINGLES if quick else SINGLES)
    finally:
        await ledger.close()
    return [
        Figure(BENCH, f"{label}: page of {PAGE} per transaction", paged, "records/s", TARGET_RECORDS_PER_S,
               hard=True, note=f"best of {runs}"),
        Figure(BENCH, f"{label}: one transaction per record", singles, "records/s", note="one run"),
        Figure(BENCH, f"{label}: page / per-record speed-up", paged / singles if singles else None, "x"),
    ]


async def run(*, quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    async with sqlite_ledger_url() as url:
        figures += await measure(url, "SQLite", quick=quick)
    if await pg_reachable():
        async with pg_database() as url:
            figures += await measure(url, "PostgreSQL", quick=quick)
    else:
        figures.append(Figure(BENCH, "PostgreSQL", None, "", note="server not reachable: skipped"))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pages and records")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(quick=args.quick))
    write_results(BENCH, figures, quick=args.quick)
    return print_table(figures)


if __name__ == "__main__":
    sys.exit(main())
