"""When a write does not simply go through: the one place that handles every outcome of a vendor write.

* a **GET/PUT race** (the target changed between our read and our write, :class:`~syncd.errors.Conflict`):
  re-read, re-merge (:meth:`syncd.engine.plan.Planner.remerge`), retry -- bounded by
  ``MAX_CONFLICT_RETRIES``, each attempt audited, for every vendor alike;
* the target record turned out **deleted**: that deletion is reconciled as the target's change;
* a **create whose outcome is unknown** (a lost answer, a process killed between a vendor's two create
  calls): searched for by its idempotency reference and adopted;
* a change the target forbids in place: the **replace flow** (create new, cancel old, link, retire);
* refusals, deferrals and failures are recorded by :class:`~syncd.engine.outcomes.OutcomeBook`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from syncd import lineage, metrics
from syncd.connector import Connector, VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.engine.context import EngineContext
from syncd.engine.outcomes import OutcomeBook
from syncd.engine.plan import Planner
from syncd.engine.work import Decision, PageWork, store_work
from syncd.errors import (
    AmbiguousReference,
    Conflict,
    Deferred,
    MappingError,
    NotWritable,
    Rejected,
    VendorError,
)
from syncd.ledger.models import AuditEntry, Link, OutboxItem
from syncd.logging import get_logger
from syncd.model import REFERENCE_FIELDS, SYNC_FIELDS, Appointment, Status

__all__ = ["MAX_CONFLICT_RETRIES", "Races"]

log = get_logger("syncd.engine")

MAX_CONFLICT_RETRIES = 3

DeletionHandler = Callable[[str, VendorRecord, OutboxItem], Awaitable[list[OutboxItem]]]


def field_of(request: WriteRequest) -> str:
    """The field a refused write is about (for the conflict row): the first changed one."""
    return next((f for f in SYNC_FIELDS if f in request.changed), "status")


class Races:
    def __init__(self, ctx: EngineContext, planner: Planner, book: OutcomeBook, on_deleted: DeletionHandler) -> None:
        self.ctx = ctx
        self.planner = planner
        self.book = book
        self.on_deleted = on_deleted

    async def handle(self, connector: Connector, item: OutboxItem, request: WriteRequest, outcome: WriteOutcome,
                     followups: list[OutboxItem]) -> None:
        """Record ``outcome`` of ``request``; writes it makes necessary go to ``followups``."""
        error, target = outcome.error, item.connector
        if error is None and outcome.record is not None:
            await self.book.write_ok(item, request, outcome.record, sent=outcome.sent)
        elif isinstance(error, Conflict):
            await self.conflict_retry(connector, item, request, outcome, followups)
        elif isinstance(error, Deferred):
            await self.book.deferred(item, request, error)
        elif isinstance(error, AmbiguousReference):
            metrics.writes.labels(target, item.op, "not_writable").inc()
            await self.book.ambiguous(item, "reference", error.external_ids)
        elif isinstance(error, NotWritable):
            metrics.writes.labels(target, item.op, "not_writable").inc()
            await self.book.close(item, "failed", error.describe(), conflict=(field_of(request), error.describe()))
        elif isinstance(error, Rejected):
            metrics.writes.labels(target, item.op, "rejected").inc()
            await self.book.close(item, "failed", error.describe(), dead=("rejected", request.external_id, error))
        elif isinstance(error, MappingError):
            metrics.writes.labels(target, item.op, "not_expressible").inc()
            await self.book.close(item, "failed", str(error), conflict=(error.field or "status", str(error)))
        elif isinstance(error, VendorError):
            await self.book.write_failed(item, error)
        else:
            await self.book.close(item, "failed", "no record in outcome", dead=("write", request.external_id, None))

    # ------------------------------------------------------------------ the GET/PUT race loop
    async def conflict_retry(self, connector: Connector, item: OutboxItem, request: WriteRequest,
                             outcome: WriteOutcome, followups: list[OutboxItem]) -> None:
        """The target changed between our read and our write: re-read, re-merge, retry (bounded)."""
        ctx, target = self.ctx, item.connector
        attempt = int(item.payload.get("attempt", 0)) + 1
        group = ctx.group_of.get(target)
        if group is None or request.external_id is None:
            await self.book.close(item, "failed", "conflict", conflict=("status", "target changed"))
            return
        fresh = outcome.record
        if fresh is None or fresh.appointment is None:
            try:
                fresh = (await connector.read([request.external_id]))[request.external_id]
            except VendorError as exc:
                await self.book.write_failed(item, exc)
                return
        if fresh.deleted:
            followups.extend(await self.on_deleted(target, fresh, item))
            return
        if attempt > MAX_CONFLICT_RETRIES or fresh.appointment is None or fresh.error is not None:
            reason = "the record kept changing under our writes" if attempt > MAX_CONFLICT_RETRIES else (
                "the record was deleted or became unreadable while we wrote")
            await self.book.close(item, "failed", reason, conflict=("status", reason))
            return
        ctx.stats.of(target).retried += 1
        ctx.decide(Decision("retry", target, item.canonical_id, request.external_id, detail="re-read and re-merge"))
        await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        async with ctx.ledger.transaction() as tx:
            refs = await ctx.source_refs(tx, target, [fresh])
        fresh_canonical, missing = ctx.members.to_canonical(target, fresh, refs)
        if fresh_canonical is None:
            await self.book.close(item, "failed", missing or "missing reference",
                                  dead=("missing_reference", request.external_id, None))
            return
        work = PageWork()
        async with ctx.ledger.transaction() as tx:
            links = (await tx.links_of([item.canonical_id])).get(item.canonical_id, [])
            self.planner.remerge(group, item, request.changed, fresh, fresh_canonical, links, work, attempt)
            await store_work(ctx, tx, work)
            if item.id is not None:
                await tx.outbox_update([item.id], state="done", error="superseded by a re-merge")
            await tx.release([item.canonical_id], ctx.holder)
        ctx.report(work.decisions)
        followups.extend(work.outbox)

    # ------------------------------------------------------------------ creates whose outcome is unknown
    async def unknown_create(self, connector: Connector, item: OutboxItem, request: WriteRequest) -> bool:
        """A create tried before whose outcome is unknown (a lost answer, or a process killed between a
        vendor's two create calls): search by the idempotency reference (the connector also finds the
        record a second call missed: Salesforce's unstamped search, which stamps it) and adopt what it
        finds. Several records, or one besides the record a link already names, are an open conflict
        (docs/vendors/README.md rule 10). True when settled; False: nothing found, create now."""
        ctx, target, cid = self.ctx, item.connector, item.canonical_id
        async with ctx.ledger.transaction(readonly=True) as tx:
            retired = [lk.external_id for lk in (await tx.links_of([cid], include_retired=True)).get(cid, [])
                       if lk.connector == target and lk.retired]
        try:
            found = await connector.find_by_reference(cid, exclude=retired, desired=request.desired)
        except AmbiguousReference as exc:
            await self.book.ambiguous(item, "reference", exc.external_ids)
            return True
        except (Rejected, Conflict) as exc:
            await self.book.close(item, "failed", exc.describe(), dead=("rejected", request.external_id, exc))
            return True
        linked = request.external_id
        if linked is not None:
            chosen = next((r for r in found if r.external_id == linked), None)
            if chosen is None and found:
                await self.book.ambiguous(item, "reference", [linked, *(r.external_id for r in found)])
            elif chosen is None:
                # the link names a record onboarding matched; the earlier attempt never landed
                async with ctx.ledger.transaction() as tx:
                    if item.id is not None:
                        await tx.outbox_update([item.id], state="done",
                                               error="nothing to create: a record there is linked to it")
                    await tx.release([cid], ctx.holder)
                ctx.stats.of(target).unchanged += 1
            else:
                await self._adopt(connector, item, request, chosen, counted=False)
            return True
        if not found:
            return False
        if len(found) > 1:
            await self.book.ambiguous(item, "reference", [r.external_id for r in found])
            return True
        # tried before: our own create, its answer lost; never tried: a record made earlier (onboarding)
        if item.attempts == 0:
            ctx.stats.of(target).linked += 1
        await self._adopt(connector, item, request, found[0], counted=item.attempts > 0)
        return True

    async def _adopt(self, connector: Connector, item: OutboxItem, request: WriteRequest, record: VendorRecord, *,
                     counted: bool) -> None:
        """Take ``record`` (found by its reference) as the create's outcome; what it does not hold yet
        (a status the lost follow-up call would have set) is written to it first."""
        found = record
        if record.appointment is not None:
            differs = frozenset(f for f in request.desired.diff(record.appointment) if f not in record.unexpressible)
            if differs:
                update = WriteRequest(WriteKind.UPDATE, item.canonical_id, request.desired,
                                      external_id=record.external_id, current=record, changed=differs)
                try:
                    [outcome] = await connector.write([update])
                except VendorError as exc:
                    outcome = WriteOutcome(update, error=exc)
                if outcome.error is not None or outcome.record is None:
                    await self._adopt_as_is(item, record, outcome)
                    return
                found = outcome.record
        await self.book.write_ok(item, request, found, adopted=True, sent=counted)

    async def _adopt_as_is(self, item: OutboxItem, record: VendorRecord, outcome: WriteOutcome) -> None:
        """The follow-up write failed: adopted as it is; the next read merges it as a record never
        merged before."""
        log.warning("adopt_follow_up_failed", connector=item.connector, canonical_id=item.canonical_id,
                    external_id=record.external_id, code=getattr(outcome.error, "code", None))
        async with self.ctx.ledger.transaction() as tx:
            await tx.upsert_links([Link(canonical_id=item.canonical_id, connector=item.connector,
                                        external_id=record.external_id, version=record.version,
                                        modified_at=record.modified_at)])
            if item.id is not None:
                await tx.outbox_update([item.id], state="done", error="adopted after a lost answer")
            await tx.release([item.canonical_id], self.ctx.holder)

    # ------------------------------------------------------------------ the replace flow
    async def replace(self, connector: Connector, item: OutboxItem, request: WriteRequest, link: Link,
                      believed: Appointment, followups: list[OutboxItem]) -> None:
        """A change the target forbids in place: create a new record, cancel the old one with the vendor's
        reason, link the new one and retire the old (docs/vendors/README.md rule 13). Where the vendor needs
        the slot freed first (``capabilities.replace_cancel_first_when``), the old one is cancelled first."""
        target = item.connector
        current = request.current
        assert current is not None
        if believed.status.terminal:
            await self.book.close(item, "failed", "replace needed but the old record is terminal",
                                  conflict=("patient", "replace flow on a terminal record"))
            return
        caps = connector.capabilities
        old_cancelled = believed.with_changes(status=Status.CANCELLED, cancellation_reason=caps.replace_reason)
        cancel = WriteRequest(WriteKind.CANCEL, item.canonical_id, old_cancelled, external_id=link.external_id,
                              current=current, changed=frozenset({"status", "cancellation_reason"}),
                              current_is_read=False)
        create = WriteRequest(WriteKind.CREATE, item.canonical_id, request.desired, replaces=link.external_id,
                              changed=request.changed)
        changed_refs = {f for f in REFERENCE_FIELDS if getattr(believed, f) != getattr(request.desired, f)}
        cancel_first = bool(changed_refs) and changed_refs <= caps.replace_cancel_first_when
        cancelled: WriteOutcome | None = None
        try:
            if cancel_first:
                [cancelled] = await connector.write([cancel])
                if cancelled.error is not None:
                    await self.handle(connector, item, cancel, cancelled, followups)
                    return
            [created] = await connector.write([create])
        except VendorError as exc:
            await self.book.write_failed(item, exc)
            return
        if created.error is not None or created.record is None:
            if cancel_first:
                # the old record is cancelled already: retire it so its cancellation is not taken for the
                # patient's, and leave the refused create on record (dead letter, retriable after a fix)
                async with self.ctx.ledger.transaction() as tx:
                    await tx.retire_links(target, [link.external_id])
            await self.handle(connector, item, create, created, followups)
            return
        if cancelled is None:
            try:
                [cancelled] = await connector.write([cancel])
            except VendorError as exc:
                cancelled = WriteOutcome(cancel, error=exc)
        await self._replaced(item, request, link, created.record, cancelled)

    async def _replaced(self, item: OutboxItem, request: WriteRequest, link: Link, created: VendorRecord,
                        cancelled: WriteOutcome) -> None:
        """Store a replace: the new record linked, the old one retired; a failed cancel is a dead letter."""
        ctx, target = self.ctx, item.connector
        merged = Appointment.from_json(item.payload["merged"])
        ctx.stats.of(target).created += 1
        metrics.writes.labels(target, "create", "ok").inc()
        work = PageWork()
        if cancelled.error is not None:
            error = cancelled.error
            reason = error.describe() if isinstance(error, VendorError) else str(error)
            self.planner.dead_letter(work, target, "replace_cancel", reason, canonical_id=item.canonical_id,
                                     external_id=link.external_id,
                                     payload={"phase": "cancel_old", "external_id": link.external_id})
        async with ctx.ledger.transaction() as tx:
            held = await self.book.held(tx, target, created, merged)
            await tx.upsert_links([Link(canonical_id=item.canonical_id, connector=target,
                                        external_id=created.external_id, version=created.version,
                                        fingerprint=held.fingerprint(), written_fingerprint=held.fingerprint(),
                                        written_version=created.version,
                                        modified_at=created.modified_at, seen=held.to_json())])
            await tx.retire_links(target, [link.external_id])
            await tx.add_audit([AuditEntry(canonical_id=item.canonical_id, connector=target, action="replaced",
                                           fields=list(request.changed), fingerprint_after=merged.fingerprint(),
                                           detail=f"old {link.external_id} retired"[:255])])
            await tx.add_lineage([lineage.written(
                item.canonical_id, target, "replaced", request.changed, outcome="replaced",
                detail=f"{target} forbids this change in place: created {created.external_id}, old "
                       f"{link.external_id} retired ({'cancelled' if cancelled.error is None else 'cancel failed'})")])
            if item.id is not None:
                await tx.outbox_update([item.id], state="done")
            await store_work(ctx, tx, work)
        ctx.decide(Decision("replaced", target, item.canonical_id, created.external_id,
                            tuple(sorted(request.changed)), detail=f"old {link.external_id} cancelled"))
        ctx.report(work.decisions)
        if cancelled.error is None:
            ctx.stats.of(target).cancelled += 1
            metrics.writes.labels(target, "cancel", "ok").inc()
