"""Plan: vendor records -> canonical -> three-way merge -> decisions. Pure over values, no I/O.

The reconciler (:mod:`syncd.engine.reconcile`) reads what a page needs from the ledger (links, merge
bases, crosswalk keys, onboarding candidates) and hands it here; :class:`Planner` decides, record by
record, and writes its decisions into a :class:`~syncd.engine.work.PageWork`: the merged snapshots,
the links, the outbox rows of the writes each other member needs, audit and lineage entries, dead
letters and conflicts. The writer's GET/PUT race loop re-merges through :meth:`Planner.remerge`.
Unit-testable without a ledger: give it a :class:`~syncd.engine.canonical.Members` and values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd import lineage
from syncd.config import SyncGroup
from syncd.connector import VendorRecord, WriteKind
from syncd.engine.canonical import Members
from syncd.engine.fields import Limits, writable
from syncd.engine.ids import new_canonical_id
from syncd.engine.merge import MergeResult, Side, merge, merge_linked, merge_member, news_of
from syncd.engine.onboard import NEW, Action, Candidate, Held, Verdict, crowded, judge, retired_copies
from syncd.engine.stats import PassStats
from syncd.engine.work import CANCELLED, Decision, LinkConflict, PageWork, outbox_item, target_op
from syncd.ledger.models import AppointmentRow, AuditEntry, DeadLetter, Link, OutboxItem
from syncd.logging import get_logger, mask_contact
from syncd.model import Appointment, Status, slot_key

__all__ = ["CANONICAL_ID", "Page", "Planner", "Unlinked"]

log = get_logger("syncd.engine")

CANONICAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Unlinked:
    """A record read without a link: what onboarding decides about (its canonical form, the reference
    it carries, its slot)."""

    record: VendorRecord
    canonical: Appointment
    reference: str | None
    slot: str | None


@dataclass
class Page:
    """What the ledger holds about one page's records, read by the reconciler for the planner."""

    group: SyncGroup
    source: str
    links: Mapping[str, Link]
    """external id -> its link"""
    snapshots: dict[str, AppointmentRow]
    """canonical id -> merged snapshot (the merge base)"""
    member_links: dict[str, list[Link]]
    """canonical id -> every member's link"""
    refs: Mapping[str, Mapping[str, str]]
    """kind -> the source's reference -> canonical key"""


def hinted_id(rec: VendorRecord) -> str | None:
    """The canonical id a record carries in its idempotency field, when it is well-formed."""
    return rec.syncd_id if rec.syncd_id and CANONICAL_ID.match(rec.syncd_id) else None


