"""Passes over the connectors: ``resync``, the inbox drain, dead-letter retries and conflict resolution.

These are the engine's entry points for the CLI and the daemon; each opens what it needs (ledger,
connectors) through :class:`Runtime` and closes it again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd import lineage, metrics
from syncd.config import Config
from syncd.connector import Connector, WriteKind, WriteRequest
from syncd.engine.core import Decision, Engine
from syncd.engine.holders import holder_name
from syncd.engine.onboard import LINK_FIELD
from syncd.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, ConfigError, RateLimited, VendorError
from syncd.inbox import decode_delivery
from syncd.ledger.models import InboxItem, OutboxItem
from syncd.ledger.store import Ledger, ledger_location
from syncd.logging import get_logger
from syncd.model import Status
from syncd.registry import create_connector, validate_mappings

__all__ = [
    "PassResult",
    "ResolveResult",
    "Runtime",
    "discard_dead_letters",
    "new_ledger_notice",
    "open_runtime",
    "resolve_conflict",
    "resync",
    "retry_dead_letters",
]

log = get_logger("syncd.runner")

RESYNC_MAX_WAIT = 120.0
ORIGIN_CLI = "from the command line"
"""How an operator's action (retry, discard, resolve) is recorded in the lineage by default."""
"""``resync`` waits at most this long for one vendor (docs/reference.md §7)."""


@dataclass
class Runtime:
    config: Config
    ledger: Ledger
    connectors: dict[str, Connector]
    ledger_created: bool = False
    """The ledger had no schema when this runtime opened it: a new, empty ledger was created."""

    async def close(self) -> None:
        for connector in self.connectors.values():
            await connector.close()
        await self.ledger.close()


def check_mappings(config: Config) -> None:
    """Every mapping file in use loads and validates (a ConfigError otherwise)."""
    problems = validate_mappings(sorted({c.type for c in config.connectors.values()}))
    if problems:
        raise ConfigError(problems)


