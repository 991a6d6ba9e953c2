"""Passes over the connectors: ``resync``, the webhook inbox drain, and the one read loop that both
``resync`` and the daemon's polls use (:func:`read_changes`).

Each opens what it needs through the composition root (:mod:`syncd.runtime`) or is handed the
daemon's engine; the engine itself (:mod:`syncd.engine`) never opens anything.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd import lineage, metrics
from syncd.config import Config
from syncd.engine.core import Decision, Engine
from syncd.engine.holders import holder_name
from syncd.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, RateLimited, VendorError
from syncd.inbox import decode_delivery
from syncd.ledger.models import InboxItem
from syncd.ledger.store import Ledger
from syncd.logging import get_logger
from syncd.runtime import open_runtime

__all__ = ["RESYNC_MAX_WAIT", "PassResult", "ReadPass", "drain_inbox", "read_changes", "read_ids", "resync"]

log = get_logger("syncd.runner")

RESYNC_MAX_WAIT = 120.0
"""``resync`` waits at most this long for one vendor (docs/reference.md §7)."""



@dataclass
class PassResult:
    exit_code: int
    document: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)


async def drain_inbox(engine: Engine, *, limit: int = 500, items: Sequence[InboxItem] | None = None) -> int:
    """Process stored webhook deliveries: every id is re-read (batched), deletions included.

    A delivery never decides content, nor a deletion: a deletion event is confirmed by the vendor's own
    read before anything is cancelled (docs/vendors/README.md, each vendor guide's §2). The connector's
    read answers "deleted" only the way its vendor confirms one (a GET 404, a batch read that no longer
    returns the id, a batch null confirmed by a GET 404); a
    record that is still readable is handled as an update, so a forged, stale or misdirected deletion
    cancels nothing. ``items``: these deliveries (claimed by the caller) instead of the oldest pending ones."""
    processed = 0
    if items is None:
        async with engine.ledger.transaction(readonly=True) as tx:
            items = await tx.inbox_pending(limit=limit)
    by_connector: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        if item.connector in engine.connectors:
            by_connector[item.connector].append(item)
    for name, batch in by_connector.items():
        connector = engine.connectors[name]
        read_ids: list[str] = []
        claimed_deleted: set[str] = set()
        good = []
        for item in batch:
            try:
                events = decode_delivery(item.body)
            except ValueError as exc:  # a corrupt row must not block the inbox
                async with engine.ledger.transaction() as tx:
                    await tx.inbox_mark_failed([item.id] if item.id is not None else [], f"undecodable: {exc}")
                    await tx.inbox_mark_done([item.id] if item.id is not None else [])
                continue
            good.append(item)
            for event in events:
                read_ids.append(event.external_id)
                if event.deleted:
                    claimed_deleted.add(event.external_id)
        batch = good
        try:
            found = await connector.read(sorted(set(read_ids))) if read_ids else {}
        except VendorError as exc:
            async with engine.ledger.transaction() as tx:
                await tx.inbox_mark_failed([i.id for i in batch if i.id is not None], exc.describe())
            log.warning("inbox_read_failed", connector=name, kind=exc.kind, code=exc.code)
            continue
        records = list(found.values())
        _log_deletion_checks(name, claimed_deleted, found)
        await engine.process_page(name, records)
        if not engine.dry_run:
            async with engine.ledger.transaction() as tx:
                await tx.inbox_mark_done([i.id for i in batch if i.id is not None])
        processed += len(batch)
    return processed


def _log_deletion_checks(name: str, claimed: set[str], found: Mapping[str, Any]) -> None:
    """One log line per deletion event: confirmed by the re-read, or refuted (the record lives)."""
    for external_id in sorted(claimed):
        record = found.get(external_id)
        confirmed = record is not None and record.deleted
        log.info("webhook_deletion_confirmed" if confirmed else "webhook_deletion_refuted", connector=name,
                 external_id=external_id, op="inbox")


@dataclass
class ReadPass:
    """How far one read of a connector's changes got."""

    pages: int = 0
    cursor: str | None = None
    """The last cursor a page carried (stored with that page), else the one the pass started from."""
    complete: bool = False
    """Read to its end (not interrupted, and its connector not stopped)."""


async def read_changes(engine: Engine, name: str, *, cursor: str | None = None, since: datetime | None = None,
                       set_cursor: bool = True, interrupted: Callable[[], bool] = lambda: False) -> ReadPass:
    """The one read loop (``resync`` and the daemon's polls): ``name``'s changes after ``cursor`` (or
    ``since`` an instant), or its whole window when both are None. Each page is reconciled and its
    cursor stored in the page's own transaction (:meth:`Engine.process_page`), so the cursor is saved
    once, after its page. A whole window read to its end is swept for the records it no longer lists
    and releases the creates held for it (onboarding: :meth:`Engine.window_read`)."""
    connector = engine.connectors[name]
    full = cursor is None and since is None
    result = ReadPass(cursor=cursor)
    seen: set[str] = set()
    if full:
        engine.begin_window(name)
    async for page in connector.changes(cursor, since=since):
        result.pages += 1
        seen.update(r.external_id for r in page.records)
        seen.update(page.deleted_ids)
        await engine.process_page(name, page.records, page.deleted_ids, cursor=page.cursor, set_cursor=set_cursor)
        if page.cursor is not None:
            result.cursor = page.cursor
        if name in engine.stats.stopped or interrupted():
            return result
    if full:
        await engine.sweep_missing(name, seen)
        await engine.window_read(name)
    result.complete = True
    return result


async def read_ids(engine: Engine, ids: Sequence[tuple[str, str]]) -> None:
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, external_id in ids:
        grouped[name].append(external_id)
    for name, external_ids in grouped.items():
        records = await engine.connectors[name].read(external_ids)
        await engine.process_page(name, [records[e] for e in external_ids if e in records])


def _document(engine: Engine, started: float, totals: Mapping[str, int], exit_code: int) -> dict[str, Any]:
    connectors: dict[str, Any] = {}
    for name in engine.connectors:
        stats = engine.stats.of(name)
        stats.api_calls = engine.api_calls(name)
        stats.retried += engine.http_retries(engine.connectors[name])
        connectors[name] = stats.as_dict()
    doc: dict[str, Any] = {
        "ok": exit_code == EXIT_OK,
        "dry_run": engine.dry_run,
        "duration_s": round(time.monotonic() - started, 3),
        "connectors": connectors,
        "dead_letters": int(totals.get("dead_letters", 0)),
        "open_conflicts": int(totals.get("open_conflicts", 0)),
    }
    if engine.stats.stopped:
        doc["stopped"] = dict(engine.stats.stopped)
    queued = {name: n for name, n in sorted(engine.stats.requeued.items()) if n}
    if queued:
        doc["requeued"] = queued  # writes that failed after retries and wait in the outbox for the next pass
    if engine.stats.claimed_elsewhere:
        doc["claimed_elsewhere"] = dict(sorted(engine.stats.claimed_elsewhere.items()))
    return doc


async def resync(
    config: Config,
    *,
    connectors: Sequence[str] = (),
    since: datetime | None = None,
    ids: Sequence[tuple[str, str]] = (),
    dry_run: bool = False,
    on_decision: Callable[[Decision], None] | None = None,
    on_new_ledger: Callable[[str], None] | None = None,
) -> PassResult:
    """One full pass now (docs/reference.md §4 ``resync``): read, reconcile, write; then the exit code."""
    started = time.monotonic()
    decisions: list[Decision] = []

    def record(decision: Decision) -> None:
        decisions.append(decision)
        if on_decision is not None:
            on_decision(decision)

    async with open_runtime(config, max_rate_limit_wait=RESYNC_MAX_WAIT, on_new_ledger=on_new_ledger) as rt:
        engine = Engine(config, rt.ledger, rt.connectors, dry_run=dry_run, holder=holder_name("resync"),
                        on_decision=record)
        selected = list(connectors) or list(config.connectors)
        await _read_all(engine, selected, since=since, ids=ids)
        if not dry_run:
            pruned = await lineage.prune(rt.ledger, config.ledger.history_days)
            if pruned:
                log.info("lineage_pruned", count=pruned)
        async with rt.ledger.transaction(readonly=True) as tx:
            totals = await tx.totals()
        exit_code = _exit_code(engine, totals)
        document = _document(engine, started, totals, exit_code)
        if rt.ledger_created:
            document["ledger_created"] = True
        if not dry_run:
            await _record_pass(rt.ledger, engine, sorted({name for name, _ in ids}) if ids else selected)
            await metrics.record_resync(rt.ledger, exit_code, document)  # for `status` and /metrics
        return PassResult(exit_code, document, decisions)


async def _read_all(engine: Engine, selected: Sequence[str], *, since: datetime | None,
                    ids: Sequence[tuple[str, str]]) -> None:
    """What a resync reads: queued work first (outbox, inbox), then the given ids or every selected
    connector's window (or its changes ``since``); a connector that fails stops, the others go on."""
    if not engine.dry_run:
        await engine.drain_outbox(selected)
        await drain_inbox(engine)
    if ids:
        try:
            await read_ids(engine, ids)
        except VendorError as exc:
            engine.stop(exc.connector or ids[0][0], exc)
        return
    for name in selected:
        if name in engine.stats.stopped:
            continue
        try:
            await read_changes(engine, name, since=since, set_cursor=not engine.dry_run)
        except (RateLimited, VendorError) as exc:
            engine.stop(name, exc)


def _exit_code(engine: Engine, totals: Mapping[str, int]) -> int:
    if engine.stats.stopped or any(engine.stats.requeued.values()):
        return EXIT_UNAVAILABLE  # a vendor unreachable (or one write failing) after retries: it stays queued
    if totals.get("dead_letters", 0) or totals.get("open_conflicts", 0) or engine.stats.claimed_elsewhere:
        return EXIT_PARTIAL  # claimed elsewhere: work another live process holds was left to it
    if engine.dry_run and (engine.stats.total("dead_lettered") or engine.stats.total("conflicts")):
        return EXIT_PARTIAL  # what the pass would leave behind
    return EXIT_OK


async def _record_pass(ledger: Ledger, engine: Engine, read: Sequence[str]) -> None:
    """Leave the pass's outcome where ``syncd status`` (and the daemon's lag) see it: for each connector
    read or stopped, a success or a failure in its read-outcome record. (The pass's counts are stored
    by :func:`syncd.metrics.record_resync`, which both ``status`` and ``/metrics`` read.)"""
    now = datetime.now(UTC)
    async with ledger.transaction() as tx:
        for name in dict.fromkeys([*read, *engine.stats.stopped]):
            why = engine.stats.stopped.get(name)
            error = engine.stop_errors.get(name)
            await tx.record_read_outcome(name, source="resync", error=why, at=now,
                                         kind=error.kind if error is not None else None,
                                         config_key=error.config_key if error is not None else None)