class Planner:
    """Decides what each record means for the group and what every member needs written."""

    def __init__(self, members: Members, stats: PassStats) -> None:
        self.members = members
        self.stats = stats

    # ------------------------------------------------------------------ onboarding
    def unlinked(self, page: Page, records: Sequence[VendorRecord]) -> list[Unlinked]:
        """The page's readable records without a link (those whose references all have a crosswalk key)."""
        out: list[Unlinked] = []
        for rec in records:
            if rec.external_id in page.links or rec.deleted or rec.error is not None or rec.appointment is None:
                continue
            canonical, _missing = self.members.to_canonical(page.source, rec, page.refs)
            if canonical is None:
                continue  # dead-lettered by the reconcile (a reference without a crosswalk entry)
            out.append(Unlinked(rec, canonical, hinted_id(rec), slot_key(canonical.sync_values())))
        return out

    def verdicts(self, page: Page, unlinked: list[Unlinked],
                 by_slot: Mapping[str, Sequence[AppointmentRow]]) -> dict[str, Verdict]:
        """What each unlinked record stands for (:mod:`syncd.engine.onboard`): the group's appointment
        it holds the reference of, or the one with its slot (``by_slot``: the group's appointments at
        the page's slots, already merged into ``page.snapshots``)."""
        taken: dict[str, str] = {}  # appointments this page links a record of the source to

        def candidate(cid: str) -> Candidate:
            row = page.snapshots.get(cid)
            holder = taken.get(cid) or next((lk.external_id for lk in page.member_links.get(cid, [])
                                             if lk.connector == page.source and not lk.retired), None)
            appt = Appointment.from_json(row.snapshot) if row is not None and row.snapshot is not None else None
            return Candidate(cid, appt, holder)

        known = set(page.snapshots) | set(page.member_links)
        verdicts: dict[str, Verdict] = {}
        leftovers = retired_copies([Held(u.record.external_id, u.reference, u.canonical.status.terminal,
                                         u.record.replaces) for u in unlinked])
        for u in unlinked:
            if u.record.external_id in leftovers:
                verdicts[u.record.external_id] = Verdict(Action.IGNORE, u.reference, "retired")
        unlinked = [u for u in unlinked if u.record.external_id not in leftovers]
        crowded_refs = crowded(u.reference for u in unlinked)
        by_reference = [u for u in unlinked
                        if u.reference is not None and (u.reference in known or u.reference in crowded_refs)]
        by_slot_only = [u for u in unlinked if u not in by_reference]
        crowded_slots = crowded(u.slot for u in by_slot_only)
        # references first: a record that names its appointment takes it before a slot match could
        for u in (*by_reference, *by_slot_only):
            by_ref = candidate(u.reference) if u.reference is not None and u.reference in known else None
            slot_candidates = [candidate(row.canonical_id) for row in by_slot.get(u.slot, [])] if u.slot else []
            verdict = judge(u.canonical, u.reference, by_reference=by_ref, by_slot=slot_candidates,
                            reference_crowded=u.reference in crowded_refs, slot_crowded=u.slot in crowded_slots)
            if verdict.action is Action.LINK and verdict.canonical_id is not None:
                taken[verdict.canonical_id] = u.record.external_id
            verdicts[u.record.external_id] = verdict
        return verdicts

    # ------------------------------------------------------------------ one record
    def reconcile(self, page: Page, rec: VendorRecord, work: PageWork, verdict: Verdict = NEW) -> None:
        """Decide what ``rec`` (read from ``page.source``) means, into ``work``."""
        link = page.links.get(rec.external_id)
        if link is not None and link.retired:
            return  # the old id of a replace flow: its later events are ignored
        if rec.error is not None:
            self.dead_letter(work, page.source, "mapping", str(rec.error),
                             canonical_id=link.canonical_id if link else None, external_id=rec.external_id,
                             payload={"phase": "read", "source": page.source})
            return
        if rec.deleted:
            if link is not None:
                self._deleted(page, rec, link, work)
            return
        canonical, missing = self.members.to_canonical(page.source, rec, page.refs)
        if canonical is None:
            self.dead_letter(work, page.source, "missing_reference", missing or "missing reference",
                             canonical_id=link.canonical_id if link else None, external_id=rec.external_id,
                             payload={"phase": "read", "source": page.source})
            return
        if link is None:
            self._onboard(page, rec, canonical, work, verdict)
        else:
            self._linked(page, rec, canonical, link, work)

    def _deleted(self, page: Page, rec: VendorRecord, link: Link, work: PageWork) -> None:
        row = page.snapshots.get(link.canonical_id)
        if row is None or row.snapshot is None:
            return
        base = Appointment.from_json(row.snapshot)
        work.retire.append((page.source, rec.external_id))
        if base.status.terminal:
            self.stats.of(page.source).unchanged += 1
            return
        self.stats.of(page.source).changed += 1
        self.merge_change(page, rec, link, base, base.with_changes(status=Status.CANCELLED), work, deleted=True)

    def _onboard(self, page: Page, rec: VendorRecord, canonical: Appointment, work: PageWork, verdict: Verdict) -> None:
        """A record without a link: the group may hold this appointment already (the reference it
        carries, or its slot)."""
        source = page.source
        if verdict.action is Action.IGNORE:
            self._duplicate_reference(work, source, rec, verdict)
            return
        if verdict.action is Action.AMBIGUOUS:
            for cid in verdict.involved:
                entry = work.link_conflicts.setdefault(cid, LinkConflict(source, verdict.rule))
                entry.records.add(rec.external_id)
                entry.appointments.update(verdict.involved)
                entry.holders.update(verdict.holders)
            return
        if verdict.action is Action.LINK and verdict.canonical_id is not None:
            link = Link(canonical_id=verdict.canonical_id, connector=source, external_id=rec.external_id)
            work.supersede.append((link.canonical_id, source))
            self.stats.of(source).linked += 1
            row = page.snapshots.get(link.canonical_id)
            if row is None or row.snapshot is None:
                self.new_appointment(page, rec, canonical, work, canonical_id=link.canonical_id, linked=verdict.rule)
            else:
                self.link_existing(page, rec, canonical, link, row, work, verdict.rule)
            return
        self.new_appointment(page, rec, canonical, work)

    def _linked(self, page: Page, rec: VendorRecord, canonical: Appointment, link: Link, work: PageWork) -> None:
        source = page.source
        stats = self.stats.of(source)
        fingerprint = canonical.fingerprint()
        row = page.snapshots.get(link.canonical_id)
        if row is None or row.snapshot is None:
            self.new_appointment(page, rec, canonical, work, canonical_id=link.canonical_id)
            return
        if link.seen is None and link.fingerprint is None:
            # linked by a crosswalk row and read here for the first time: the two were never merged
            self.link_existing(page, rec, canonical, link, row, work, "crosswalk")
            return
        if rec.modified_at is not None and link.modified_at is not None and rec.modified_at < link.modified_at:
            # read before a write of ours (or a newer read) that committed while this page waited: the
            # record shows an older state than the ledger knows, not somebody's change (merging it
            # would revert the newer one everywhere)
            stats.unchanged += 1
            work.decide(Decision("unchanged", source, link.canonical_id, rec.external_id, detail="stale read"))
            return
        # compare what the vendor can express: fields it cannot hold, a lossy status and the reasons it
        # fills itself after a cancellation are taken from the merge base
        base = Appointment.from_json(row.snapshot)
        canonical = self.members.comparable(source, canonical, base, self.members.limits(source, rec))
        # echo suppression compares the whole mapped record, never the version alone: a vendor whose
        # write answer lacks another user's concurrent change keeps our version on their content
        known = (link.fingerprint, link.written_fingerprint)
        if fingerprint in known or canonical.fingerprint() in known:
            stats.unchanged += 1
            work.decide(Decision("unchanged", source, link.canonical_id, rec.external_id))
            held = canonical.to_json()
            if rec.version != link.version or link.seen != held:
                link.version, link.modified_at, link.seen = rec.version, rec.modified_at, held
                work.link(link)
            return
        seen = Appointment.from_json(link.seen) if link.seen is not None else None
        if seen is not None and news_of(canonical, seen, base).fingerprint() == base.fingerprint():
            # it differs from the merge base only where it still holds what it held before: a write of
            # ours on its way there, or a read older than that write -- nothing new, nothing undone
            stats.unchanged += 1
            work.decide(Decision("unchanged", source, link.canonical_id, rec.external_id, detail="lagging"))
            return
        stats.changed += 1
        self.merge_change(page, rec, link, base, canonical, work, seen=seen)

    def new_appointment(self, page: Page, rec: VendorRecord, canonical: Appointment, work: PageWork,
                        canonical_id: str | None = None, linked: str | None = None) -> None:
        """A record no merged appointment stands for yet: it becomes the appointment's first version
        (``canonical_id``: the id a crosswalk row or its reference gave it; ``linked``: how onboarding
        found that id), created in the group's other members."""
        source, group = page.source, page.group
        fingerprint = canonical.fingerprint()
        cid = canonical_id or hinted_id(rec) or new_canonical_id()
        self.stats.of(source).changed += 1
        work.appointments[cid] = AppointmentRow(
            canonical_id=cid, sync_group=group.name, snapshot=canonical.to_json(), fingerprint=fingerprint
        )
        work.link(Link(canonical_id=cid, connector=source, external_id=rec.external_id, version=rec.version,
                       fingerprint=fingerprint, modified_at=rec.modified_at, seen=canonical.to_json()))
        work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="linked" if linked else "seen-new",
                                     fields=[], fingerprint_before=None, fingerprint_after=fingerprint,
                                     detail=f"by {linked}" if linked else None))
        work.lineage.append(lineage.created(cid, source, canonical, rec.modified_at, linked=linked))
        if linked:
            work.decide(Decision("linked", source, cid, rec.external_id, detail=linked))
        linked_here = {lk.connector for lk in page.member_links.get(cid, []) if not lk.retired}
        targets = [m for m in group.create_in if m != source and m not in linked_here and m in self.members]
        if targets and not canonical.status.creatable:
            for target in targets:
                self.stats.of(target).unchanged += 1
                work.decide(Decision("create_skipped", target, cid, None, detail=canonical.status.value))
            return
        for target in targets:
            work.outbox.append(outbox_item(cid, target, WriteKind.CREATE, base=None, merged=canonical,
                                           source=source, changed=[]))

    def link_existing(self, page: Page, rec: VendorRecord, canonical: Appointment, link: Link,
                      row: AppointmentRow, work: PageWork, rule: str) -> None:
        """``source``'s record stands for appointment ``link.canonical_id`` but was never merged with it
        (onboarding found it, or a crosswalk row linked it): merge the two as unrelated versions, so that
        nothing is written unless their fields differ, and then each field is settled by ``owners``, else
        by the most recent change (:func:`syncd.engine.merge.merge_linked`)."""
        source, cid = page.source, link.canonical_id
        base = Appointment.from_json(row.snapshot or {})
        limits = self.members.limits(source, rec)
        canonical = self.members.comparable(source, canonical, base, limits)
        others = [lk for lk in page.member_links.get(cid, []) if lk.connector != source and not lk.retired]
        # the members whose records made the snapshot (a crosswalk row's link is not read yet)
        known = [lk for lk in others if lk.seen is not None or lk.fingerprint is not None]
        times = [lk.modified_at for lk in known if lk.modified_at is not None]
        lossy = bool(known) and base.status != canonical.status and all(
            self.members.same_native(lk.connector, base.status, canonical.status) for lk in known)
        merge_base = base
        if lossy:
            # the members linked so far cannot tell these statuses apart (Zoho "Scheduled" for pending and
            # booked): this record's is the precise one, and theirs need no write
            reason = canonical.cancellation_reason if canonical.status in CANCELLED else None
            with contextlib.suppress(ValueError):
                merge_base = base.with_changes(status=canonical.status, cancellation_reason=reason)
        result = merge_linked(merge_base, max(times, default=None), Side(source, canonical, rec.modified_at,
                                                                        limits.no_news), page.group.owners)
        result.changed = result.merged.diff(base)
        self.record_merge(work, cid, source, base, result, modified={source: rec.modified_at},
                          detail=f"linked by {rule}")
        merged = result.merged
        to_others = [f for f in result.changed if not (lossy and f in ("status", "cancellation_reason"))]
        link.version, link.fingerprint = rec.version, canonical.fingerprint()
        link.modified_at, link.seen = rec.modified_at, canonical.to_json()
        work.link(link)
        work.appointments[cid] = AppointmentRow(canonical_id=cid, sync_group=page.group.name,
                                                snapshot=merged.to_json(), fingerprint=merged.fingerprint())
        work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="linked", fields=list(result.changed),
                                     fingerprint_before=base.fingerprint(), fingerprint_after=merged.fingerprint(),
                                     detail=f"by {rule}: {rec.external_id}"[:255]))
        if result.changed or merged.diff(canonical):
            self.stats.of(source).changed += 1
        else:
            self.stats.of(source).unchanged += 1
        work.decide(Decision("linked", source, cid, rec.external_id, tuple(result.changed), detail=rule))
        self.plan_targets(page.group, cid, source, base, merged, to_others, [*others, link], work,
                          source_view=(rec, canonical), source_modified=rec.modified_at)

    def merge_change(self, page: Page, rec: VendorRecord, link: Link, base: Appointment, canonical: Appointment,
                     work: PageWork, *, deleted: bool = False, seen: Appointment | None = None) -> None:
        """Merge ``source``'s record (``canonical``: what it holds) into the base, store it and plan the
        writes to the other members. With ``seen`` (what the source was last known to hold) the merge
        is three-way between the record and the base; without it the record's differences from the
        base are its changes."""
        source, group, cid = page.source, page.group, link.canonical_id
        side = Side(source, canonical, rec.modified_at, self.members.limits(source, rec).no_news)
        if seen is not None:
            others = [lk.modified_at for lk in page.member_links.get(cid, [])
                      if lk.connector != source and not lk.retired and lk.modified_at is not None]
            result = merge_member(seen, side, base, max(others, default=None), group.owners)
            # written back to the source: only what the merge refused from its own changes; the fields
            # it lags behind on are on their way there already
            source_holds = news_of(canonical, seen, result.merged)
        else:
            result = merge(base, [side], group.owners)
            source_holds = canonical
        self.record_merge(work, cid, source, base, result, modified={source: rec.modified_at},
                          detail="deleted there" if deleted else None)
        merged = result.merged
        if not deleted:
            link.version, link.fingerprint = rec.version, canonical.fingerprint()
            link.modified_at, link.seen = rec.modified_at, canonical.to_json()
            work.link(link)
        work.appointments[cid] = AppointmentRow(
            canonical_id=cid, sync_group=group.name, snapshot=merged.to_json(), fingerprint=merged.fingerprint()
        )
        self.plan_targets(group, cid, source, base, merged, result.changed, page.member_links.get(cid, []), work,
                          source_view=None if deleted else (rec, source_holds), source_modified=rec.modified_at)

    def _duplicate_reference(self, work: PageWork, source: str, rec: VendorRecord, verdict: Verdict) -> None:
        """A second record of ``source`` holds the reference of an appointment linked to another one:
        the link in force decides (docs/vendors/README.md rule 10); this one is neither linked nor copied."""
        cid = verdict.canonical_id or ""
        self.stats.of(source).unchanged += 1
        if verdict.rule == "retired":
            why = f"{rec.external_id} is a cancelled copy holding the reference of {cid} (a replace flow's old record)"
        else:
            why = f"{rec.external_id} holds the reference of {cid}, linked to {', '.join(verdict.holders)}"
            log.warning("reference_held_twice", connector=source, canonical_id=cid, external_id=rec.external_id)
        if cid:
            work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="duplicate-ignored", fields=[],
                                         detail=why[:255]))
        work.decide(Decision("unchanged", source, cid or None, rec.external_id, detail=verdict.rule))

    # ------------------------------------------------------------------ writes to plan
    def plan_targets(self, group: SyncGroup, cid: str, source: str, base: Appointment, merged: Appointment,
                     changed: list[str], links: Sequence[Link], work: PageWork, *,
                     source_view: tuple[VendorRecord, Appointment] | None, attempt: int = 0,
                     source_modified: datetime | None = None) -> None:
        """The writes that bring every member of ``group`` from what it holds to ``merged``."""
        active = {lk.connector: lk for lk in links if not lk.retired and lk.connector in self.members}

        def plan(member: str, op: WriteKind, fields: list[str], from_: Appointment | None) -> None:
            work.outbox.append(outbox_item(cid, member, op, base=from_, merged=merged, source=source, changed=fields,
                                           attempt=attempt, source_modified=source_modified))

        for member in group.members:
            if member not in self.members:
                continue
            if member == source:
                if source_view is not None:
                    rec, seen = source_view
                    # the source keeps what the merge refused from it (e.g. leaving a terminal status)
                    differs = writable(merged.diff(seen), self.members.limits(member, rec))
                    if differs:
                        plan(member, target_op(merged, seen), differs, seen)
            elif member in active:
                # what the member does not store or only its own users set is never sent there
                to_send = writable(changed, self.members.limits(member))
                if to_send:
                    plan(member, target_op(merged, base), to_send, base)
            elif member in group.create_in and merged.status.creatable:
                plan(member, WriteKind.CREATE, [], None)

    def record_merge(self, work: PageWork, cid: str, source: str, base: Appointment, result: MergeResult, *,
                     modified: Mapping[str, datetime | None] | None = None, detail: str | None = None) -> None:
        """The audit and lineage of one merge; a conflict no policy settled is opened."""
        work.lineage.extend(lineage.merged(cid, source, result, modified or {}, detail=detail))
        if result.changed:
            work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="merged",
                                         fields=list(result.changed), fingerprint_before=base.fingerprint(),
                                         fingerprint_after=result.merged.fingerprint()))
        for conflict in result.conflicts:
            work.merge_conflicts += 1
            work.audit.append(AuditEntry(canonical_id=cid, connector=conflict.winner,
                                         action="conflict-" + conflict.rule, fields=[conflict.field],
                                         fingerprint_before=base.fingerprint(),
                                         fingerprint_after=result.merged.fingerprint()))
            if conflict.winner is None:
                work.conflicts.append((cid, conflict, "changed on several systems; no policy settled it", source))
        for connector, name, why in result.ignored:
            work.audit.append(AuditEntry(canonical_id=cid, connector=connector, action="ignored", fields=[name],
                                         detail=why[:255]))

    def dead_letter(self, work: PageWork, connector: str, kind: str, reason: str, *, canonical_id: str | None,
                    external_id: str | None, payload: dict[str, Any], retriable: bool = True) -> None:
        self.stats.of(connector).dead_lettered += 1
        work.dead_letters.append(DeadLetter(connector=connector, canonical_id=canonical_id, external_id=external_id,
                                            kind=kind, reason=mask_contact(reason), payload=payload,
                                            retriable=retriable))
        entry = lineage.dead_letter(canonical_id, connector, kind, reason)
        if entry is not None:
            work.lineage.append(entry)
        work.decide(Decision("dead_letter", connector, canonical_id, external_id, detail=kind))

    # ------------------------------------------------------------------ the writer's re-plans
    def remerge(self, group: SyncGroup, item: OutboxItem, changed: Iterable[str], fresh: VendorRecord,
                fresh_canonical: Appointment, links: Sequence[Link], work: PageWork, attempt: int) -> Appointment:
        """The target changed between our read and our write (a GET/PUT race): merge what it holds now
        (``fresh``) with the write we meant to make, and plan the writes again -- to the target from
        what it holds now, to the others from our last merge. Returns the new merge."""
        target = item.connector
        base_json = item.payload.get("base")
        base = Appointment.from_json(base_json) if base_json else fresh_canonical
        # read as the reconcile reads it: a lossy status or a field it cannot hold is no change of its own
        fresh_limits = self.members.limits(target, fresh)
        fresh_canonical = self.members.comparable(target, fresh_canonical, base, fresh_limits)
        mine = Appointment.from_json(item.payload["merged"])
        source = str(item.payload.get("source") or "")
        raw_modified = item.payload.get("source_modified")
        mine_modified = datetime.fromisoformat(raw_modified) if raw_modified else None
        sides = [Side(source, mine, mine_modified, frozenset()),
                 Side(target, fresh_canonical, fresh.modified_at, fresh_limits.no_news)]
        # when times are unknown for our side, a true conflict is settled by owners or left open
        result = merge(base, sides, group.owners)
        work.lineage.append(lineage.written(item.canonical_id, target, item.op, changed, outcome="conflict",
                                            detail=f"{target} changed since syncd read it (GET/PUT race): re-read, "
                                                   f"re-merged, retrying (attempt {attempt + 1})"))
        self.record_merge(work, item.canonical_id, target, base, result,
                          modified={source: mine_modified, target: fresh.modified_at},
                          detail="re-read after a write conflict")
        merged = result.merged
        work.link(Link(canonical_id=item.canonical_id, connector=target, external_id=fresh.external_id,
                       version=fresh.version, fingerprint=fresh_canonical.fingerprint(),
                       modified_at=fresh.modified_at, seen=fresh_canonical.to_json()))
        work.appointments[item.canonical_id] = AppointmentRow(canonical_id=item.canonical_id, sync_group=group.name,
                                                              snapshot=merged.to_json(),
                                                              fingerprint=merged.fingerprint())
        self.plan_targets(group, item.canonical_id, target, mine, merged, merged.diff(mine), links, work,
                          source_view=(fresh, fresh_canonical), attempt=attempt)
        return merged


