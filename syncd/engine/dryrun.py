"""Dry run: what the writer would do with the planned writes, counted without sending anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from syncd.connector import WriteKind
from syncd.engine.context import EngineContext
from syncd.engine.fields import missing_on_create
from syncd.engine.work import payload_appointment
from syncd.ledger.models import OutboxItem
from syncd.ledger.store import Tx
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND, Appointment

if TYPE_CHECKING:
    from syncd.engine.writer import Writer

__all__ = ["count_planned"]


async def count_planned(ctx: EngineContext, writer: Writer, items: Sequence[OutboxItem]) -> None:
    """Count what the writer would do with ``items`` (translations and replace decisions included)."""
    if not items:
        return
    overlay = ctx.overlay
    async with ctx.ledger.transaction(readonly=True) as tx:
        # a create is counted once, and not at all where a record is linked or it is blocked
        creates = [i for i in items if i.op == WriteKind.CREATE.value]
        linked = {(lk.canonical_id, lk.connector)
                  for links in (await ctx.links_of(tx, {i.canonical_id for i in creates})).values()
                  for lk in links if not lk.retired}
        blocked: set[tuple[str, str]] = set()
        for target in {i.connector for i in creates}:
            blocked |= {(i.canonical_id, target) for i in await writer.blocked_creates(
                tx, target, [i for i in creates if i.connector == target])}
        for item in items:
            if item.op == WriteKind.CREATE.value:
                pair = (item.canonical_id, item.connector)
                if pair in linked or pair in blocked or (overlay is not None and pair in overlay.counted):
                    continue
                if overlay is not None:
                    overlay.counted.add(pair)
            await _count_one(ctx, tx, item)


async def _count_one(ctx: EngineContext, tx: Tx, item: OutboxItem) -> None:
    stats = ctx.stats.of(item.connector)
    connector = ctx.connectors.get(item.connector)
    merged = Appointment.from_json(item.payload["merged"])
    base = payload_appointment(item.payload, "base")
    lookup: dict[str, dict[str, str]] = {}
    for appt in (merged, base):
        for name in REFERENCE_FIELDS:
            key = getattr(appt, name) if appt is not None else None
            if key is not None:
                kind = REFERENCE_KIND[name]
                lookup.setdefault(kind, {}).update(await tx.crosswalk_lookup(kind, [key], item.connector))
    desired = ctx.members.translate(item.connector, merged, lookup)
    if isinstance(desired, str) or (
            item.op == WriteKind.CREATE.value and connector is not None
            and missing_on_create(desired, connector.capabilities.required_on_create)):
        stats.dead_lettered += 1
        return
    believed = ctx.members.translate(item.connector, base, lookup) if base is not None else None
    if (item.op == WriteKind.UPDATE.value and connector is not None and isinstance(believed, Appointment)
            and ctx.members.needs_replace(item.connector, believed, desired)):
        stats.created += 1
        stats.cancelled += 1
    elif item.op == WriteKind.CREATE.value:
        stats.created += 1
    elif item.op == WriteKind.CANCEL.value:
        stats.cancelled += 1
    else:
        stats.updated += 1