def new_ledger_notice(where: str) -> str:
    """What ``resync`` and ``run`` say on stderr when they create the ledger they were pointed at."""
    return (f"syncd: no ledger at {where}: creating a NEW, empty ledger there. If syncd ran before, check "
            "--config and [ledger] url (a relative SQLite path is resolved against the config file's "
            "directory). Appointments the systems already hold are linked to each other, not copied "
            "(onboarding); creates into a system wait until its window has been read once.")


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    max_rate_limit_wait: float | None = None,
    upgrade: bool = True,
    on_new_ledger: Callable[[str], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Open the ledger (creating or upgrading its schema) and build every configured connector.

    A ledger without a schema (a missing SQLite file, an empty PostgreSQL database) is created, as
    ``docs/reference.md §4`` says ``run`` and ``resync`` do; that is logged (``ledger_created``) and handed to
    ``on_new_ledger`` with where it is, so the command can say so plainly."""
    check_mappings(config)
    where = ledger_location(config.ledger.url)
    ledger = await Ledger.open(config.ledger.url)
    built: dict[str, Connector] = {}
    runtime = Runtime(config, ledger, built)
    try:
        if upgrade:
            if await ledger.revision() is None:
                runtime.ledger_created = True
                log.warning("ledger_created", path=where)
                if on_new_ledger is not None:
                    on_new_ledger(where)
            await ledger.upgrade()
        for name, cfg in config.connectors.items():
            built[name] = create_connector(cfg, state=ledger.state_store(name), max_rate_limit_wait=max_rate_limit_wait)
        yield runtime
    finally:
        await runtime.close()


@asynccontextmanager
async def _runtime_for(config: Config, runtime: Runtime | None, **options: Any) -> AsyncIterator[Runtime]:
    """``runtime`` itself when given (the daemon's ledger and connectors, left open), else a runtime
    opened for this call and closed after it (the CLI)."""
    if runtime is not None:
        yield runtime
        return
    async with open_runtime(config, **options) as opened:
        yield opened


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


async def _pass_over(engine: Engine, name: str, *, since: datetime | None, set_cursor: bool) -> None:
    """Read ``name``'s whole window (or what changed ``since``). A whole window read to its end also
    releases the creates held for it (onboarding: :meth:`Engine.window_read`)."""
    connector = engine.connectors[name]
    seen: set[str] = set()
    if since is None:
        engine.begin_window(name)
    async for page in connector.changes(None, since=since):
        seen.update(r.external_id for r in page.records)
        seen.update(page.deleted_ids)
        await engine.process_page(name, page.records, page.deleted_ids, cursor=page.cursor, set_cursor=set_cursor)
        if name in engine.stats.stopped:
            return
    if since is None:
        await engine.sweep_missing(name, seen)
        await engine.window_read(name)


async def _read_ids(engine: Engine, ids: Sequence[tuple[str, str]]) -> None:
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
        stats.api_calls = engine._api_calls(engine.connectors[name])
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
        if not dry_run:
            await engine.drain_outbox(selected)
            await drain_inbox(engine)
        if ids:
            try:
                await _read_ids(engine, ids)
            except VendorError as exc:
                engine._stop(exc.connector or ids[0][0], exc)
        else:
            for name in selected:
                if name in engine.stats.stopped:
                    continue
                try:
                    await _pass_over(engine, name, since=since, set_cursor=not dry_run)
                except RateLimited as exc:
                    engine._stop(name, exc)
                except VendorError as exc:
                    engine._stop(name, exc)
        if not dry_run:
            pruned = await lineage.prune(rt.ledger, config.ledger.history_days)
            if pruned:
                log.info("lineage_pruned", count=pruned)
        async with rt.ledger.transaction(readonly=True) as tx:
            totals = await tx.totals()
        if engine.stats.stopped:
            exit_code = EXIT_UNAVAILABLE
        elif totals.get("dead_letters", 0) or totals.get("open_conflicts", 0) or engine.stats.claimed_elsewhere:
            exit_code = EXIT_PARTIAL  # claimed elsewhere: work another live process holds was left to it
        elif dry_run and (engine.stats.total("dead_lettered") or engine.stats.total("conflicts")):
            exit_code = EXIT_PARTIAL  # what the pass would leave behind
        else:
            exit_code = EXIT_OK
        document = _document(engine, started, totals, exit_code)
        if rt.ledger_created:
            document["ledger_created"] = True
        if not dry_run:
            await _record_pass(rt.ledger, engine, sorted({name for name, _ in ids}) if ids else selected)
            await metrics.record_resync(rt.ledger, exit_code, document)  # for `status` and /metrics
        return PassResult(exit_code, document, decisions)


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


async def retry_dead_letters(
    config: Config, ids: Sequence[int] | None, *, runtime: Runtime | None = None, origin: str = ORIGIN_CLI
) -> tuple[int, list[dict[str, Any]]]:
    """Replay dead letters (all when ``ids`` is None). Returns (exit code, per-letter results).

    ``runtime``: the ledger and connectors to use (the daemon's, for the console); by default a
    runtime is opened for the call. Each retry is recorded in the appointment's lineage as done from
    ``origin``."""
    results: list[dict[str, Any]] = []
    async with _runtime_for(config, runtime, max_rate_limit_wait=RESYNC_MAX_WAIT) as rt:
        async with rt.ledger.transaction(readonly=True) as tx:
            letters = await tx.dead_letters(ids=ids)
        if ids is not None:
            missing = set(ids) - {dl.id for dl in letters}
            for mid in sorted(missing):
                results.append({"id": mid, "result": "unknown or already resolved"})
        for letter in letters:
            decisions: list[Decision] = []
            engine = Engine(config, rt.ledger, rt.connectors, holder=holder_name("retry"),
                            on_decision=decisions.append)
            phase = (letter.payload or {}).get("phase")
            try:
                if phase == "read" and letter.external_id:
                    await _read_ids(engine, [(letter.connector, letter.external_id)])
                elif phase == "write":
                    payload = dict(letter.payload["outbox"])
                    payload["attempt"] = 0
                    item = OutboxItem(idempotency_key=f"retry:{letter.id}:{letter.attempts}",
                                      canonical_id=letter.canonical_id or "", connector=letter.connector,
                                      op=str(letter.payload.get("op", "update")), payload=payload)
                    async with rt.ledger.transaction() as tx:
                        await tx.outbox_add([item])
                    pending = await _pending_item(rt.ledger, item.idempotency_key)
                    await engine.execute([pending] if pending is not None else [item])
                elif phase == "cancel_old" and letter.external_id:
                    await _retry_cancel_old(engine, letter.connector, letter.canonical_id or "", letter.external_id)
                else:
                    results.append({"id": letter.id, "result": "cannot be retried automatically"})
                    continue
            except VendorError as exc:
                engine._stop(letter.connector, exc)
            failed = engine.stats.stopped or any(
                d.action in ("dead_letter", "conflict") for d in decisions
            )
            async with rt.ledger.transaction() as tx:
                if failed:
                    await tx.touch_dead_letters([letter.id] if letter.id is not None else [])
                else:
                    await tx.resolve_dead_letters([letter.id] if letter.id is not None else [])
                cid = letter.canonical_id
                if cid is None and letter.external_id:
                    link = (await tx.links_for(letter.connector, [letter.external_id])).get(letter.external_id)
                    cid = link.canonical_id if link is not None else None
                if cid:
                    outcome = "failed again" if failed else "done"
                    await tx.add_lineage([lineage.action(cid, "retry", letter.connector, outcome,
                                                         f"dead letter {letter.id} ({letter.kind}) retried "
                                                         f"{origin}: {outcome}")])
            results.append({"id": letter.id, "result": "failed again" if failed else "done"})
        code = EXIT_PARTIAL if any(r["result"] != "done" for r in results) else EXIT_OK
        return code, results


async def _pending_item(ledger: Ledger, key: str) -> OutboxItem | None:
    async with ledger.transaction(readonly=True) as tx:
        for item in await tx.outbox_pending(limit=100_000, states=("pending",)):
            if item.idempotency_key == key:
                return item
    return None


async def _retry_cancel_old(engine: Engine, connector_name: str, canonical_id: str, external_id: str) -> None:
    connector = engine.connectors[connector_name]
    current = (await connector.read([external_id]))[external_id]
    if current.deleted or current.appointment is None or current.appointment.status.terminal:
        return
    reason = connector.capabilities.replace_reason
    desired = current.appointment.with_changes(status=Status.CANCELLED, cancellation_reason=reason)
    [outcome] = await connector.write([WriteRequest(WriteKind.CANCEL, canonical_id, desired, external_id=external_id,
                                                    current=current,
                                                    changed=frozenset({"status", "cancellation_reason"}))])
    if outcome.error is not None:
        engine._decide(Decision("dead_letter", connector_name, canonical_id, external_id, detail=str(outcome.error)))
    else:
        engine.stats.of(connector_name).cancelled += 1


@dataclass(frozen=True, slots=True)
class ResolveResult:
    """What ``syncd conflicts resolve`` did (or, in a dry run, would do)."""

    exit_code: int
    message: str
    document: dict[str, Any]


async def resolve_conflict(
    config: Config, conflict_id: int, take: str, *, dry_run: bool = False, runtime: Runtime | None = None,
    origin: str = ORIGIN_CLI,
) -> ResolveResult:
    result = await _resolve_conflict(config, conflict_id, take, dry_run=dry_run, runtime=runtime)
    cid = result.document.get("canonical_id")
    if not dry_run and result.exit_code == EXIT_OK and isinstance(cid, str) and cid:
        # a refusal changes nothing, in the ledger neither (the console records its own attempts)
        async with _ledger_for(config, runtime) as ledger, ledger.transaction() as tx:
            await tx.add_lineage([lineage.action(cid, "resolve", take, "done",
                                                 f"conflict {conflict_id}: took {take}'s version {origin}")])
    return result


async def _resolve_conflict(
    config: Config, conflict_id: int, take: str, *, dry_run: bool = False, runtime: Runtime | None = None
) -> ResolveResult:
    """Settle conflict ``conflict_id`` by taking connector ``take``'s current version of its field(s).

    Every member's record is read again and each target's connector says whether it can take that
    version; when one cannot, nothing is written, the conflict stays open and the answer names the
    reason and the ``--take`` that would work (exit 1). ``dry_run`` only shows the plan. See
    :mod:`syncd.engine.resolve`.

    ``runtime``: the ledger and connectors to use (the daemon's, for the console); by default a
    runtime is opened for the call."""
    if take not in config.connectors:
        raise ConfigError([f"--take: {take!r} is not a configured connector"])
    async with _runtime_for(config, runtime, max_rate_limit_wait=RESYNC_MAX_WAIT) as rt:
        async with rt.ledger.transaction(readonly=True) as tx:
            found = await tx.conflicts(ids=[conflict_id])
            if not found:
                message = f"conflict {conflict_id} is unknown or already resolved"
                return ResolveResult(EXIT_PARTIAL, message, {"conflict_id": conflict_id, "refused": True,
                                                             "reason": message})
            conflict = found[0]
            if conflict.field == LINK_FIELD:
                message = (f"conflict {conflict_id} is about which {conflict.values.get('connector')} "
                           f"record is appointment {conflict.canonical_id}, not a field value: {conflict.reason}")
                return ResolveResult(EXIT_PARTIAL, message, {"conflict_id": conflict_id, "refused": True,
                                                             "reason": message})
            links = (await tx.links_of([conflict.canonical_id])).get(conflict.canonical_id, [])
            row = (await tx.appointments([conflict.canonical_id])).get(conflict.canonical_id)
        engine = Engine(config, rt.ledger, rt.connectors, dry_run=dry_run, holder=holder_name("resolve"))
        try:
            plan = await engine.plan_resolution(conflict, take, links, row)
        except VendorError as exc:
            message = f"{exc.connector or take} could not be read ({exc.describe()}); nothing was written"
            return ResolveResult(EXIT_UNAVAILABLE, message, {"conflict_id": conflict_id, "refused": True,
                                                             "reason": message})
        document = plan.as_json(dry_run=dry_run)
        if plan.refused:
            log.info("resolve_refused", connector=take, canonical_id=conflict.canonical_id, op="resolve")
            return ResolveResult(EXIT_PARTIAL, plan.message(dry_run=dry_run), document)
        if dry_run:
            return ResolveResult(EXIT_OK, plan.message(dry_run=True), document)
        problem = await engine.take_version(plan, links)
        if problem is not None:
            document.update(refused=True, reason=problem)
            code = EXIT_UNAVAILABLE if engine.stats.stopped else EXIT_PARTIAL
            head = f"conflict {conflict_id} ({conflict.canonical_id}, {conflict.field}): taking {take}'s version"
            return ResolveResult(code, f"{head}: not resolved: {problem}", document)
        return ResolveResult(EXIT_OK, f"{plan.message(dry_run=False)}\nconflict {conflict_id} resolved: took {take}",
                             document)
async def discard_dead_letters(config: Config, ids: Sequence[int], *, ledger: Ledger | None = None,
                               origin: str = ORIGIN_CLI) -> int:
    """Drop dead letters for good (kept in the ledger as resolved); returns how many were still open.
    Each one dropped is recorded in its appointment's lineage as done from ``origin``.

    ``ledger``: the open ledger to use (the daemon's, for the console); by default the configured
    ledger is opened for the call (it must exist already)."""
    async def discard(opened: Ledger) -> int:
        async with opened.transaction() as tx:
            letters = await tx.dead_letters(ids=list(ids))
            count = await tx.resolve_dead_letters(ids)
            await tx.add_lineage([lineage.action(dl.canonical_id, "discard", dl.connector, "done",
                                                 f"dead letter {dl.id} ({dl.kind}) discarded {origin}")
                                  for dl in letters if dl.canonical_id])
            return count

    if ledger is not None:
        return await discard(ledger)
    opened = await Ledger.open(config.ledger.url, create=False)
    try:
        return await discard(opened)
    finally:
        await opened.close()


@asynccontextmanager
async def _ledger_for(config: Config, runtime: Runtime | None) -> AsyncIterator[Ledger]:
    if runtime is not None:
        yield runtime.ledger
        return
    opened = await Ledger.open(config.ledger.url, create=False)
    try:
        yield opened
    finally:
        await opened.close()
