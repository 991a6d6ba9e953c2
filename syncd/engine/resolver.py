"""Settling an open conflict by taking one member's version (``syncd conflicts resolve``).

:meth:`Resolver.plan` re-reads every member's record (one read per member), checks that none changed
since syncd last read it, and asks each target's connector whether it can take the chosen version
(:meth:`~syncd.connector.Connector.write_refusal`); it writes nothing (:mod:`syncd.engine.resolve`
holds the plan's values). :meth:`Resolver.take` stores the merge and makes the writes through the
outbox and the writer, as every write.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from syncd import lineage
from syncd.connector import VendorRecord, WriteKind
from syncd.engine.context import EngineContext, now
from syncd.engine.resolve import MemberState, Resolution, TargetPlan, holds_news, shown, take_unit, unit_of, with_fields
from syncd.engine.work import PageWork, outbox_item, store_work, target_op
from syncd.engine.writer import Writer
from syncd.ledger.models import AppointmentRow, AuditEntry, ConflictRow, Link
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND, SYNC_FIELDS, Appointment

__all__ = ["Resolver"]


class Resolver:
    def __init__(self, ctx: EngineContext, writer: Writer) -> None:
        self.ctx = ctx
        self.writer = writer

    async def plan(self, conflict: ConflictRow, take: str, links: Sequence[Link],
                   row: AppointmentRow | None) -> Resolution:
        """What settling ``conflict`` by taking ``take``'s version would write to each member."""
        ctx = self.ctx
        cid = conflict.canonical_id
        plan = Resolution(conflict.id or 0, cid, conflict.field, take)
        group = ctx.group_of.get(take)
        active = {lk.connector: lk for lk in links if not lk.retired and lk.connector in ctx.connectors}
        if row is None or row.snapshot is None or group is None:
            return plan.but(problem=f"the ledger holds no merged record of {cid} in a group of {take}")
        if take not in active:
            holders = ", ".join(sorted(active)) or "none"
            return plan.but(problem=f"{take} holds no linked record of {cid} (members that do: {holders})")
        base = Appointment.from_json(row.snapshot)
        members = [m for m in group.members if m in active]
        read = await asyncio.gather(*(ctx.connectors[m].read([active[m].external_id]) for m in members))
        records = {m: got[active[m].external_id] for m, got in zip(members, read, strict=True)}
        states, lookups = await self._states(base, active, records)
        for m, state in states.items():
            if state.canonical is None or state.vendor is None:
                return plan.but(problem=(f"{m}'s record {state.problem}: the choice cannot be checked against it; "
                                         "fix that first (a `syncd resync` carries a deletion to the others)"))
            comparable = ctx.members.comparable(m, state.canonical, base, state.limits)
            if holds_news(comparable, state.canonical.fingerprint(), active[m], base):
                return plan.but(problem=(
                    f"{m} changed the appointment since syncd last read it: run `syncd resync` first, so that the "
                    "choice is made on what every system holds now"))
        plan = plan.but(versions={m: (records[m].version, records[m].modified_at) for m in members})
        chosen = self._evaluate(plan, take, base, members, states, lookups)
        if not chosen.refused:
            return chosen
        working = tuple(m for m in members if m != take
                        and not self._evaluate(plan, m, base, members, states, lookups).refused)
        return chosen.but(take=take, alternatives=working)

    async def _states(self, base: Appointment, active: Mapping[str, Link], records: Mapping[str, VendorRecord]
                      ) -> tuple[dict[str, MemberState], dict[str, dict[str, dict[str, str]]]]:
        """Each member's record in canonical keys, and each member's ids for every reference a merge
        may take (for the translation)."""
        ctx = self.ctx
        keys: dict[str, set[str]] = defaultdict(set)
        for name in REFERENCE_FIELDS:
            if getattr(base, name) is not None:
                keys[REFERENCE_KIND[name]].add(getattr(base, name))
        states: dict[str, MemberState] = {}
        async with ctx.ledger.transaction(readonly=True) as tx:
            for m, rec in records.items():
                ext = active[m].external_id
                if rec.deleted or rec.appointment is None:
                    why = "is deleted" if rec.deleted else f"cannot be read ({rec.error})"
                    states[m] = MemberState(m, ext, None, None, problem=why)
                    continue
                canonical, missing = ctx.members.to_canonical(m, rec, await ctx.source_refs(tx, m, [rec]))
                if canonical is None:
                    states[m] = MemberState(m, ext, rec.appointment, None, problem=missing)
                    continue
                states[m] = MemberState(m, ext, rec.appointment, canonical, ctx.members.limits(m, rec))
                for name in REFERENCE_FIELDS:
                    if getattr(canonical, name) is not None:
                        keys[REFERENCE_KIND[name]].add(getattr(canonical, name))
            lookups = {m: {kind: await tx.crosswalk_lookup(kind, sorted(values), m) for kind, values in keys.items()}
                       for m in records}
        return states, lookups

    def _evaluate(self, plan: Resolution, choice: str, base: Appointment, members: Sequence[str],
                  states: Mapping[str, MemberState], lookups: Mapping[str, Mapping[str, Mapping[str, str]]],
                  ) -> Resolution:
        """What taking ``choice``'s version writes to each member, and whether any refuses it."""
        ctx = self.ctx
        chosen = states[choice]
        assert chosen.canonical is not None
        unit = unit_of(plan.field)
        if set(unit) & chosen.limits.not_stored:
            return plan.but(take=choice,
                            problem=f"{choice} does not hold {plan.field}: it has no version of it to take")
        mine = ctx.members.comparable(choice, chosen.canonical, base, chosen.limits)
        merged = take_unit(base, mine, unit)
        if isinstance(merged, str):
            return plan.but(take=choice, problem=f"{choice}'s {plan.field}: {merged}")
        at = now()
        targets = [self._target(m, states[m], merged, unit, lookups[m], at) for m in members]
        return plan.but(take=choice, merged=merged, targets=tuple(targets))

    def _target(self, m: str, state: MemberState, merged: Appointment, unit: Sequence[str],
                lookup: Mapping[str, Mapping[str, str]], at: datetime) -> TargetPlan:
        assert state.canonical is not None and state.vendor is not None
        view = self.ctx.members.comparable(m, state.canonical, merged, state.limits)
        names = [f for f in unit if f not in state.limits.unwritable and getattr(view, f) != getattr(merged, f)]
        kept = tuple(f for f in unit
                     if f in state.limits.unwritable and getattr(state.canonical, f) != getattr(merged, f))
        if not names:
            return TargetPlan(m, state.external_id, "none", not_written=kept)
        wanted = self.ctx.members.translate(m, merged, lookup)
        if isinstance(wanted, str):
            return TargetPlan(m, state.external_id, "none", tuple(names), refusal=f"has {wanted}")
        connector = self.ctx.connectors[m]
        desired = with_fields(state.vendor, wanted, names)
        if isinstance(desired, str):
            return TargetPlan(m, state.external_id, "none", tuple(names), refusal=desired)
        op = "replace" if self.ctx.members.needs_replace(m, state.vendor, desired) else target_op(merged, view).value
        refusal = connector.write_refusal(state.vendor, desired, now=at)
        return TargetPlan(m, state.external_id, op, tuple(names), shown(view, names), shown(merged, names), refusal,
                          kept)

    async def take(self, plan: Resolution, links: Sequence[Link]) -> str | None:
        """Carry out a resolution that nothing refused: store the merge, queue and make the writes (the
        outbox, as every write), and close the conflict once they are done. Returns why it is not done
        (the conflict then stays open, with the refusal the vendor gave), or None."""
        assert plan.merged is not None and not plan.refused
        ctx = self.ctx
        group = ctx.group_of[plan.take]
        merged = plan.merged
        active = {lk.connector: lk for lk in links if not lk.retired}
        async with ctx.ledger.transaction(readonly=True) as tx:
            row = (await tx.appointments([plan.canonical_id])).get(plan.canonical_id)
        base = Appointment.from_json(row.snapshot) if row is not None and row.snapshot is not None else merged
        work = PageWork()
        for name, (version, modified_at) in plan.versions.items():
            link = active[name]
            if version != link.version:
                # read just now and found to hold nothing new (else the plan is refused): its version moved
                # without news, and the pre-write check compares with it
                link.version, link.modified_at = version, modified_at
                work.link(link)
        for target in plan.writes:
            link = active[target.connector]
            believed = Appointment.from_json(link.seen) if link.seen is not None else base
            op = WriteKind.CANCEL if target.op == WriteKind.CANCEL.value else WriteKind.UPDATE
            work.outbox.append(outbox_item(plan.canonical_id, target.connector, op, base=believed, merged=merged,
                                           source=plan.take, changed=list(target.fields)))
        work.audit.append(AuditEntry(canonical_id=plan.canonical_id, connector=plan.take, action="resolved",
                                     fields=list(unit_of(plan.field)), fingerprint_before=base.fingerprint(),
                                     fingerprint_after=merged.fingerprint(),
                                     detail=f"conflict {plan.conflict_id}: took {plan.take}"))
        taken_at = plan.versions.get(plan.take, (None, None))[1]
        work.lineage.append(lineage.resolved(plan.canonical_id, plan.take,
                                             [f for f in unit_of(plan.field) if f in SYNC_FIELDS], taken_at,
                                             f"conflict {plan.conflict_id}: took {plan.take}'s version"))
        work.appointments[plan.canonical_id] = AppointmentRow(canonical_id=plan.canonical_id, sync_group=group.name,
                                                              snapshot=merged.to_json(),
                                                              fingerprint=merged.fingerprint())
        async with ctx.ledger.transaction() as tx:
            await store_work(ctx, tx, work)
        ctx.report(work.decisions)
        return await self._finish(plan, work)

    async def _finish(self, plan: Resolution, work: PageWork) -> str | None:
        ctx = self.ctx
        failed_before = ctx.stats.total("dead_lettered") + ctx.stats.total("conflicts")
        if work.outbox:
            await self.writer.execute(work.outbox)
        if ctx.stats.stopped:
            name, why = next(iter(ctx.stats.stopped.items()))
            return f"{name} {why}: the write stays queued and is made by the next pass; the conflict stays open"
        if ctx.stats.total("dead_lettered") + ctx.stats.total("conflicts") > failed_before:
            return ("a target refused the write after all (see `syncd conflicts list` and `syncd deadletters list`); "
                    "the conflict stays open")
        async with ctx.ledger.transaction() as tx:
            await tx.resolve_conflict(plan.conflict_id, f"took {plan.take}")
        return None
