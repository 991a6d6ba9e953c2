"""Reconcile: one page of vendor records -> links, merge bases, outbox rows, audit and lineage entries,
and the cursor, in **one** ledger transaction per page.

The reconciler reads what the page's records need (their links, the merge bases, crosswalk keys,
onboarding candidates by slot) in a few indexed queries, lets the planner (:mod:`syncd.engine.plan`)
decide, stores the page's work with bulk statements (:func:`syncd.engine.work.store_work`) together
with the cursor, and hands the planned writes to the writer (:mod:`syncd.engine.writer`) once that
transaction has committed. Pages are reconciled one at a time per engine (a lock), so two pages never
merge one appointment at once in one process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from syncd import metrics
from syncd.connector import VendorRecord, WriteKind
from syncd.engine.context import EngineContext, now
from syncd.engine.dryrun import count_planned
from syncd.engine.onboard import LINK_FIELD, NEW, WINDOW_READ_KEY, names_connector
from syncd.engine.plan import CANONICAL_ID, Page, Planner
from syncd.engine.work import Decision, PageWork, store_work
from syncd.engine.writer import Writer
from syncd.ledger.models import OutboxItem
from syncd.ledger.store import Tx
from syncd.logging import get_logger
from syncd.model import Status

__all__ = ["Reconciler"]

log = get_logger("syncd.engine")


class _Rollback(Exception):
    """Raised inside a dry-run transaction so that nothing it did is committed."""


class Reconciler:
    def __init__(self, ctx: EngineContext, planner: Planner, writer: Writer) -> None:
        self.ctx = ctx
        self.planner = planner
        self.writer = writer
        self.lock = asyncio.Lock()
        """One page at a time: two pages of this engine never merge one appointment at once."""

    async def process_page(self, source: str, records: Sequence[VendorRecord], deleted_ids: Sequence[str] = (),
                           *, cursor: str | None = None, set_cursor: bool = False) -> None:
        """Reconcile one page of changes from ``source``, store it (and ``cursor``), then write."""
        ctx = self.ctx
        ctx.stats.of(source).read += len(records)
        metrics.records_read.labels(source).inc(len(records))
        work = PageWork()
        # writes of ours to these records still in flight are waited for outside the lock (a slow vendor
        # must not hold up the other connectors' pages) ...
        records = await self._settle_own_writes(source, records, ledger_check=False)
        async with self.lock:
            # ... and checked again under it: a write that landed while this page waited is seen here
            records = await self._settle_own_writes(source, records)
            # one record per external id: the last one wins within a page
            by_id = {rec.external_id: rec for rec in records}
            for ext in deleted_ids:
                by_id[ext] = VendorRecord(external_id=ext, version=None, appointment=None, deleted=True)
            try:
                async with ctx.ledger.transaction() as tx:
                    # replicas: the page's records and appointments are locked before anything is read, so
                    # that two replicas never merge one appointment at once (Tx.lock_appointments)
                    await tx.lock_appointments([r.syncd_id for r in by_id.values() if r.syncd_id], source, by_id)
                    if source in ctx.group_of:
                        await self.reconcile_page(tx, source, list(by_id.values()), work)
                        await store_work(ctx, tx, work)
                    if set_cursor and cursor is not None and not ctx.dry_run:
                        await tx.set_cursor(source, cursor, success_at=now())
                    if ctx.dry_run:
                        raise _Rollback
            except _Rollback:
                pass
        ctx.report(work.decisions)
        if ctx.dry_run:
            await self._plan_dry(work)
        elif work.outbox:
            await self.writer.execute(work.outbox)

    async def _plan_dry(self, work: PageWork) -> None:
        """Dry run: keep what the page would have stored for the next pages, count its writes."""
        overlay = self.ctx.overlay
        assert overlay is not None
        overlay.absorb(work.appointments.values(), work.links.values(), work.retire, work.supersede,
                       {cid: {"connector": lc.connector} for cid, lc in work.link_conflicts.items()})
        self.writer.planned.extend(work.outbox)
        await count_planned(self.ctx, self.writer, await self.writer.hold_creates(work.outbox))

    async def _settle_own_writes(self, source: str, records: Sequence[VendorRecord], *,
                                 ledger_check: bool = True) -> Sequence[VendorRecord]:
        """Records read while (or just before) syncd itself wrote them may show a half-applied write
        (a vendor whose update takes two calls) or the state before it. Wait for the write to finish
        and read those records again, so neither is taken for somebody else's change. Suspects: a
        write of this process in flight or finished since, or a record older than the ledger's last
        known version of it (written or read meanwhile by another process sharing the ledger)."""
        started = time.monotonic()
        suspects = [rec.external_id for rec in records if self.writer.touched(source, rec.external_id, rec.version)]
        if source not in self.ctx.connectors:
            return records
        dated = {rec.external_id: rec.modified_at for rec in records
                 if rec.modified_at is not None and rec.external_id not in suspects}
        if dated and ledger_check:
            async with self.ctx.ledger.transaction(readonly=True) as tx:
                known = await tx.links_for(source, dated)
            for ext, at in dated.items():
                newest = known[ext].modified_at if ext in known else None
                if at is not None and newest is not None and at < newest:
                    suspects.append(ext)
        if not suspects:
            return records
        deadline = started + 60
        while any(self.writer.in_flight(source, ext) for ext in suspects) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        fresh = await self.ctx.connectors[source].read(suspects)
        return [fresh.get(rec.external_id, rec) for rec in records]

    async def reconcile_page(self, tx: Tx, source: str, records: list[VendorRecord], work: PageWork) -> None:
        """Read what ``records`` need, let the planner decide, into ``work`` (stored by the caller)."""
        ctx = self.ctx
        links = await ctx.links_for(tx, source, [r.external_id for r in records])
        hinted = {r.syncd_id for r in records
                  if r.syncd_id and CANONICAL_ID.match(r.syncd_id) and r.external_id not in links}
        cids = {link.canonical_id for link in links.values()} | hinted
        page = Page(ctx.group_of[source], source, links, await ctx.appointments(tx, cids),
                    await ctx.links_of(tx, cids), await ctx.source_refs(tx, source, records))
        verdicts = {}
        unlinked = self.planner.unlinked(page, records)
        if unlinked:
            # onboarding: one indexed query for the page's slots and one for those appointments' links
            keys = sorted({u.slot for u in unlinked if u.slot is not None})
            by_slot = await tx.appointments_by_slot(page.group.name, keys)
            if ctx.overlay is not None:
                by_slot = ctx.overlay.by_slot(page.group.name, keys, by_slot)
            for rows in by_slot.values():
                for row in rows:
                    page.snapshots.setdefault(row.canonical_id, row)
            missing = [row.canonical_id for rows in by_slot.values() for row in rows
                       if row.canonical_id not in page.member_links]
            if missing:
                page.member_links.update(await ctx.links_of(tx, dict.fromkeys(missing)))
            verdicts = self.planner.verdicts(page, unlinked, by_slot)
        for rec in records:
            self.planner.reconcile(page, rec, work, verdicts.get(rec.external_id, NEW))

    async def apply_deletion(self, target: str, deleted: VendorRecord, item: OutboxItem) -> list[OutboxItem]:
        """The writer found ``target``'s record deleted (a re-read confirmed it): reconciled as any other
        change of the target, so the appointment is cancelled elsewhere unless it is terminal already.
        The queued write is done. Returns the writes this plans."""
        ctx = self.ctx
        work = PageWork()
        async with self.lock:
            async with ctx.ledger.transaction() as tx:
                if target in ctx.group_of:
                    await self.reconcile_page(tx, target, [deleted], work)
                    await store_work(ctx, tx, work)
                if item.id is not None:
                    await tx.outbox_update([item.id], state="done",
                                           error="the target record was deleted: its deletion is synced instead")
                await tx.release([item.canonical_id], ctx.holder)
        ctx.report(work.decisions)
        ctx.decide(Decision("unchanged", target, item.canonical_id, deleted.external_id, detail="target deleted"))
        return work.outbox

    # ------------------------------------------------------------------ full window passes
    def begin_window(self, source: str) -> None:
        """A full window pass over ``source`` starts (see :meth:`window_read`)."""
        self.ctx.link_conflicts_seen[source] = set()

    async def window_read(self, source: str) -> None:
        """A full window pass over ``source`` ended: this ledger has now read every record it holds.
        From here on creates into it are sent (those held so far are released now), and the link
        conflicts about its records that this pass did not find again are closed."""
        ctx = self.ctx
        seen = ctx.link_conflicts_seen.pop(source, set())
        if ctx.overlay is not None:
            ctx.overlay.window_read.add(source)
            await count_planned(ctx, self.writer, ctx.overlay.release(source))
            return
        async with ctx.ledger.transaction() as tx:
            await tx.state_set(source, {WINDOW_READ_KEY: now().strftime("%Y-%m-%dT%H:%M:%SZ")})
            for conflict in await tx.open_conflicts_on(LINK_FIELD):
                if names_connector(conflict.values, source) and conflict.canonical_id not in seen \
                        and conflict.id is not None:
                    await tx.resolve_conflict(conflict.id, f"no longer ambiguous after a full read of {source}")
            # held ones, and any a crash left "sending" (the writer searches for those first; a live
            # process still sending one holds its claim, so it is not written twice)
            held = [i for i in await tx.outbox_pending(connector=source, limit=100_000, states=("pending", "sending"))
                    if i.op == WriteKind.CREATE.value]
        ctx.window_read.add(source)
        log.info("window_read", connector=source, count=len(held))
        if held:
            await self.writer.execute(held)

    async def sweep_missing(self, source: str, seen: set[str]) -> None:
        """After a full window pass: known records of ``source`` whose start lies in its window but
        that the pass did not list are read one more time; the vendor answers "deleted" for those
        that are gone, and the deletion is then carried to the other members (docs/vendors/<type>.md §2)."""
        connector = self.ctx.connectors[source]
        cfg = self.ctx.config.connectors[source]
        midnight = datetime.now(ZoneInfo(cfg.timezone)).replace(hour=0, minute=0, second=0, microsecond=0)
        low = midnight - timedelta(days=cfg.window_past_days)
        high = midnight + timedelta(days=cfg.window_future_days + 1)
        async with self.ctx.ledger.transaction(readonly=True) as tx:
            unlisted = [(ext, cid) for ext, cid in await tx.link_ids_of_connector(source) if ext not in seen]
            rows = await tx.appointments([cid for _, cid in unlisted])
        missing: list[str] = []
        for external_id, canonical_id in unlisted:
            row = rows.get(canonical_id)
            if row is None or row.snapshot is None or not row.snapshot.get("start"):
                continue
            start = datetime.fromisoformat(str(row.snapshot["start"]).replace("Z", "+00:00"))
            if low <= start < high and not Status(row.snapshot["status"]).terminal:
                missing.append(external_id)
        if not missing:
            return
        log.info("window_sweep", connector=source, count=len(missing))
        size = max(1, connector.capabilities.batch_read_size) * 10
        for start_index in range(0, len(missing), size):
            chunk = missing[start_index:start_index + size]
            records = await connector.read(chunk)
            await self.process_page(source, [records[e] for e in chunk if e in records])
