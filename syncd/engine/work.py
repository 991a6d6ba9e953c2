"""What the stages hand each other: decisions, and the rows one unit of work wants stored.

The planner (:mod:`syncd.engine.plan`) fills a :class:`PageWork` with values only; the reconciler
(:mod:`syncd.engine.reconcile`) and the writer (:mod:`syncd.engine.writer`) store it with
:func:`store_work` in the transaction they hold, a few bulk statements per page, and report its
decisions once that transaction has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from syncd.connector import WriteKind
from syncd.engine.merge import FieldConflict
from syncd.engine.onboard import LINK_FIELD, link_conflict
from syncd.ledger.models import AppointmentRow, AuditEntry, DeadLetter, LineageEntry, Link, OutboxItem
from syncd.ledger.store import Tx
from syncd.logging import get_logger
from syncd.model import Appointment, Status

if TYPE_CHECKING:
    from syncd.engine.context import EngineContext

__all__ = ["CANCELLED", "Decision", "LinkConflict", "PageWork", "outbox_item", "store_work", "target_op"]

log = get_logger("syncd.engine")

CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


@dataclass(frozen=True, slots=True)
class Decision:
    """One sync decision, for the live demo view and tests (ids and field names only, no PHI)."""

    action: str
    """created, updated, cancelled, replaced, unchanged, echo, dead_letter, conflict, create_skipped, retry"""
    connector: str
    canonical_id: str | None = None
    external_id: str | None = None
    fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class LinkConflict:
    """Which records of one connector could be one appointment (onboarding could not decide)."""

    connector: str
    rule: str
    records: set[str] = field(default_factory=set)
    appointments: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)


@dataclass
class PageWork:
    """What one page's reconciliation (or one write's aftermath) wants stored, for a few bulk statements."""

    links: dict[tuple[str, str], Link] = field(default_factory=dict)
    appointments: dict[str, AppointmentRow] = field(default_factory=dict)
    outbox: list[OutboxItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    lineage: list[LineageEntry] = field(default_factory=list)
    """Lineage entries (:mod:`syncd.lineage`), stored in the same transaction as the rest."""
    conflicts: list[tuple[str, FieldConflict | None, str, str]] = field(default_factory=list)
    merge_conflicts: int = 0
    """Field conflicts the merges of this work met (counted in ``/metrics`` once it is stored)."""
    retire: list[tuple[str, str]] = field(default_factory=list)
    supersede: list[tuple[str, str]] = field(default_factory=list)
    """(canonical id, connector): a record of that connector was linked, so its held create is moot."""
    link_conflicts: dict[str, LinkConflict] = field(default_factory=dict)
    """canonical id -> which records of one connector could be it (onboarding could not decide)."""
    decisions: list[Decision] = field(default_factory=list)
    """Reported (logged, handed to the caller) after the work's transaction committed."""

    def link(self, row: Link) -> None:
        self.links[(row.connector, row.external_id)] = row

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision)


def target_op(merged: Appointment, base: Appointment | None) -> WriteKind:
    """A write that takes ``base`` to ``merged``: a cancellation when it enters a cancelled status."""
    if merged.status in CANCELLED and (base is None or base.status not in CANCELLED):
        return WriteKind.CANCEL
    return WriteKind.UPDATE


def outbox_item(
    cid: str,
    target: str,
    op: WriteKind,
    *,
    base: Appointment | None,
    merged: Appointment,
    source: str,
    changed: list[str],
    attempt: int = 0,
    source_modified: datetime | None = None,
) -> OutboxItem:
    """The durable outbox row for one planned write (its idempotency key names the merge it carries)."""
    merged_fp = merged.fingerprint()
    base_fp = base.fingerprint() if base is not None else "none"
    return OutboxItem(
        idempotency_key=f"{cid}:{target}:{op.value}:{base_fp[:12]}:{merged_fp[:16]}:{attempt}",
        canonical_id=cid,
        connector=target,
        op=op.value,
        payload={
            "base": base.to_json() if base is not None else None,
            "merged": merged.to_json(),
            "changed": changed,
            "source": source,
            "source_modified": source_modified.isoformat() if source_modified else None,
            "attempt": attempt,
        },
    )


