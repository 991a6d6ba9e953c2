"""What an operator does to one piece of work: retry or discard dead letters, settle a conflict by
taking one member's version (``syncd deadletters``, ``syncd conflicts resolve``, the console).

Each is recorded in the appointment's lineage with where it was done from (``origin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from syncd import lineage
from syncd.config import Config
from syncd.connector import WriteKind, WriteRequest
from syncd.engine.core import Decision, Engine
from syncd.engine.holders import holder_name
from syncd.engine.onboard import LINK_FIELD
from syncd.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, ConfigError, VendorError
from syncd.ledger.models import DeadLetter, OutboxItem
from syncd.ledger.store import Ledger
from syncd.logging import get_logger
from syncd.model import Status
from syncd.passes import RESYNC_MAX_WAIT, read_ids
from syncd.runtime import Runtime, ledger_for, runtime_for

__all__ = ["ORIGIN_CLI", "ResolveResult", "discard_dead_letters", "resolve_conflict", "retry_dead_letters"]

log = get_logger("syncd.runner")

ORIGIN_CLI = "from the command line"
"""How an operator's action (retry, discard, resolve) is recorded in the lineage by default."""


async def retry_dead_letters(
    config: Config, ids: Sequence[int] | None, *, runtime: Runtime | None = None, origin: str = ORIGIN_CLI
) -> tuple[int, list[dict[str, Any]]]:
    """Replay dead letters (all when ``ids`` is None). Returns (exit code, per-letter results).

    ``runtime``: the ledger and connectors to use (the daemon's, for the console); by default a
    runtime is opened for the call. Each retry is recorded in the appointment's lineage as done from
    ``origin``."""
    results: list[dict[str, Any]] = []
    async with runtime_for(config, runtime, max_rate_limit_wait=RESYNC_MAX_WAIT) as rt:
        async with rt.ledger.transaction(readonly=True) as tx:
            letters = await tx.dead_letters(ids=ids)
        if ids is not None:
            missing = set(ids) - {dl.id for dl in letters}
            for mid in sorted(missing):
                results.append({"id": mid, "result": "unknown or already resolved"})
        for letter in letters:
            outcome = await _retry_one(config, rt, letter)
            if outcome is None:
                results.append({"id": letter.id, "result": "cannot be retried automatically"})
                continue
            await _record_retry(rt.ledger, letter, failed=not outcome, origin=origin)
            results.append({"id": letter.id, "result": "done" if outcome else "failed again"})
        code = EXIT_PARTIAL if any(r["result"] != "done" for r in results) else EXIT_OK
        return code, results


async def _retry_one(config: Config, rt: Runtime, letter: DeadLetter) -> bool | None:
    """Replay one dead letter: True when it went through, False when it failed again, None when it
    cannot be retried automatically."""
    decisions: list[Decision] = []
    engine = Engine(config, rt.ledger, rt.connectors, holder=holder_name("retry"), on_decision=decisions.append)
    phase = (letter.payload or {}).get("phase")
    try:
        if phase == "read" and letter.external_id:
            await read_ids(engine, [(letter.connector, letter.external_id)])
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
            return None
    except VendorError as exc:
        engine.stop(letter.connector, exc)
    return not (engine.stats.stopped or any(d.action in ("dead_letter", "conflict") for d in decisions))


async def _record_retry(ledger: Ledger, letter: DeadLetter, *, failed: bool, origin: str) -> None:
    async with ledger.transaction() as tx:
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
        engine.decide(Decision("dead_letter", connector_name, canonical_id, external_id, detail=str(outcome.error)))
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
        async with ledger_for(config, runtime) as ledger, ledger.transaction() as tx:
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
    async with runtime_for(config, runtime, max_rate_limit_wait=RESYNC_MAX_WAIT) as rt:
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

