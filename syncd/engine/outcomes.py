"""Write outcomes committed in groups: one ledger transaction for every outcome that is ready.

The writer sends many writes at once (bounded by the engine's write slots). Each finished write hands
its outcome, as ledger rows, to :meth:`GroupCommit.commit` and waits there until the transaction
holding it has committed; only then is the write done (its decision reported, its claim gone). Whatever
arrives while a transaction is being written joins the next one, so under load one transaction carries
many outcomes (bulk statements: one upsert of links, one outbox update per state, one audit insert, one
lineage insert, one claim release), and a lone write still commits at once.

Crash safety is that of one transaction per outcome: an outcome not committed leaves its outbox row
``sending``, and the writer's next attempt first searches the target by the idempotency reference
(:meth:`syncd.engine.races.Races.unknown_create`). When a group's transaction fails, each of its
outcomes is committed alone, so one bad row cannot take the others with it.

:class:`OutcomeBook` turns each kind of write outcome into those rows: a confirmed write (links,
versions, the echo fingerprint, audit and lineage), a retriable failure (queued again), a refusal (a
dead letter or an open conflict), a deferral, an ambiguous reference.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from syncd import lineage, metrics
from syncd.connector import VendorRecord, WriteKind, WriteRequest
from syncd.engine.context import EngineContext
from syncd.engine.fields import held_after_write, writable
from syncd.engine.onboard import LINK_FIELD, link_conflict
from syncd.engine.plan import Planner
from syncd.engine.work import Decision, PageWork, outbox_item, store_work, target_op
from syncd.errors import Deferred, Retriable, VendorError, WritesHalted
from syncd.ledger.models import AppointmentRow, AuditEntry, LineageEntry, Link, OutboxItem
from syncd.ledger.store import Ledger, Tx
from syncd.logging import get_logger, mask_contact
from syncd.model import SYNC_FIELDS, Appointment

__all__ = ["POISON_ATTEMPTS", "STOP_AFTER_FAILURES", "GroupCommit", "OutcomeBook", "OutcomeRows"]

log = get_logger("syncd.engine")


@dataclass
class OutcomeRows:
    """What one finished write stores."""

    canonical_id: str
    outbox_id: int | None
    state: str = "done"
    error: str | None = None
    links: list[Link] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    lineage: list[LineageEntry] = field(default_factory=list)
    prepare: Callable[[Tx, OutcomeRows], Awaitable[None]] | None = None
    """Run first inside the group's transaction (reads the rows depend on, e.g. the crosswalk)."""
    wants_latest: bool = False
    """Read the appointment's latest merge for ``prepare`` (one bulk read for the whole group)."""
    latest: AppointmentRow | None = None
    """With ``wants_latest``: the appointment's row as the group's transaction reads it."""