def bring_up_to_date(item: OutboxItem, row: AppointmentRow | None, links: Sequence[Link], target: str,
                     limits: Limits) -> bool:
    """A queued write planned from an older merge is brought up to the ledger's latest one: it writes
    the latest values, compared with what the target was last known to hold, so that it never carries
    an old merge over a newer one (another user's later change). False: nothing of it is left to write."""
    if row is None or row.snapshot is None:
        return True
    latest = Appointment.from_json(row.snapshot)
    planned = Appointment.from_json(item.payload["merged"])
    if latest.fingerprint() == planned.fingerprint():
        return True
    if item.op == WriteKind.CREATE.value:
        if not latest.status.creatable:
            # an earlier attempt may have landed (its answer lost, or the process killed before it
            # committed): the writer looks for it by its reference first, links it, and the
            # cancellation follows; superseding it here would leave that record orphaned, open
            return item.attempts > 0
        item.payload = {**item.payload, "merged": latest.to_json()}
        return True
    link = next((lk for lk in links if lk.connector == target and not lk.retired), None)
    base_json = item.payload.get("base")
    believed = (Appointment.from_json(link.seen) if link is not None and link.seen is not None
                else Appointment.from_json(base_json) if base_json else None)
    if believed is None:
        item.payload = {**item.payload, "merged": latest.to_json()}
        return True
    changed = writable(latest.diff(believed), limits)
    if not changed:
        return False
    item.op = target_op(latest, believed).value
    item.payload = {**item.payload, "merged": latest.to_json(), "base": believed.to_json(), "changed": changed}
    return True