async def store_work(ctx: EngineContext, tx: Tx, work: PageWork) -> None:
    """Store ``work`` in ``tx``: bulk statements, one per kind of row. The outbox rows are replaced by
    the stored ones that are still to be carried out (a key already done is not written twice)."""
    from syncd import metrics

    if work.merge_conflicts:
        metrics.conflicts.inc(work.merge_conflicts)
        work.merge_conflicts = 0
    if work.appointments:
        await tx.save_appointments(list(work.appointments.values()))
    if work.links:
        await tx.upsert_links(list(work.links.values()))
    for connector, external_id in work.retire:
        await tx.retire_links(connector, [external_id])
    if work.supersede:
        await tx.outbox_supersede_creates(work.supersede, reason="superseded: a record there was linked "
                                                                 "to this appointment (onboarding)")
    if work.outbox:
        work.outbox, queued = await _one_create_each(tx, work.outbox)
        await tx.outbox_add(work.outbox)
        stored = await tx.outbox_by_keys([o.idempotency_key for o in work.outbox])
        work.outbox = [o for o in stored if o.state in ("pending", "sending")] + queued
    await _open_link_conflicts(ctx, tx, work)
    if work.dead_letters:
        await tx.add_dead_letters(work.dead_letters)
    if work.audit:
        await tx.add_audit(work.audit)
    if work.lineage:
        await tx.add_lineage(work.lineage)
    for cid, conflict, reason, connector in work.conflicts:
        values = dict(conflict.values) if conflict is not None else {}
        field_name = conflict.field if conflict is not None else "status"
        await tx.open_conflict(cid, field_name, values, reason, connector=connector)
        ctx.stats.of(connector).conflicts += 1
        work.decide(Decision("conflict", connector, cid, None, (field_name,), reason))


async def _one_create_each(tx: Tx, items: list[OutboxItem]) -> tuple[list[OutboxItem], list[OutboxItem]]:
    """One queued create per appointment and target: a create planned again (a merge while the first
    one waits, e.g. held until the target's window is read) is left to the queued one, which the
    writer brings up to the latest merge before sending. Returns the items to queue and the queued
    ``pending`` creates that stand in for dropped ones (to be carried out with the page)."""
    creates = [i for i in items if i.op == WriteKind.CREATE.value]
    if not creates:
        return items, []
    open_creates = await tx.outbox_open_creates({i.canonical_id for i in creates})
    queued = {(i.canonical_id, i.connector): i for i in open_creates}
    out: list[OutboxItem] = []
    stand_ins: dict[tuple[str, str], OutboxItem] = {}
    planned: set[tuple[str, str]] = set()
    for item in items:
        pair = (item.canonical_id, item.connector)
        if item.op == WriteKind.CREATE.value:
            if pair in queued:
                if queued[pair].state == "pending":
                    stand_ins[pair] = queued[pair]
                continue
            if pair in planned:
                continue
            planned.add(pair)
        out.append(item)
    return out, list(stand_ins.values())


async def _open_link_conflicts(ctx: EngineContext, tx: Tx, work: PageWork) -> None:
    """Open (or refresh) the link conflicts onboarding could not decide, and remember that this pass
    found them again (a full pass closes those it no longer finds: ``Reconciler.window_read``)."""
    for cid, entry in sorted(work.link_conflicts.items()):
        values, reason = link_conflict(entry.connector, entry.rule, entry.records, entry.appointments,
                                       entry.holders)
        await tx.open_conflict(cid, LINK_FIELD, values, reason[:500])
        ctx.link_conflicts_seen.setdefault(entry.connector, set()).add(cid)
        ctx.stats.of(entry.connector).conflicts += 1
        log.warning("link_ambiguous", connector=entry.connector, canonical_id=cid, count=len(entry.records),
                    kind=entry.rule)
        work.decide(Decision("conflict", entry.connector, cid, None, (LINK_FIELD,), f"ambiguous {entry.rule}"))


def payload_appointment(payload: dict[str, Any], key: str) -> Appointment | None:
    """The appointment an outbox payload holds under ``key`` (``merged`` or ``base``), if any."""
    raw = payload.get(key)
    return Appointment.from_json(raw) if raw else None


def ids_of(items: Sequence[OutboxItem]) -> list[int]:
    """The stored ids of ``items`` (an item not stored yet has none)."""
    return [i.id for i in items if i.id is not None]