class GroupCommit:
    """Commits :class:`OutcomeRows` in groups (see the module docstring); one per engine."""

    def __init__(self, ledger: Ledger, holder: str) -> None:
        self.ledger = ledger
        self.holder = holder
        self._queue: list[tuple[OutcomeRows, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions written so far (for tests and the profile)."""

    async def commit(self, rows: OutcomeRows) -> None:
        """Store ``rows``; returns once they are committed (raises what their transaction raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # the commit goes on when the waiter is cancelled: the outcome is stored all the same
        await asyncio.shield(future)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # outcomes finished in the same turn of the loop join this group
        while self._queue:
            group, self._queue = self._queue, []
            try:
                await self._write([rows for rows, _ in group])
            except Exception:
                for rows, future in group:
                    try:
                        await self._write([rows])
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(None)
            except BaseException as exc:
                for _, future in [*group, *self._queue]:
                    if not future.done():
                        future.set_exception(exc)
                self._queue = []
                raise
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)

    async def _write(self, group: list[OutcomeRows]) -> None:
        async with self.ledger.transaction() as tx:
            # before anything is read: a merge of these appointments on another replica waits for this
            # commit, or this one for the merge's, so neither misses the other (Tx.lock_appointments)
            await tx.lock_appointments(rows.canonical_id for rows in group)
            wanted = [rows.canonical_id for rows in group if rows.wants_latest]
            if wanted:
                latest = await tx.appointments(wanted)
                for rows in group:
                    rows.latest = latest.get(rows.canonical_id) if rows.wants_latest else None
            for rows in group:
                if rows.prepare is not None:
                    await rows.prepare(tx, rows)
            links: dict[tuple[str, str], Link] = {}
            for rows in group:
                for link in rows.links:
                    links[(link.connector, link.external_id)] = link  # one row per key: the last wins
            if links:
                await tx.upsert_links(list(links.values()))
            by_state: dict[tuple[str, str | None], list[int]] = defaultdict(list)
            for rows in group:
                if rows.outbox_id is not None:
                    by_state[(rows.state, rows.error)].append(rows.outbox_id)
            for (state, error), ids in by_state.items():
                await tx.outbox_update(ids, state=state, error=error)
            audit = [entry for rows in group for entry in rows.audit]
            if audit:
                await tx.add_audit(audit)
            history = [entry for rows in group for entry in rows.lineage]
            if history:
                await tx.add_lineage(history)
            await tx.release([rows.canonical_id for rows in group], self.holder)
        self.transactions += 1


STOP_AFTER_FAILURES = 3
"""Transient write failures in a row, with no success between, after which a target stops for the pass."""
POISON_ATTEMPTS = 5
"""Attempts after which a write that always fails transiently, while the target takes other writes, is
dead-lettered instead of being queued again."""
POISON_WINDOW_SECONDS = 600.0
"""How recent another write's success must be for a failing record to count as poisoned, not an outage."""


class OutcomeBook:
    """Records write outcomes in the ledger (grouped where a write succeeded, see :class:`GroupCommit`)."""

    def __init__(self, ctx: EngineContext, planner: Planner) -> None:
        self.ctx = ctx
        self.planner = planner
        self.commits = GroupCommit(ctx.ledger, ctx.holder)
        self._streak: dict[str, int] = {}
        """target -> transient write failures in a row (a success resets it)."""
        self._last_ok: dict[str, float] = {}
        """target -> when a write to it last went through (monotonic)."""

    async def write_ok(self, item: OutboxItem, request: WriteRequest, record: VendorRecord, *,
                       adopted: bool = False, sent: bool = True) -> None:
        """The target holds what we wrote: store the link (what we wrote as what it holds, so another
        user's change beside ours is news at the next read), the audit and lineage; done once committed."""
        target, ctx = item.connector, self.ctx
        merged = Appointment.from_json(item.payload["merged"])
        op = request.kind
        self._count_ok(target, op, sent)
        metrics.writes.labels(target, op.value, "ok" if sent else "not_needed").inc()
        metrics.observe_sync_latency(target, item.created_at, sent)
        echo_version = record.version if ctx.members.echo_matches(target, record, request.desired) else None

        async def link_row(tx: Tx, rows: OutcomeRows) -> None:
            # seen: what we wrote, not the answer; only its read-only fields are taken from the answer
            # (they are the member's own value, never ours)
            held = await self.held(tx, target, record, merged)
            rows.links = [Link(canonical_id=item.canonical_id, connector=target, external_id=record.external_id,
                               version=record.version, fingerprint=held.fingerprint(),
                               written_fingerprint=held.fingerprint(), written_version=echo_version,
                               modified_at=record.modified_at, seen=held.to_json())]
            if op is WriteKind.CREATE:
                await self._follow_create(tx, item, rows.latest, merged, held)

        carried = request.changed or ([n for n in SYNC_FIELDS if getattr(merged, n) is not None]
                                      if op is WriteKind.CREATE else [])
        detail = write_detail(item, record, adopted=adopted, sent=sent, echo=echo_version is not None)
        # committed together with the other outcomes ready now (one transaction for the group); the
        # write is done once it returns
        await self.commits.commit(OutcomeRows(
            canonical_id=item.canonical_id, outbox_id=item.id, state="done",
            error=None if sent else "nothing left to send",
            audit=[AuditEntry(canonical_id=item.canonical_id, connector=target, action=op.value,
                              fields=list(request.changed), fingerprint_after=merged.fingerprint(),
                              detail="adopted after a lost answer" if adopted else None)],
            lineage=[lineage.written(item.canonical_id, target, op.value, carried,
                                     outcome="ok" if sent else "not_needed", detail=detail)],
            prepare=link_row, wants_latest=op is WriteKind.CREATE))
        action = {WriteKind.CREATE: "created", WriteKind.CANCEL: "cancelled"}.get(op, "updated")
        action = action if sent else "unchanged"
        ctx.decide(Decision(action, target, item.canonical_id, record.external_id, tuple(sorted(request.changed))))

    async def _went_through_lately(self, target: str) -> bool:
        """A write to ``target`` went through lately: in this process, or (another pass's) in the ledger."""
        last = self._last_ok.get(target)
        if last is not None and time.monotonic() - last < POISON_WINDOW_SECONDS:
            return True
        async with self.ctx.ledger.transaction(readonly=True) as tx:
            return await tx.outbox_went_through(target, POISON_WINDOW_SECONDS)

    def _count_ok(self, target: str, op: WriteKind, sent: bool) -> None:
        self._streak[target] = 0
        self._last_ok[target] = time.monotonic()
        stats = self.ctx.stats.of(target)
        if not sent:
            stats.unchanged += 1  # nothing the target can hold still differed: no request was sent
        elif op is WriteKind.CREATE:
            stats.created += 1
        elif op is WriteKind.CANCEL:
            stats.cancelled += 1
        else:
            stats.updated += 1

    async def _follow_create(self, tx: Tx, item: OutboxItem, row: AppointmentRow | None, merged: Appointment,
                             held: Appointment) -> None:
        """A merge while this create was in flight planned no write here (no link yet, and the create
        was already sending): what it changed follows as an update (``row``: the appointment's latest
        merge, read for the whole group at once)."""
        target = item.connector
        latest = Appointment.from_json(row.snapshot) if row is not None and row.snapshot else None
        if latest is None:
            return
        changed = writable(latest.diff(merged), self.ctx.members.limits(target))
        if changed:
            await tx.outbox_add([outbox_item(item.canonical_id, target, target_op(latest, held), base=held,
                                             merged=latest, source=str(item.payload.get("source") or ""),
                                             changed=changed)])

    async def held(self, tx: Tx, target: str, record: VendorRecord, written: Appointment) -> Appointment:
        """What ``target`` holds after syncd wrote ``written`` there (canonical keys): ``written``, with
        its read-only fields as the vendor's answer ``record`` shows them."""
        limits = self.ctx.members.limits(target, record)
        if not limits.own_values or record.appointment is None or record.error is not None:
            return written
        refs = await self.ctx.source_refs(tx, target, [record])
        answer, _missing = self.ctx.members.to_canonical(target, record, refs)
        return held_after_write(written, answer, limits)

    async def write_failed(self, item: OutboxItem, error: VendorError, *, sent: bool = True) -> None:
        """A retriable failure that outlived the HTTP layer's retries, a long wait or refused auth: the
        write stays queued in the outbox (nothing lost). Refused auth and a rate limit stop the connector
        for this pass at once; transient errors (5xx, timeouts) stop it after ``STOP_AFTER_FAILURES`` in a
        row with no success between, so that one record the vendor always fails on does not hold up the
        others. Such a record, failed ``POISON_ATTEMPTS`` times while other writes to the same target went
        through, is dead-lettered (retriable). ``sent=False``: never sent (its connector had stopped)."""
        target = item.connector
        metrics.writes.labels(target, item.op, error.kind).inc()
        self.ctx.stats.requeued[target] = self.ctx.stats.requeued.get(target, 0) + 1
        transient = isinstance(error, Retriable) and not isinstance(error, WritesHalted) and sent
        if transient:
            self._streak[target] = self._streak.get(target, 0) + 1
        if not transient or self._streak[target] >= STOP_AFTER_FAILURES:
            self.ctx.stop(target, error)
        elif item.attempts + 1 >= POISON_ATTEMPTS and await self._went_through_lately(target):
            self.ctx.stats.requeued[target] -= 1
            log.warning("write_poisoned", connector=target, canonical_id=item.canonical_id, count=item.attempts + 1,
                        code=error.code, http_status=error.status)
            await self.close(item, "failed", error.describe(), dead=("write_failed", None, error))
            return
        async with self.ctx.ledger.transaction() as tx:
            if item.id is not None:
                await tx.outbox_update([item.id], state="pending", error=error.describe()[:400])
            if item.attempts == 0:  # the first failure only: an outage must not fill the history
                await tx.add_lineage([lineage.written(
                    item.canonical_id, target, item.op, item.payload.get("changed") or [], outcome="queued",
                    detail=f"{error.kind}: the write stays queued and is retried until it goes through")])
            await tx.release([item.canonical_id], self.ctx.holder)

    async def deferred(self, item: OutboxItem, request: WriteRequest, error: Deferred) -> None:
        """The vendor takes this change only later: it stays queued (drained by the daemon's outbox job
        and by every resync once the time has come); nothing is lost, nothing dead-lettered."""
        target = item.connector
        metrics.writes.labels(target, item.op, "deferred").inc()
        self.ctx.decide(Decision("deferred", target, item.canonical_id, request.external_id,
                                 tuple(sorted(request.changed)), detail=error.not_before.isoformat()))
        until = f"{error.not_before:%Y-%m-%dT%H:%M:%SZ}"
        async with self.ctx.ledger.transaction() as tx:
            if item.id is not None:
                await tx.outbox_update([item.id], state="pending", error=f"deferred until {until}")
            if item.attempts == 0:  # once, not at every drain of the outbox until the time has come
                await tx.add_lineage([lineage.written(item.canonical_id, target, item.op, request.changed,
                                                      outcome="deferred",
                                                      detail=f"the vendor takes it from {until}; stays queued")])

    async def close(self, item: OutboxItem, state: str, error: str, *,
                    dead: tuple[str, str | None, VendorError | None] | None = None,
                    conflict: tuple[str, str] | None = None) -> None:
        """The write is over without success: ``dead`` (kind, the target's external id, the vendor's error)
        leaves a dead letter, ``conflict`` (field, reason) opens a conflict; the outbox row takes ``state``."""
        target, ctx = item.connector, self.ctx
        work = PageWork()
        if dead is not None:
            kind, external_id, vendor_error = dead
            reason = vendor_error.describe() if vendor_error is not None else error
            self.planner.dead_letter(work, target, kind, reason, canonical_id=item.canonical_id,
                                     external_id=external_id,
                                     payload={"phase": "write", "outbox": item.payload, "op": item.op})
        if conflict is not None:
            field_name, reason = conflict
            work.lineage.append(lineage.conflict(item.canonical_id, target, field_name,
                                                 detail=f"{target} refused the write: {reason}"))
        async with ctx.ledger.transaction() as tx:
            await store_work(ctx, tx, work)
            if conflict is not None:
                await tx.open_conflict(item.canonical_id, conflict[0], {"target": target}, conflict[1][:500],
                                       connector=target)
            if item.id is not None:
                await tx.outbox_update([item.id], state=state, error=mask_contact(error)[:400])
            await tx.release([item.canonical_id], ctx.holder)
        ctx.report(work.decisions)
        if conflict is not None:
            ctx.stats.of(target).conflicts += 1
            ctx.decide(Decision("conflict", target, item.canonical_id, None, (conflict[0],), conflict[1]))

    async def ambiguous(self, item: OutboxItem, rule: str, external_ids: Iterable[str]) -> None:
        """Several records of the target stand for this create: an open link conflict; the create stays
        queued (and blocked) until it is settled."""
        target = item.connector
        external_ids = sorted(external_ids)
        values, reason = link_conflict(target, rule, external_ids, [item.canonical_id])
        async with self.ctx.ledger.transaction() as tx:
            await tx.open_conflict(item.canonical_id, LINK_FIELD, values, reason[:500])
            await tx.add_lineage([lineage.conflict(item.canonical_id, target, LINK_FIELD,
                                                   detail=f"several {target} records hold its {rule}: "
                                                          f"{', '.join(external_ids)}", vendor_text=False)])
            if item.id is not None:
                await tx.outbox_update([item.id], state="pending", error="waits: several records hold its reference")
            await tx.release([item.canonical_id], self.ctx.holder)
        self.ctx.stats.of(target).conflicts += 1
        self.ctx.decide(Decision("conflict", target, item.canonical_id, None, (LINK_FIELD,), f"ambiguous {rule}"))


def write_detail(item: OutboxItem, record: VendorRecord, *, adopted: bool, sent: bool, echo: bool) -> str:
    """The lineage detail of a confirmed write (ids and counts only)."""
    parts = [f"{'created as' if item.op == WriteKind.CREATE.value else 'written to'} {record.external_id}"]
    attempt = int(item.payload.get("attempt", 0) or 0)
    raced = str(item.payload.get("source") or "")
    if attempt and raced == item.connector:
        parts.append(f"re-read after a conflict (GET/PUT race), re-merged, retried (attempt {attempt + 1})")
    elif attempt:
        parts.append(f"carries the re-merge after a GET/PUT race on {raced}")
    if adopted:
        parts.append("adopted after a lost answer (found by its reference)")
    if not sent:
        parts.append("nothing left to send")
    elif not echo:
        parts.append("the answer shows another change beside ours: the next read merges it")
    else:
        parts.append("echo confirmed: the answer holds what syncd wrote")
    return "; ".join(parts)
