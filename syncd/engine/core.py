"""The sync engine: one readable path from a vendor's changes to writes in every other member.

    changes from a connector (poll, webhook inbox, resync)
      -> canonical records (the connector's job)
      -> references translated to canonical keys (crosswalk)
      -> compare fingerprints with the ledger: unchanged -> nothing; our own write echoed -> nothing
      -> find links (canonical id <-> each member's external id)
      -> three-way merge against the last merged snapshot (:mod:`syncd.engine.merge`)
      -> plan writes per target -> durable outbox (same transaction as snapshot, links, cursor)
      -> writer: translate to the target's ids, write in its dialect (batched where it can)
      -> ledger commit of the outcome (links, versions, fingerprints, dead letters, conflicts, audit)

A cursor is stored in the transaction that commits the page it covers, together with the outbox rows
that carry the page's planned writes, so it never advances past a change that is not durable. The
outbox is drained by the writer right away and again on every start (crash recovery: a create whose
outcome is unknown is first searched for by its idempotency reference).

The engine decides from :class:`syncd.connector.Capabilities` and error kinds only, never from a
vendor's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd import lineage, metrics
from syncd.config import Config, SyncGroup
from syncd.connector import Connector, VendorRecord, WriteKind, WriteOutcome, WriteRequest, with_remedy
from syncd.engine.fields import (
    Limits,
    comparable,
    default_location_of,
    held_after_write,
    limits_of,
    missing_field_reason,
    missing_on_create,
    writable,
)
from syncd.engine.holders import holder_is_dead
from syncd.engine.ids import new_canonical_id
from syncd.engine.merge import FieldConflict, MergeResult, Side, merge, merge_linked, merge_member, news_of
from syncd.engine.onboard import (
    LINK_FIELD,
    NEW,
    WINDOW_READ_KEY,
    Action,
    Candidate,
    Held,
    Verdict,
    crowded,
    judge,
    link_conflict,
    names_connector,
    retired_copies,
)
from syncd.engine.outcomes import GroupCommit, OutcomeRows
from syncd.engine.overlay import DryOverlay
from syncd.engine.resolve import MemberState, Resolution, TargetPlan, holds_news, shown, take_unit, unit_of, with_fields
from syncd.engine.stats import PassStats
from syncd.errors import (
    AmbiguousReference,
    AuthFailure,
    Conflict,
    Deferred,
    MappingError,
    NotWritable,
    RateLimited,
    Rejected,
    Retriable,
    VendorError,
)
from syncd.ledger.models import AppointmentRow, AuditEntry, ConflictRow, DeadLetter, LineageEntry, Link, OutboxItem
from syncd.ledger.store import Ledger, Tx
from syncd.logging import get_logger, mask_contact
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND, STATUS_RANK, SYNC_FIELDS, Appointment, Status, slot_key

__all__ = ["Decision", "Engine"]

log = get_logger("syncd.engine")

CANONICAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_CONFLICT_RETRIES = 3
RECENT_WRITE_SECONDS = 30.0
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


class _Rollback(Exception):
    """Raised inside a dry-run transaction so that nothing it did is committed."""


@dataclass
class _PageWork:
    """What one page's reconciliation wants stored, collected for a few bulk statements."""

    links: dict[tuple[str, str], Link] = field(default_factory=dict)
    appointments: dict[str, AppointmentRow] = field(default_factory=dict)
    outbox: list[OutboxItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    lineage: list[LineageEntry] = field(default_factory=list)
    """Lineage entries (:mod:`syncd.lineage`), stored in the same transaction as the rest."""
    conflicts: list[tuple[str, FieldConflict | None, str, str]] = field(default_factory=list)
    retire: list[tuple[str, str]] = field(default_factory=list)
    supersede: list[tuple[str, str]] = field(default_factory=list)
    """(canonical id, connector): a record of that connector was linked, so its held create is moot."""
    link_conflicts: dict[str, _LinkConflict] = field(default_factory=dict)
    """canonical id -> which records of one connector could be it (onboarding could not decide)."""

    def link(self, row: Link) -> None:
        self.links[(row.connector, row.external_id)] = row


@dataclass
class _LinkConflict:
    connector: str
    rule: str
    records: set[str] = field(default_factory=set)
    appointments: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)


def _now() -> datetime:
    return datetime.now(UTC)


def _target_op(merged: Appointment, base: Appointment | None) -> WriteKind:
    if merged.status in CANCELLED and (base is None or base.status not in CANCELLED):
        return WriteKind.CANCEL
    return WriteKind.UPDATE


class Engine:
    """Reconciles changes from connectors across the sync groups of ``config``."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        connectors: Mapping[str, Connector],
        *,
        dry_run: bool = False,
        holder: str = "syncd",
        on_decision: Callable[[Decision], None] | None = None,
        max_concurrency: int = 8,
        never_read: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.connectors = dict(connectors)
        self.dry_run = dry_run
        self.holder = holder
        self.on_decision = on_decision
        self.stats = PassStats()
        self.group_of: dict[str, SyncGroup] = {}
        for group in config.sync:
            for member in group.members:
                self.group_of.setdefault(member, group)
        self._reconcile_lock = asyncio.Lock()
        self._record_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._write_slots = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max(1, max_concurrency)
        self._commits = GroupCommit(ledger, holder)
        """Write outcomes, committed in groups (:mod:`syncd.engine.outcomes`)."""
        self._inflight: dict[tuple[str, str], int] = {}
        """(connector, external id) -> writes in flight: a record read meanwhile may be half-written."""
        self._recent_writes: dict[tuple[str, str], tuple[float, str | None]] = {}
        """(connector, external id) -> (when our last write finished, the version it produced)."""
        self.planned: list[OutboxItem] = []
        """dry-run: the writes that would have been made."""
        self.stop_errors: dict[str, VendorError] = {}
        """connector -> the error that stopped it (``stats.stopped`` holds the operator's line)."""
        self.default_locations: dict[str, str] = {
            name: cfg.default_location for name, cfg in config.connectors.items() if cfg.default_location
        }
        """connector -> its ``default_location`` (the location of all its appointments)."""
        self._overlay: DryOverlay | None = DryOverlay() if dry_run else None
        """dry-run: what earlier pages would have stored (each dry page's transaction is rolled back)."""
        self._window_read: set[str] = set()
        """Connectors whose whole window this ledger has read once: creates into them are sent."""
        self._link_conflicts_seen: dict[str, set[str]] = {}
        """connector -> appointments whose link conflict the current full pass over it found again."""
        self.never_read = frozenset(never_read)
        """Connectors this engine's caller never reads in full (the daemon: ``poll_interval = 0``):
        creates into them are not held for a window read that would never come; until a ``resync`` has
        read their window, each create is searched for by its reference first instead."""

    def _limits(self, name: str, record: VendorRecord | None = None) -> Limits:
        """What member ``name`` cannot take from syncd (for ``record`` when given)."""
        connector = self.connectors.get(name)
        return limits_of(connector.capabilities if connector is not None else None, record,
                         default_location=self.default_locations.get(name))

    # ------------------------------------------------------------------ reporting
    def _decide(self, decision: Decision) -> None:
        # a record found unchanged is most of every pass: logged at debug (rendering one info line
        # costs more than deciding it); every other decision at info
        emit = log.debug if decision.action == "unchanged" else log.info
        emit(
            "sync_decision",
            op=decision.action,
            connector=decision.connector,
            canonical_id=decision.canonical_id,
            external_id=decision.external_id,
            fields=list(decision.fields),
        )
        if self.on_decision is not None:
            self.on_decision(decision)

    def _stop(self, connector: str, error: VendorError) -> None:
        # what stopped it, the request, the cause and the config key to check (docs/reference.md §4)
        error = with_remedy(self.connectors.get(connector), error)
        self.stats.stopped.setdefault(connector, f"{error.headline}: {error.explain()}")
        self.stop_errors.setdefault(connector, error)
        log.warning("connector_stopped", connector=connector, kind=error.kind, code=error.code,
                    method=error.method, url=error.url, http_status=error.status, field=error.config_key)

    # ------------------------------------------------------------------ intake
    async def process_page(
        self,
        source: str,
        records: Sequence[VendorRecord],
        deleted_ids: Sequence[str] = (),
        *,
        cursor: str | None = None,
        set_cursor: bool = False,
    ) -> None:
        """Reconcile one page of changes from ``source``, store it (and ``cursor``), then write."""
        stats = self.stats.of(source)
        stats.read += len(records)
        metrics.records_read.labels(source).inc(len(records))
        work = _PageWork()
        # writes of ours to these records still in flight are waited for outside the lock (a slow vendor
        # must not hold up the other connectors' pages) ...
        records = await self._settle_own_writes(source, records, ledger_check=False)
        async with self._reconcile_lock:
            # ... and checked again under it: a write that landed while this page waited is seen here
            records = await self._settle_own_writes(source, records)
            all_records = list(records) + [
                VendorRecord(external_id=ext, version=None, appointment=None, deleted=True) for ext in deleted_ids
            ]
            # one record per external id: the last one wins within a page
            by_id: dict[str, VendorRecord] = {}
            for rec in all_records:
                by_id[rec.external_id] = rec
            try:
                async with self.ledger.transaction() as tx:
                    await tx.lock_appointments([r.syncd_id for r in by_id.values() if r.syncd_id], source, by_id)
                    if source in self.group_of:
                        await self._reconcile_page(tx, source, list(by_id.values()), work)
                        await self._store(tx, work)
                    if set_cursor and cursor is not None and not self.dry_run:
                        await tx.set_cursor(source, cursor, success_at=_now())
                    if self.dry_run:
                        raise _Rollback
            except _Rollback:
                pass
        if self.dry_run:
            assert self._overlay is not None
            self._overlay.absorb(work.appointments.values(), work.links.values(), work.retire, work.supersede,
                                 {cid: {"connector": lc.connector} for cid, lc in work.link_conflicts.items()})
            self.planned.extend(work.outbox)
            ready = await self._hold_creates(work.outbox)
            await self._count_planned(ready)
            return
        if work.outbox:
            await self.execute(work.outbox)

    async def _settle_own_writes(
        self, source: str, records: Sequence[VendorRecord], *, ledger_check: bool = True
    ) -> Sequence[VendorRecord]:
        """Records read while (or just before) syncd itself wrote them may show a half-applied write
        (a vendor whose update takes two calls) or the state before it. Wait for the write to finish
        and read those records again, so neither is taken for somebody else's change. Suspects: a
        write of this process in flight or finished since, or a record older than the ledger's last
        known version of it (written or read meanwhile by another process sharing the ledger)."""
        now = time.monotonic()
        suspects: list[str] = []
        for rec in records:
            key = (source, rec.external_id)
            recent = self._recent_writes.get(key)
            if key in self._inflight or (
                recent is not None and now - recent[0] < RECENT_WRITE_SECONDS and rec.version != recent[1]
            ):
                suspects.append(rec.external_id)
        if source not in self.connectors:
            return records
        dated = {rec.external_id: rec.modified_at for rec in records
                 if rec.modified_at is not None and rec.external_id not in suspects}
        if dated and ledger_check:
            async with self.ledger.transaction(readonly=True) as tx:
                known = await tx.links_for(source, dated)
            for ext, at in dated.items():
                newest = known[ext].modified_at if ext in known else None
                if at is not None and newest is not None and at < newest:
                    suspects.append(ext)
        if not suspects:
            return records
        deadline = now + 60
        while any((source, ext) in self._inflight for ext in suspects) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        fresh = await self.connectors[source].read(suspects)
        return [fresh.get(rec.external_id, rec) if rec.external_id in fresh else rec for rec in records]

    async def _count_planned(self, items: Sequence[OutboxItem]) -> None:
        """Dry run: count what the writer would do with ``items`` (translations and replace decisions
        included) without sending anything."""
        if not items:
            return
        async with self.ledger.transaction(readonly=True) as tx:
            # a create is counted once, and not at all where a record is linked or it is blocked
            creates = [i for i in items if i.op == WriteKind.CREATE.value]
            linked = {(lk.canonical_id, lk.connector)
                      for links in (await self._links_of(tx, {i.canonical_id for i in creates})).values()
                      for lk in links if not lk.retired}
            blocked: set[tuple[str, str]] = set()
            for target in {i.connector for i in creates}:
                blocked |= {(i.canonical_id, target) for i in await self._blocked_creates(
                    tx, target, [i for i in creates if i.connector == target])}
            for item in items:
                stats = self.stats.of(item.connector)
                connector = self.connectors.get(item.connector)
                if item.op == WriteKind.CREATE.value:
                    pair = (item.canonical_id, item.connector)
                    counted = self._overlay is not None and pair in self._overlay.counted
                    if pair in linked or pair in blocked or counted:
                        continue
                    if self._overlay is not None:
                        self._overlay.counted.add(pair)
                merged = Appointment.from_json(item.payload["merged"])
                base = Appointment.from_json(item.payload["base"]) if item.payload.get("base") else None
                lookup: dict[str, dict[str, str]] = {}
                for appt in (merged, base):
                    for name in REFERENCE_FIELDS:
                        key = getattr(appt, name) if appt is not None else None
                        if key is not None:
                            kind = REFERENCE_KIND[name]
                            lookup.setdefault(kind, {}).update(
                                await tx.crosswalk_lookup(kind, [key], item.connector))
                desired = self._translate(item.connector, merged, lookup)
                if isinstance(desired, str) or (
                        item.op == WriteKind.CREATE.value and connector is not None
                        and missing_on_create(desired, connector.capabilities.required_on_create)):
                    stats.dead_lettered += 1
                    continue
                believed = self._translate(item.connector, base, lookup) if base is not None else None
                if (item.op == WriteKind.UPDATE.value and connector is not None and isinstance(believed, Appointment)
                        and connector.needs_replace(believed, desired)):
                    stats.created += 1
                    stats.cancelled += 1
                elif item.op == WriteKind.CREATE.value:
                    stats.created += 1
                elif item.op == WriteKind.CANCEL.value:
                    stats.cancelled += 1
                else:
                    stats.updated += 1

    async def _reconcile_page(self, tx: Tx, source: str, records: list[VendorRecord], work: _PageWork) -> None:
        group = self.group_of[source]
        links = await self._links_for(tx, source, [r.external_id for r in records])
        hinted = {r.syncd_id for r in records
                  if r.syncd_id and CANONICAL_ID.match(r.syncd_id) and r.external_id not in links}
        cids = {link.canonical_id for link in links.values()} | hinted
        snapshots = await self._appointments(tx, cids)
        member_links = await self._links_of(tx, cids)
        refs = await self._source_refs(tx, source, records)
        verdicts = await self._onboarding(tx, group, source, records, links, refs, snapshots, member_links)
        for rec in records:
            await self._reconcile(tx, group, source, rec, links.get(rec.external_id), snapshots, member_links,
                                  refs, work, verdicts.get(rec.external_id, NEW))

    # -- reads through the dry run's overlay (what its earlier pages would have stored)
    async def _links_for(self, tx: Tx, source: str, external_ids: Sequence[str]) -> dict[str, Link]:
        found = await tx.links_for(source, external_ids)
        return self._overlay.links_for(source, external_ids, found) if self._overlay is not None else found

    async def _appointments(self, tx: Tx, cids: Iterable[str]) -> dict[str, AppointmentRow]:
        wanted = list(cids)
        found = await tx.appointments(wanted)
        return self._overlay.appointments_of(wanted, found) if self._overlay is not None else found

    async def _links_of(self, tx: Tx, cids: Iterable[str]) -> dict[str, list[Link]]:
        wanted = list(cids)
        found = await tx.links_of(wanted)
        return self._overlay.links_of(wanted, found) if self._overlay is not None else found

    async def _onboarding(
        self,
        tx: Tx,
        group: SyncGroup,
        source: str,
        records: Sequence[VendorRecord],
        links: Mapping[str, Link],
        refs: Mapping[str, Mapping[str, str]],
        snapshots: dict[str, AppointmentRow],
        member_links: dict[str, list[Link]],
    ) -> dict[str, Verdict]:
        """What each record read without a link stands for (:mod:`syncd.engine.onboard`): the group's
        appointment it holds the reference of, or the one with its slot. One indexed query for the
        page's slots and one for those appointments' links; ``snapshots`` and ``member_links`` are
        completed with the candidates found."""
        unlinked: list[tuple[VendorRecord, Appointment, str | None, str | None]] = []
        for rec in records:
            if rec.external_id in links or rec.deleted or rec.error is not None or rec.appointment is None:
                continue
            canonical, _missing = self._to_canonical(source, rec, refs)
            if canonical is None:
                continue  # dead-lettered by the reconcile (a reference without a crosswalk entry)
            reference = rec.syncd_id if rec.syncd_id and CANONICAL_ID.match(rec.syncd_id) else None
            unlinked.append((rec, canonical, reference, slot_key(canonical.sync_values())))
        if not unlinked:
            return {}
        keys = sorted({key for _, _, _, key in unlinked if key is not None})
        by_slot = await tx.appointments_by_slot(group.name, keys)
        if self._overlay is not None:
            by_slot = self._overlay.by_slot(group.name, keys, by_slot)
        found = {row.canonical_id for rows in by_slot.values() for row in rows}
        for rows in by_slot.values():
            for row in rows:
                snapshots.setdefault(row.canonical_id, row)
        missing = [cid for cid in found if cid not in member_links]
        if missing:
            member_links.update(await self._links_of(tx, missing))

        taken: dict[str, str] = {}  # appointments this page links a record of ``source`` to

        def candidate(cid: str) -> Candidate:
            row = snapshots.get(cid)
            holder = taken.get(cid) or next((lk.external_id for lk in member_links.get(cid, [])
                                             if lk.connector == source and not lk.retired), None)
            appt = Appointment.from_json(row.snapshot) if row is not None and row.snapshot is not None else None
            return Candidate(cid, appt, holder)

        known = set(snapshots) | set(member_links)
        verdicts: dict[str, Verdict] = {}
        leftovers = retired_copies([Held(rec.external_id, ref, canonical.status.terminal, rec.replaces)
                                    for rec, canonical, ref, _ in unlinked])
        for rec, _canonical, ref, _ in unlinked:
            if rec.external_id in leftovers:
                verdicts[rec.external_id] = Verdict(Action.IGNORE, ref, "retired")
        unlinked = [u for u in unlinked if u[0].external_id not in leftovers]
        crowded_refs = crowded(ref for _, _, ref, _ in unlinked)
        by_reference = [u for u in unlinked if u[2] is not None and (u[2] in known or u[2] in crowded_refs)]
        by_slot_only = [u for u in unlinked if u not in by_reference]
        crowded_slots = crowded(key for _, _, _, key in by_slot_only)
        # references first: a record that names its appointment takes it before a slot match could
        for rec, canonical, reference, key in (*by_reference, *by_slot_only):
            by_ref = candidate(reference) if reference is not None and reference in known else None
            slot_candidates = [candidate(row.canonical_id) for row in by_slot.get(key, [])] if key else []
            verdict = judge(canonical, reference, by_reference=by_ref, by_slot=slot_candidates,
                            reference_crowded=reference in crowded_refs, slot_crowded=key in crowded_slots)
            if verdict.action is Action.LINK and verdict.canonical_id is not None:
                taken[verdict.canonical_id] = rec.external_id
            verdicts[rec.external_id] = verdict
        return verdicts

    async def _source_refs(self, tx: Tx, source: str, records: list[VendorRecord]) -> dict[str, dict[str, str]]:
        wanted: dict[str, set[str]] = defaultdict(set)
        for rec in records:
            if rec.appointment is None:
                continue
            for name in REFERENCE_FIELDS:
                value = getattr(rec.appointment, name)
                if value is not None:
                    wanted[REFERENCE_KIND[name]].add(value)
        out: dict[str, dict[str, str]] = {}
        for kind, ids in wanted.items():
            out[kind] = await tx.crosswalk_reverse(kind, source, sorted(ids))
        return out

    def _to_canonical(
        self, source: str, rec: VendorRecord, refs: Mapping[str, Mapping[str, str]]
    ) -> tuple[Appointment | None, str | None]:
        """The record with references as canonical keys, or (None, reason) when one has no entry."""
        appt = rec.appointment
        assert appt is not None
        not_stored = self._limits(source, rec).not_stored
        changes: dict[str, Any] = {"native_status": None, "extra": {}}
        for name in REFERENCE_FIELDS:
            value = getattr(appt, name)
            if name in not_stored:
                changes[name] = None  # never read there: the merge base stands in for it
                continue
            if value is None:
                if name == "location" and source in self.default_locations:
                    changes[name] = self.default_locations[source]  # all its appointments take place there
                continue
            kind = REFERENCE_KIND[name]
            key = refs.get(kind, {}).get(value)
            if key is None:
                # name the kind, the source connector and the appointment -- never the reference itself
                return None, (
                    f"missing crosswalk entry: {kind} of {source} appointment {rec.external_id} has no crosswalk key"
                )
            changes[name] = key
        return appt.with_changes(**changes), None

    async def _reconcile(
        self,
        tx: Tx,
        group: SyncGroup,
        source: str,
        rec: VendorRecord,
        link: Link | None,
        snapshots: Mapping[str, AppointmentRow],
        member_links: Mapping[str, list[Link]],
        refs: Mapping[str, Mapping[str, str]],
        work: _PageWork,
        verdict: Verdict = NEW,
    ) -> None:
        stats = self.stats.of(source)
        if link is not None and link.retired:
            return  # the old id of a replace flow: its later events are ignored
        if rec.error is not None:
            self._dead_letter(work, source, "mapping", str(rec.error), canonical_id=link.canonical_id if link else None,
                              external_id=rec.external_id, payload={"phase": "read", "source": source})
            return
        if rec.deleted:
            if link is None:
                return
            row = snapshots.get(link.canonical_id)
            if row is None or row.snapshot is None:
                return
            base = Appointment.from_json(row.snapshot)
            work.retire.append((source, rec.external_id))
            if base.status.terminal:
                stats.unchanged += 1
                return
            canonical: Appointment = base.with_changes(status=Status.CANCELLED)
            stats.changed += 1
            self._merge_change(group, source, rec, link, base, canonical, member_links, work, deleted=True)
            return
        converted, missing = self._to_canonical(source, rec, refs)
        if converted is None:
            self._dead_letter(work, source, "missing_reference", missing or "missing reference",
                              canonical_id=link.canonical_id if link else None, external_id=rec.external_id,
                              payload={"phase": "read", "source": source})
            return
        canonical = converted
        fingerprint = canonical.fingerprint()
        if link is None:
            # onboarding: the group may hold this appointment already (the reference it carries, or its slot)
            if verdict.action is Action.IGNORE:
                self._duplicate_reference(work, source, rec, verdict)
                return
            if verdict.action is Action.AMBIGUOUS:
                self._ambiguous(work, source, rec, verdict)
                return
            if verdict.action is Action.LINK and verdict.canonical_id is not None:
                link = Link(canonical_id=verdict.canonical_id, connector=source, external_id=rec.external_id)
                work.supersede.append((link.canonical_id, source))
                stats.linked += 1
                row = snapshots.get(link.canonical_id)
                if row is None or row.snapshot is None:
                    self._new_appointment(group, source, rec, canonical, fingerprint, member_links, work,
                                          canonical_id=link.canonical_id, linked=verdict.rule)
                else:
                    self._link_existing(group, source, rec, canonical, link, row, member_links, work, verdict.rule)
                return
            self._new_appointment(group, source, rec, canonical, fingerprint, member_links, work)
            return
        row = snapshots.get(link.canonical_id)
        if row is None or row.snapshot is None:
            self._new_appointment(group, source, rec, canonical, fingerprint, member_links, work,
                                  canonical_id=link.canonical_id)
            return
        if link.seen is None and link.fingerprint is None:
            # linked by a crosswalk row and read here for the first time: the two were never merged
            self._link_existing(group, source, rec, canonical, link, row, member_links, work, "crosswalk")
            return
        if rec.modified_at is not None and link.modified_at is not None and rec.modified_at < link.modified_at:
            # read before a write of ours (or a newer read) that committed while this page waited: the
            # record shows an older state than the ledger knows, not somebody's change (merging it
            # would revert the newer one everywhere)
            stats.unchanged += 1
            self._decide(Decision("unchanged", source, link.canonical_id, rec.external_id, detail="stale read"))
            return
        # compare what the vendor can express: fields it cannot hold, a lossy status and the reasons it
        # fills itself after a cancellation are taken from the merge base
        base = Appointment.from_json(row.snapshot)
        canonical = self._comparable(source, canonical, base, self._limits(source, rec))
        # echo suppression compares the whole mapped record, never the version alone: a vendor whose
        # write answer lacks another user's concurrent change keeps our version on their content
        if fingerprint in (link.fingerprint, link.written_fingerprint) or canonical.fingerprint() in (
            link.fingerprint,
            link.written_fingerprint,
        ):
            stats.unchanged += 1
            self._decide(Decision("unchanged", source, link.canonical_id, rec.external_id))
            held = canonical.to_json()
            if rec.version != link.version or link.seen != held:
                link.version = rec.version
                link.modified_at = rec.modified_at
                link.seen = held
                work.link(link)
            return
        seen = Appointment.from_json(link.seen) if link.seen is not None else None
        if seen is not None and news_of(canonical, seen, base).fingerprint() == base.fingerprint():
            # it differs from the merge base only where it still holds what it held before: a write of
            # ours on its way there, or a read older than that write -- nothing new, nothing undone
            stats.unchanged += 1
            self._decide(Decision("unchanged", source, link.canonical_id, rec.external_id, detail="lagging"))
            return
        stats.changed += 1
        self._merge_change(group, source, rec, link, base, canonical, member_links, work, seen=seen)

    def _comparable(
        self, source: str, appt: Appointment, base: Appointment, limits: Limits
    ) -> Appointment:
        """``appt`` as read from ``source``, what the vendor says nothing about taken from ``base``: the
        fields it does not store, a derived end, a lossy status (Zoho "Scheduled"), the cancellation
        reason it fills. Its read-only fields stay as read (they are its own value)."""
        appt = comparable(appt, base, limits)
        appt = self._keep_covered_status(source, appt, base)
        if appt.status in CANCELLED and appt.status == base.status:
            appt = appt.with_changes(cancellation_reason=base.cancellation_reason)
        return appt

    def _keep_covered_status(self, source: str, appt: Appointment, base: Appointment) -> Appointment:
        """A vendor whose native status stands for several canonical ones (Zoho "Scheduled" for
        proposed, pending and booked; a status it cannot show at all) says nothing new when the base
        status is one of them: keep the base's, so a lossy read never changes the status."""
        if appt.status == base.status:
            return appt
        connector = self.connectors.get(source)
        status_out = getattr(getattr(connector, "mapping", None), "status_out", None)
        if not status_out:
            return appt
        native = status_out.get(appt.status)
        covered = status_out.get(base.status)
        if native is None:
            return appt
        if covered is None:
            # the vendor cannot show the base status at all: only progress beyond it is news
            if STATUS_RANK[appt.status] > STATUS_RANK[base.status]:
                return appt
        elif covered != native:
            return appt
        reason = base.cancellation_reason if base.status in CANCELLED else None
        try:
            return appt.with_changes(status=base.status, cancellation_reason=reason)
        except ValueError:
            return appt

    def _new_appointment(
        self,
        group: SyncGroup,
        source: str,
        rec: VendorRecord,
        canonical: Appointment,
        fingerprint: str,
        member_links: Mapping[str, list[Link]],
        work: _PageWork,
        canonical_id: str | None = None,
        linked: str | None = None,
    ) -> None:
        """A record no merged appointment stands for yet: it becomes the appointment's first version
        (``canonical_id``: the id a crosswalk row or its reference gave it; ``linked``: how onboarding
        found that id), created in the group's other members."""
        stats = self.stats.of(source)
        cid = canonical_id or (rec.syncd_id if rec.syncd_id and CANONICAL_ID.match(rec.syncd_id) else None)
        cid = cid or new_canonical_id()
        stats.changed += 1
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
            self._decide(Decision("linked", source, cid, rec.external_id, detail=linked))
        linked_here = {lk.connector for lk in member_links.get(cid, []) if not lk.retired}
        targets = [m for m in group.create_in if m != source and m not in linked_here and m in self.connectors]
        if not targets:
            return
        if not canonical.status.creatable:
            for target in targets:
                self.stats.of(target).unchanged += 1
                self._decide(Decision("create_skipped", target, cid, None, detail=canonical.status.value))
            return
        for target in targets:
            work.outbox.append(self._outbox(cid, target, WriteKind.CREATE, base=None, merged=canonical,
                                            source=source, changed=[]))

    def _link_existing(
        self,
        group: SyncGroup,
        source: str,
        rec: VendorRecord,
        canonical: Appointment,
        link: Link,
        row: AppointmentRow,
        member_links: Mapping[str, list[Link]],
        work: _PageWork,
        rule: str,
    ) -> None:
        """``source``'s record stands for appointment ``link.canonical_id`` but was never merged with it
        (onboarding found it, or a crosswalk row linked it): merge the two as unrelated versions, so that
        nothing is written unless their fields differ, and then each field is settled by ``owners``, else
        by the most recent change (:func:`syncd.engine.merge.merge_linked`)."""
        cid = link.canonical_id
        base = Appointment.from_json(row.snapshot or {})
        limits = self._limits(source, rec)
        canonical = self._comparable(source, canonical, base, limits)
        others = [lk for lk in member_links.get(cid, []) if lk.connector != source and not lk.retired]
        # the members whose records made the snapshot (a crosswalk row's link is not read yet)
        known = [lk for lk in others if lk.seen is not None or lk.fingerprint is not None]
        times = [lk.modified_at for lk in known if lk.modified_at is not None]
        side = Side(source, canonical, rec.modified_at, limits.no_news)
        lossy = bool(known) and base.status != canonical.status and all(
            self._same_native(lk.connector, base.status, canonical.status) for lk in known)
        merge_base = base
        if lossy:
            # the members linked so far cannot tell these statuses apart (Zoho "Scheduled" for pending and
            # booked): this record's is the precise one, and theirs need no write
            reason = canonical.cancellation_reason if canonical.status in CANCELLED else None
            with contextlib.suppress(ValueError):
                merge_base = base.with_changes(status=canonical.status, cancellation_reason=reason)
        result = merge_linked(merge_base, max(times, default=None), side, group.owners)
        result.changed = result.merged.diff(base)
        self._record_merge(work, cid, source, base, result, modified={source: rec.modified_at},
                           detail=f"linked by {rule}")
        merged = result.merged
        to_others = [f for f in result.changed if not (lossy and f in ("status", "cancellation_reason"))]
        link.version = rec.version
        link.fingerprint = canonical.fingerprint()
        link.modified_at = rec.modified_at
        link.seen = canonical.to_json()
        work.link(link)
        work.appointments[cid] = AppointmentRow(canonical_id=cid, sync_group=group.name, snapshot=merged.to_json(),
                                                fingerprint=merged.fingerprint())
        work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="linked", fields=list(result.changed),
                                     fingerprint_before=base.fingerprint(), fingerprint_after=merged.fingerprint(),
                                     detail=f"by {rule}: {rec.external_id}"[:255]))
        if result.changed or merged.diff(canonical):
            self.stats.of(source).changed += 1
        else:
            self.stats.of(source).unchanged += 1
        self._decide(Decision("linked", source, cid, rec.external_id, tuple(result.changed), detail=rule))
        self._plan_targets(group, cid, source, base, merged, to_others, [*others, link], work,
                           source_view=(rec, canonical), source_modified=rec.modified_at)

    def _same_native(self, member: str, one: Status, other: Status) -> bool:
        """Does ``member`` show both canonical statuses as one native status (a lossy status)?"""
        connector = self.connectors.get(member)
        status_out = getattr(getattr(connector, "mapping", None), "status_out", None) or {}
        first, second = status_out.get(one), status_out.get(other)
        return first is not None and first == second

    def _duplicate_reference(self, work: _PageWork, source: str, rec: VendorRecord, verdict: Verdict) -> None:
        """A second record of ``source`` holds the reference of an appointment linked to another one:
        the link in force decides (`docs/vendors/README.md` rule 10); this one is neither linked nor copied."""
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
        self._decide(Decision("unchanged", source, cid or None, rec.external_id, detail=verdict.rule))

    def _ambiguous(self, work: _PageWork, source: str, rec: VendorRecord, verdict: Verdict) -> None:
        """Several candidates for one record (or several records for one appointment): an open conflict
        on every appointment involved, no link, no create for them in ``source``."""
        for cid in verdict.involved:
            entry = work.link_conflicts.setdefault(cid, _LinkConflict(source, verdict.rule))
            entry.records.add(rec.external_id)
            entry.appointments.update(verdict.involved)
            entry.holders.update(verdict.holders)

    def _merge_change(
        self,
        group: SyncGroup,
        source: str,
        rec: VendorRecord,
        link: Link,
        base: Appointment,
        canonical: Appointment,
        member_links: Mapping[str, list[Link]],
        work: _PageWork,
        *,
        deleted: bool = False,
        seen: Appointment | None = None,
    ) -> None:
        """Merge ``source``'s record (``canonical``: what it holds) into the base, store it and plan the
        writes to the other members. With ``seen`` (what the source was last known to hold) the merge
        is three-way between the record and the base; without it the record's differences from the
        base are its changes."""
        cid = link.canonical_id
        side = Side(source, canonical, rec.modified_at, self._limits(source, rec).no_news)
        if seen is not None:
            others = [lk.modified_at for lk in member_links.get(cid, [])
                      if lk.connector != source and not lk.retired and lk.modified_at is not None]
            result = merge_member(seen, side, base, max(others, default=None), group.owners)
            # written back to the source: only what the merge refused from its own changes; the fields
            # it lags behind on are on their way there already
            source_holds = news_of(canonical, seen, result.merged)
        else:
            result = merge(base, [side], group.owners)
            source_holds = canonical
        self._record_merge(work, cid, source, base, result, modified={source: rec.modified_at},
                           detail="deleted there" if deleted else None)
        merged = result.merged
        fingerprint = canonical.fingerprint()
        if not deleted:
            link.version = rec.version
            link.fingerprint = fingerprint
            link.modified_at = rec.modified_at
            link.seen = canonical.to_json()
            work.link(link)
        work.appointments[cid] = AppointmentRow(
            canonical_id=cid, sync_group=group.name, snapshot=merged.to_json(), fingerprint=merged.fingerprint()
        )
        self._plan_targets(group, cid, source, base, merged, result.changed, member_links.get(cid, []), work,
                           source_view=None if deleted else (rec, source_holds), source_modified=rec.modified_at)

    def _plan_targets(
        self,
        group: SyncGroup,
        cid: str,
        source: str,
        base: Appointment,
        merged: Appointment,
        changed: list[str],
        links: Sequence[Link],
        work: _PageWork,
        *,
        source_view: tuple[VendorRecord, Appointment] | None,
        attempt: int = 0,
        source_modified: datetime | None = None,
    ) -> None:
        active = {lk.connector: lk for lk in links if not lk.retired and lk.connector in self.connectors}
        for member in group.members:
            if member not in self.connectors:
                continue
            if member == source:
                if source_view is None:
                    continue
                rec, seen = source_view
                # the source keeps what the merge refused from it (e.g. leaving a terminal status)
                differs = writable(merged.diff(seen), self._limits(member, rec))
                if differs:
                    work.outbox.append(self._outbox(cid, member, _target_op(merged, seen), base=seen, merged=merged,
                                                    source=source, changed=differs, attempt=attempt,
                                                    source_modified=source_modified))
                continue
            if member in active:
                # what the member does not store or only its own users set is never sent there
                to_send = writable(changed, self._limits(member))
                if to_send:
                    work.outbox.append(self._outbox(cid, member, _target_op(merged, base), base=base, merged=merged,
                                                    source=source, changed=to_send, attempt=attempt,
                                                    source_modified=source_modified))
            elif member in group.create_in and merged.status.creatable and member != source:
                work.outbox.append(self._outbox(cid, member, WriteKind.CREATE, base=None, merged=merged,
                                                source=source, changed=[], attempt=attempt,
                                                source_modified=source_modified))

    def _record_merge(self, work: _PageWork, cid: str, source: str, base: Appointment, result: MergeResult, *,
                      modified: Mapping[str, datetime | None] | None = None, detail: str | None = None) -> None:
        work.lineage.extend(lineage.merged(cid, source, result, modified or {}, detail=detail))
        if result.changed:
            work.audit.append(AuditEntry(canonical_id=cid, connector=source, action="merged",
                                         fields=list(result.changed), fingerprint_before=base.fingerprint(),
                                         fingerprint_after=result.merged.fingerprint()))
        for conflict in result.conflicts:
            metrics.conflicts.inc()
            action = "conflict-" + conflict.rule
            work.audit.append(AuditEntry(canonical_id=cid, connector=conflict.winner, action=action,
                                         fields=[conflict.field], fingerprint_before=base.fingerprint(),
                                         fingerprint_after=result.merged.fingerprint()))
            if conflict.winner is None:
                work.conflicts.append((cid, conflict, "changed on several systems; no policy settled it", source))
        for connector, name, why in result.ignored:
            work.audit.append(AuditEntry(canonical_id=cid, connector=connector, action="ignored", fields=[name],
                                         detail=why[:255]))

    def _outbox(
        self,
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

    def _dead_letter(
        self,
        work: _PageWork,
        connector: str,
        kind: str,
        reason: str,
        *,
        canonical_id: str | None,
        external_id: str | None,
        payload: dict[str, Any],
        retriable: bool = True,
    ) -> None:
        self.stats.of(connector).dead_lettered += 1
        work.dead_letters.append(DeadLetter(connector=connector, canonical_id=canonical_id, external_id=external_id,
                                            kind=kind, reason=mask_contact(reason), payload=payload,
                                            retriable=retriable))
        entry = lineage.dead_letter(canonical_id, connector, kind, reason)
        if entry is not None:
            work.lineage.append(entry)
        self._decide(Decision("dead_letter", connector, canonical_id, external_id, detail=kind))

    async def _store(self, tx: Tx, work: _PageWork) -> None:
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
            work.outbox, queued = await self._one_create_each(tx, work.outbox)
            await tx.outbox_add(work.outbox)
            # the stored rows (with ids), pending ones only: a key already done is not written twice
            stored = await tx.outbox_by_keys([o.idempotency_key for o in work.outbox])
            work.outbox = [o for o in stored if o.state in ("pending", "sending")] + queued
        await self._open_link_conflicts(tx, work)
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
            self.stats.of(connector).conflicts += 1
            self._decide(Decision("conflict", connector, cid, None, (field_name,), reason))

    async def _one_create_each(
        self, tx: Tx, items: list[OutboxItem]
    ) -> tuple[list[OutboxItem], list[OutboxItem]]:
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

    async def _open_link_conflicts(self, tx: Tx, work: _PageWork) -> None:
        """Open (or refresh) the link conflicts onboarding could not decide, and remember that this pass
        found them again (a full pass closes those it no longer finds, :meth:`window_read`)."""
        for cid, entry in sorted(work.link_conflicts.items()):
            values, reason = link_conflict(entry.connector, entry.rule, entry.records, entry.appointments,
                                           entry.holders)
            await tx.open_conflict(cid, LINK_FIELD, values, reason[:500])
            self._link_conflicts_seen.setdefault(entry.connector, set()).add(cid)
            self.stats.of(entry.connector).conflicts += 1
            log.warning("link_ambiguous", connector=entry.connector, canonical_id=cid, count=len(entry.records),
                        kind=entry.rule)
            self._decide(Decision("conflict", entry.connector, cid, None, (LINK_FIELD,), f"ambiguous {entry.rule}"))

    async def _hold_creates(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Creates into a member whose window this ledger has not read yet wait in the outbox (a dry run
        keeps them in its overlay): the record they would duplicate may be there. Returns the rest."""
        targets = {i.connector for i in items if i.op == WriteKind.CREATE.value}
        if not targets:
            return list(items)
        read = await self.windows_read(targets)
        ready: list[OutboxItem] = []
        held: dict[str, int] = defaultdict(int)
        for item in items:
            waits = item.connector not in read and item.connector not in self.never_read
            if item.op == WriteKind.CREATE.value and waits:
                held[item.connector] += 1
                if self._overlay is not None:
                    self._overlay.hold(item)
                continue
            ready.append(item)
        for connector, count in sorted(held.items()):
            log.info("creates_held", connector=connector, count=count)
        return ready

    async def windows_read(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` this ledger has read in full once (their creates are no longer held)."""
        wanted = set(names)
        missing = [n for n in sorted(wanted) if n not in self._window_read]
        if missing:
            async with self.ledger.transaction(readonly=True) as tx:
                for name in missing:
                    if (await tx.state_get(name, [WINDOW_READ_KEY])).get(WINDOW_READ_KEY):
                        self._window_read.add(name)
        read = {n for n in wanted if n in self._window_read}
        if self._overlay is not None:
            read |= wanted & self._overlay.window_read
        return read

    def begin_window(self, source: str) -> None:
        """A full window pass over ``source`` starts (see :meth:`window_read`)."""
        self._link_conflicts_seen[source] = set()

    async def window_read(self, source: str) -> None:
        """A full window pass over ``source`` ended: this ledger has now read every record it holds.
        From here on creates into it are sent (those held so far are released now), and the link
        conflicts about its records that this pass did not find again are closed."""
        seen = self._link_conflicts_seen.pop(source, set())
        if self._overlay is not None:
            self._overlay.window_read.add(source)
            await self._count_planned(self._overlay.release(source))
            return
        async with self.ledger.transaction() as tx:
            await tx.state_set(source, {WINDOW_READ_KEY: _now().strftime("%Y-%m-%dT%H:%M:%SZ")})
            for conflict in await tx.open_conflicts_on(LINK_FIELD):
                if names_connector(conflict.values, source) and conflict.canonical_id not in seen \
                        and conflict.id is not None:
                    await tx.resolve_conflict(conflict.id, f"no longer ambiguous after a full read of {source}")
            # held ones, and any a crash left "sending" (the writer searches for those first; a live
            # process still sending one holds its claim, so it is not written twice)
            held = [i for i in await tx.outbox_pending(connector=source, limit=100_000, states=("pending", "sending"))
                    if i.op == WriteKind.CREATE.value]
        self._window_read.add(source)
        log.info("window_read", connector=source, count=len(held))
        if held:
            await self.execute(held)

    # ------------------------------------------------------------------ writer
    async def execute(self, items: Sequence[OutboxItem]) -> None:
        """Carry out queued writes, grouped by target (batched where the target can). Creates into a
        member whose window this ledger has not read yet stay queued (onboarding)."""
        by_target: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in await self._hold_creates(items):
            if item.connector in self.stats.stopped:
                continue
            by_target[item.connector].append(item)
        await asyncio.gather(*(self._execute_target(target, batch) for target, batch in by_target.items()))

    async def _execute_target(self, target: str, items: list[OutboxItem]) -> None:
        connector = self.connectors.get(target)
        if connector is None:
            return
        size = max(1, connector.capabilities.batch_write_size)
        if size > 1:
            for start in range(0, len(items), size):
                if target in self.stats.stopped:
                    return
                await self._execute_batch(target, connector, items[start:start + size])
            return
        # one record per call: groups of records are claimed (and settled) in one transaction each, a
        # few groups at a time, and their calls go out concurrently within the write slots (_send).
        # Two writes of one appointment never share a group: the later one waits for the earlier.
        group_size = 2 * self._max_concurrency
        waves: list[list[OutboxItem]] = []
        seen: dict[str, int] = defaultdict(int)
        for item in items:
            wave = seen[item.canonical_id]
            seen[item.canonical_id] += 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(item)
        groups_in_flight = asyncio.Semaphore(3)

        async def group(chunk: list[OutboxItem]) -> None:
            async with groups_in_flight:
                if target not in self.stats.stopped:
                    await self._execute_batch(target, connector, chunk)

        for wave_items in waves:
            if target in self.stats.stopped:
                return
            await asyncio.gather(*(group(wave_items[start:start + group_size])
                                   for start in range(0, len(wave_items), group_size)))

    async def _execute_batch(self, target: str, connector: Connector, items: list[OutboxItem]) -> None:
        cids = sorted({item.canonical_id for item in items})
        locks = [self._record_locks[cid] for cid in cids]
        followups: list[OutboxItem] = []
        for lock in locks:
            await lock.acquire()
        try:
            await self._execute_locked(target, connector, items, followups)
        finally:
            for lock in locks:
                lock.release()
            if not self.dry_run:
                async with self.ledger.transaction() as tx:
                    await tx.release(cids, self.holder)
        if followups:
            await self.execute(followups)

    async def _execute_locked(
        self, target: str, connector: Connector, items: list[OutboxItem], followups: list[OutboxItem]
    ) -> None:
        stats = self.stats.of(target)
        work = _PageWork()
        requests: list[tuple[OutboxItem, WriteRequest]] = []
        replaces: list[tuple[OutboxItem, WriteRequest, Link, Appointment]] = []
        async with self.ledger.transaction() as tx:
            wanted = [i.canonical_id for i in items]
            held = await tx.claim(wanted, self.holder, ttl=120)
            if len(held) < len(set(wanted)):
                # claims a process of this host left behind when it was killed: taken over at once
                holders = await tx.claim_holders([cid for cid in wanted if cid not in held])
                dead = {h for h in holders.values() if holder_is_dead(h)}
                for gone in sorted(dead):
                    stale = [cid for cid, h in holders.items() if h == gone]
                    await tx.release(stale, gone)
                    log.warning("stale_claims_taken_over", connector=target, count=len(stale))
                if dead:
                    held = await tx.claim(wanted, self.holder, ttl=120)
                if len(held) < len(set(wanted)):
                    others = await tx.claim_holders([cid for cid in wanted if cid not in held])
                    for other, count in Counter(others.values()).items():
                        self.stats.claimed_elsewhere[other] = self.stats.claimed_elsewhere.get(other, 0) + count
                        log.info("claimed_elsewhere", connector=target, holder=other, count=count)
            items = [i for i in items if i.canonical_id in held]
            if not items:
                return
            links = await tx.links_of([i.canonical_id for i in items])
            latest = await tx.appointments({i.canonical_id for i in items})
            blocked = await self._blocked_creates(tx, target, items)
            if blocked:
                # onboarding could not tell which record of the target this appointment is: no create
                await tx.release([i.canonical_id for i in blocked], self.holder)
                items = [i for i in items if i not in blocked]
                if not items:
                    return
            superseded = [i for i in items if not self._bring_up_to_date(
                i, latest.get(i.canonical_id), links.get(i.canonical_id, []), target, self._limits(target))]
            if superseded:
                ids = [i.id for i in superseded if i.id is not None]
                if ids:
                    await tx.outbox_update(ids, state="done", error="superseded by a later merge: nothing to write")
                await tx.release([i.canonical_id for i in superseded], self.holder)
                for i in superseded:
                    stats.unchanged += 1
                    self._decide(Decision("unchanged", target, i.canonical_id, None, detail="superseded"))
                items = [i for i in items if i not in superseded]
                if not items:
                    return
            keyed: dict[str, set[str]] = defaultdict(set)
            for item in items:
                # the merged record's references, and the base's: the target's current record (which a
                # replace decision looks at) may still name the old patient
                for raw in (item.payload["merged"], item.payload.get("base")):
                    if not raw:
                        continue
                    for name in REFERENCE_FIELDS:
                        value = raw.get(name)
                        if value is not None:
                            keyed[REFERENCE_KIND[name]].add(value)
            if self.default_locations:
                keyed["location"].update(self.default_locations.values())  # a location _located may fill in
            lookup = {kind: await tx.crosswalk_lookup(kind, sorted(keys), target) for kind, keys in keyed.items()}
            sending: list[int] = []
            for item in items:
                built = self._build_request(target, connector, item, links.get(item.canonical_id, []), lookup, work)
                if built is None:
                    continue
                request, link, believed = built
                if item.op == WriteKind.UPDATE.value and link is not None and believed is not None:
                    if connector.needs_replace(believed, request.desired):
                        replaces.append((item, request, link, believed))
                        continue
                requests.append((item, request))
                if item.id is not None:
                    sending.append(item.id)
            if sending:
                await tx.outbox_update(sending, state="sending", bump_attempts=True)
            await self._store(tx, work)
            await self._finish_items(tx, [i for i in items if i.state == "failed"])
            linked = [i for i in items if i.state == "linked"]
            if linked:
                await tx.outbox_update([i.id for i in linked if i.id is not None], state="done",
                                       error="nothing to create: a record there is linked to this appointment")
                await tx.release([i.canonical_id for i in linked], self.holder)
                for i in linked:
                    stats.unchanged += 1
                    self._decide(Decision("unchanged", target, i.canonical_id, None, detail="already linked"))
        if requests:
            await self._send(target, connector, requests, followups)
        for item, request, link, believed in replaces:
            await self._replace(target, connector, item, request, link, believed, followups)
        stats.api_calls = self._api_calls(connector)

    @staticmethod
    def _bring_up_to_date(item: OutboxItem, row: AppointmentRow | None, links: Sequence[Link], target: str,
                          limits: Limits) -> bool:
        """A queued write planned from an older merge is brought up to the ledger's latest one: it
        writes the latest values, compared with what the target was last known to hold, so that it
        never carries an old merge over a newer one (another user's later change). False: nothing of
        it is left to write."""
        if row is None or row.snapshot is None:
            return True
        latest = Appointment.from_json(row.snapshot)
        planned = Appointment.from_json(item.payload["merged"])
        if latest.fingerprint() == planned.fingerprint():
            return True
        if item.op == WriteKind.CREATE.value:
            if not latest.status.creatable:
                if item.attempts > 0:
                    # an earlier attempt may have landed (its answer lost, or the process killed before it
                    # committed): the writer looks for it by its reference first, links it, and the
                    # cancellation follows; superseding it here would leave that record orphaned, open
                    return True
                return False  # cancelled (or further) before it was created there: nothing to create
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
        item.op = _target_op(latest, believed).value
        item.payload = {**item.payload, "merged": latest.to_json(), "base": believed.to_json(), "changed": changed}
        return True

    def _build_request(
        self,
        target: str,
        connector: Connector,
        item: OutboxItem,
        links: list[Link],
        lookup: Mapping[str, Mapping[str, str]],
        work: _PageWork,
    ) -> tuple[WriteRequest, Link | None, Appointment | None] | None:
        merged = Appointment.from_json(item.payload["merged"])
        base_json = item.payload.get("base")
        base = Appointment.from_json(base_json) if base_json else None
        link = next((lk for lk in links if lk.connector == target and not lk.retired), None)
        op = WriteKind(item.op)
        if op is not WriteKind.CREATE and link is None:
            if not merged.status.creatable:
                item.state = "failed"
                return None
            op = WriteKind.CREATE
        if op is WriteKind.CREATE and link is not None and item.attempts == 0:
            item.state = "linked"  # already there (a concurrent pass created it, or onboarding linked one)
            return None
        located = self._located(merged, links, str(item.payload.get("source") or ""))
        if located is not merged:
            # merged before the member's default_location was configured: written with it now
            merged = located
            item.payload = {**item.payload, "merged": merged.to_json()}
        desired = self._translate(target, merged, lookup)
        if isinstance(desired, str):
            item.state = "failed"
            self._dead_letter(work, target, "missing_reference", desired, canonical_id=item.canonical_id,
                              external_id=link.external_id if link else None,
                              payload={"phase": "write", "outbox": item.payload, "op": item.op})
            return None
        if op is WriteKind.CREATE:
            missing = self._missing_on_create(target, connector, item, desired, links)
            if missing is not None:
                item.state = "failed"
                self._dead_letter(work, target, "missing_field", missing, canonical_id=item.canonical_id,
                                  external_id=None, payload={"phase": "write", "outbox": item.payload, "op": item.op})
                return None
        current: VendorRecord | None = None
        believed: Appointment | str | None = None
        if link is not None:
            # what the target holds as far as the ledger knows: its version (the connector re-reads and
            # compares it before writing) and the merge base in the target's ids (its references give a
            # connector the related records it needs; the replace decision looks at it)
            believed = self._translate(target, base, lookup) if base is not None else None
            current = VendorRecord(external_id=link.external_id, version=link.version,
                                   appointment=believed if isinstance(believed, Appointment) else None,
                                   modified_at=link.modified_at)
        changed = frozenset(item.payload.get("changed") or [])
        request = WriteRequest(op, item.canonical_id, desired, external_id=link.external_id if link else None,
                               current=current, changed=changed, current_is_read=False)
        return request, link, believed if isinstance(believed, Appointment) else None

    def _located(self, merged: Appointment, links: Sequence[Link], source: str) -> Appointment:
        """``merged`` with the ``default_location`` of a member holding it, when it has no location."""
        if merged.location is not None or not self.default_locations:
            return merged
        holders = [lk.connector for lk in links if not lk.retired] + ([source] if source else [])
        key = default_location_of(holders, self.default_locations)
        return merged.with_changes(location=key) if key is not None else merged

    def _missing_on_create(self, target: str, connector: Connector, item: OutboxItem, desired: Appointment,
                           links: Sequence[Link]) -> str | None:
        """Why ``desired`` cannot be created in ``target`` (a field its vendor requires is empty), or None."""
        missing = missing_on_create(desired, connector.capabilities.required_on_create)
        if not missing:
            return None
        source = str(item.payload.get("source") or "")
        holders = {lk.connector for lk in links if not lk.retired} | ({source} if source else set())
        not_storing = [m for m in holders if m in self.connectors and "location" in self._limits(m).not_stored]
        return missing_field_reason(target, self.config.connectors[target].type, item.canonical_id, missing,
                                    not_storing)

    def _translate(self, target: str, appt: Appointment, lookup: Mapping[str, Mapping[str, str]]) -> Appointment | str:
        """``appt`` in ``target``'s ids; a reference it never takes from syncd (not stored, read-only) is
        left out, so it needs no crosswalk entry there."""
        changes: dict[str, Any] = {}
        unwritable = self._limits(target).unwritable
        for name in REFERENCE_FIELDS:
            key = getattr(appt, name)
            if name in unwritable and key is not None:
                changes[name] = None
                continue
            if key is None:
                continue
            kind = REFERENCE_KIND[name]
            external = lookup.get(kind, {}).get(key)
            if external is None:
                return f"missing crosswalk entry: {kind} {key} for connector {target}"
            changes[name] = external
        return appt.with_changes(**changes) if changes else appt

    async def _send(
        self,
        target: str,
        connector: Connector,
        requests: list[tuple[OutboxItem, WriteRequest]],
        followups: list[OutboxItem],
    ) -> None:
        stats = self.stats.of(target)
        unread = target in self.never_read and target not in await self.windows_read([target])
        searching = [(i, r) for i, r in requests if r.kind is WriteKind.CREATE and (i.attempts > 0 or unread)]
        if searching:
            # a create tried before (a crash or a lost answer): find it by its reference first (the
            # searches of a group go out concurrently, within the write slots)
            async def settle(item: OutboxItem, request: WriteRequest) -> bool:
                async with self._write_slots:
                    if target in self.stats.stopped:
                        error = self.stop_errors.get(target)
                        if error is not None:
                            await self._write_failed(target, item, error)
                        return True
                    try:
                        return await self._settle_unknown_create(target, connector, item, request)
                    except (Retriable, RateLimited, AuthFailure) as exc:
                        await self._write_failed(target, item, exc)
                        return True
            settled = await asyncio.gather(*(settle(i, r) for i, r in searching))
            done = {id(i) for (i, _), gone in zip(searching, settled, strict=True) if gone}
            requests = [(i, r) for i, r in requests if id(i) not in done]
        if not requests or target in self.stats.stopped:
            for item, _ in requests:
                error = self.stop_errors.get(target)
                if error is not None:
                    await self._write_failed(target, item, error)
            return
        if connector.capabilities.batch_write_size > 1:
            await self._send_requests(target, connector, requests, followups)
        else:
            # one call per record: sent concurrently within the write slots; each outcome is committed
            # with the others ready at the same time (GroupCommit)
            async def one(item: OutboxItem, request: WriteRequest) -> None:
                async with self._write_slots:
                    if target in self.stats.stopped:
                        # not sent: back in the queue (its attempt counts, so it is searched for first)
                        error = self.stop_errors.get(target)
                        if error is not None:
                            await self._write_failed(target, item, error)
                        return
                    await self._send_requests(target, connector, [(item, request)], followups)
            await asyncio.gather(*(one(item, request) for item, request in requests))
        stats.api_calls = self._api_calls(connector)

    async def _send_requests(
        self,
        target: str,
        connector: Connector,
        requests: list[tuple[OutboxItem, WriteRequest]],
        followups: list[OutboxItem],
    ) -> None:
        """One ``connector.write`` call for ``requests``; their outcomes are handled concurrently."""
        keys = [(target, r.external_id) for _, r in requests if r.external_id is not None]
        for key in keys:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            outcomes = await connector.write([r for _, r in requests])
        except (Retriable, RateLimited, AuthFailure) as exc:
            for item, _ in requests:
                await self._write_failed(target, item, exc)
            return
        finally:
            finished = time.monotonic()
            for key in keys:
                self._inflight[key] -= 1
                if not self._inflight[key]:
                    del self._inflight[key]
                self._recent_writes[key] = (finished, None)
        for (_item, _request), outcome in zip(requests, outcomes, strict=True):
            if outcome.record is not None and outcome.error is None:
                self._recent_writes[(target, outcome.record.external_id)] = (time.monotonic(), outcome.record.version)
        await asyncio.gather(*(self._handle_outcome(target, connector, item, request, outcome, followups)
                               for (item, request), outcome in zip(requests, outcomes, strict=True)))

    async def _blocked_creates(self, tx: Tx, target: str, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Creates into ``target`` of appointments with an open link conflict about ``target``'s records
        (onboarding could not tell which one it is): they wait until that is settled."""
        creates = [i for i in items if i.op == WriteKind.CREATE.value]
        if not creates:
            return []
        cids = {i.canonical_id for i in creates}
        blocked = {c.canonical_id for c in await tx.open_conflicts_on(LINK_FIELD, cids)
                   if names_connector(c.values, target)}
        if self._overlay is not None:
            blocked |= {cid for cid in cids if names_connector(self._overlay.link_conflicts.get(cid, {}), target)}
        return [i for i in creates if i.canonical_id in blocked]

    async def _settle_unknown_create(
        self, target: str, connector: Connector, item: OutboxItem, request: WriteRequest
    ) -> bool:
        """A create tried before whose outcome is unknown (a lost answer, or a process killed between a
        vendor's two create calls): search by the idempotency reference (the connector also finds the
        record a second call missed: Salesforce's unstamped search, which stamps it) and adopt what it
        finds. Several records, or one besides the record a link already names, are an open conflict
        (`docs/vendors/README.md` rule 10). True when settled; False: nothing found, create now."""
        cid = item.canonical_id
        async with self.ledger.transaction(readonly=True) as tx:
            retired = [lk.external_id for lk in (await tx.links_of([cid], include_retired=True)).get(cid, [])
                       if lk.connector == target and lk.retired]
        try:
            found = await connector.find_by_reference(cid, exclude=retired, desired=request.desired)
        except AmbiguousReference as exc:
            await self._keep_ambiguous(target, item, "reference", exc.external_ids)
            return True
        except (Rejected, Conflict) as exc:
            await self._close_item(item, "failed", exc.describe(), dead=("rejected", target, request, exc))
            return True
        linked = request.external_id
        if linked is not None:
            chosen = next((r for r in found if r.external_id == linked), None)
            if chosen is None and found:
                await self._keep_ambiguous(target, item, "reference", [linked, *(r.external_id for r in found)])
                return True
            if chosen is None:
                # the link names a record onboarding matched; the earlier attempt never landed
                async with self.ledger.transaction() as tx:
                    if item.id is not None:
                        await tx.outbox_update([item.id], state="done",
                                               error="nothing to create: a record there is linked to it")
                    await tx.release([cid], self.holder)
                self.stats.of(target).unchanged += 1
                return True
            await self._adopt(target, connector, item, request, chosen, counted=False)
            return True
        if not found:
            return False
        if len(found) > 1:
            await self._keep_ambiguous(target, item, "reference", [r.external_id for r in found])
            return True
        # tried before: our own create, its answer lost; never tried: a record made earlier (onboarding)
        if item.attempts == 0:
            self.stats.of(target).linked += 1
        await self._adopt(target, connector, item, request, found[0], counted=item.attempts > 0)
        return True

    async def _adopt(self, target: str, connector: Connector, item: OutboxItem, request: WriteRequest,
                     record: VendorRecord, *, counted: bool) -> None:
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
                if outcome.error is None and outcome.record is not None:
                    found = outcome.record
                else:
                    # adopted as it is; the next read merges it as a record never merged before
                    log.warning("adopt_follow_up_failed", connector=target, canonical_id=item.canonical_id,
                                external_id=record.external_id, code=getattr(outcome.error, "code", None))
                    async with self.ledger.transaction() as tx:
                        await tx.upsert_links([Link(canonical_id=item.canonical_id, connector=target,
                                                    external_id=record.external_id, version=record.version,
                                                    modified_at=record.modified_at)])
                        if item.id is not None:
                            await tx.outbox_update([item.id], state="done", error="adopted after a lost answer")
                        await tx.release([item.canonical_id], self.holder)
                    return
        await self._write_ok(target, item, request, found, adopted=True, sent=counted)

    async def _keep_ambiguous(self, target: str, item: OutboxItem, rule: str, external_ids: Iterable[str]) -> None:
        """Several records of ``target`` stand for this create: an open link conflict; the create stays
        queued (and blocked) until it is settled."""
        values, reason = link_conflict(target, rule, external_ids, [item.canonical_id])
        async with self.ledger.transaction() as tx:
            await tx.open_conflict(item.canonical_id, LINK_FIELD, values, reason[:500])
            await tx.add_lineage([lineage.conflict(item.canonical_id, target, LINK_FIELD,
                                                   detail=f"several {target} records hold its {rule}: "
                                                          f"{', '.join(sorted(external_ids))}",
                                                   vendor_text=False)])
            if item.id is not None:
                await tx.outbox_update([item.id], state="pending", error="waits: several records hold its reference")
            await tx.release([item.canonical_id], self.holder)
        self.stats.of(target).conflicts += 1
        self._decide(Decision("conflict", target, item.canonical_id, None, (LINK_FIELD,), f"ambiguous {rule}"))

    async def _handle_outcome(
        self,
        target: str,
        connector: Connector,
        item: OutboxItem,
        request: WriteRequest,
        outcome: WriteOutcome,
        followups: list[OutboxItem],
    ) -> None:
        error = outcome.error
        if error is None and outcome.record is not None:
            await self._write_ok(target, item, request, outcome.record, sent=outcome.sent)
            return
        if isinstance(error, Conflict):
            await self._conflict_retry(target, connector, item, request, outcome, followups)
            return
        if isinstance(error, Deferred):
            # the vendor takes this change only later: keep it queued (drained by the daemon's outbox job
            # and by every resync once the time has come); nothing is lost, nothing dead-lettered
            metrics.writes.labels(target, item.op, "deferred").inc()
            self._decide(Decision("deferred", target, item.canonical_id, request.external_id,
                                  tuple(sorted(request.changed)), detail=error.not_before.isoformat()))
            async with self.ledger.transaction() as tx:
                if item.id is not None:
                    until = f"{error.not_before:%Y-%m-%dT%H:%M:%SZ}"
                    await tx.outbox_update([item.id], state="pending", error=f"deferred until {until}")
                if item.attempts == 0:  # once, not at every drain of the outbox until the time has come
                    await tx.add_lineage([lineage.written(
                        item.canonical_id, target, item.op, request.changed, outcome="deferred",
                        detail=f"the vendor takes it from {error.not_before:%Y-%m-%dT%H:%M:%SZ}; stays queued")])
            return
        if isinstance(error, AmbiguousReference):
            metrics.writes.labels(target, item.op, "not_writable").inc()
            await self._keep_ambiguous(target, item, "reference", error.external_ids)
            return
        if isinstance(error, NotWritable):
            metrics.writes.labels(target, item.op, "not_writable").inc()
            await self._close_item(item, "failed", error.describe(),
                                   conflict=(self._field_of(request), error.describe(), target))
            return
        if isinstance(error, Rejected):
            metrics.writes.labels(target, item.op, "rejected").inc()
            await self._close_item(item, "failed", error.describe(), dead=("rejected", target, request, error))
            return
        if isinstance(error, MappingError):
            metrics.writes.labels(target, item.op, "not_expressible").inc()
            await self._close_item(item, "failed", str(error), conflict=(error.field or "status", str(error), target))
            return
        if isinstance(error, VendorError):
            await self._write_failed(target, item, error)
            return
        await self._close_item(item, "failed", "no record in outcome", dead=("write", target, request, None))

    @staticmethod
    def _field_of(request: WriteRequest) -> str:
        """The field a refused write is about (for the conflict row): the first changed one."""
        return next((f for f in SYNC_FIELDS if f in request.changed), "status")

    def _echo_matches(self, target: str, record: VendorRecord, desired: Appointment) -> bool:
        """Does the record the vendor answered hold exactly what we wrote (on what it can express)?
        When another user's change landed beside ours (a GET/PUT race the vendor cannot detect), it does
        not: the answer is then no echo, and the next read carries that change to the others."""
        if record.appointment is None:
            return True
        got = record.appointment
        status_out = getattr(getattr(self.connectors.get(target), "mapping", None), "status_out", None) or {}
        unwritable = self._limits(target, record).unwritable
        for name in SYNC_FIELDS:
            if name in unwritable:
                continue  # not written by us: whatever the vendor holds there is no sign of a race
            mine, theirs = getattr(desired, name), getattr(got, name)
            if name == "status":
                if status_out.get(mine, mine) != status_out.get(theirs, theirs):
                    return False
            elif name in ("cancellation_reason", "description") and mine is None:
                continue  # vendors fill a reason or a mandatory name of their own
            elif mine != theirs:
                return False
        return True

    async def _write_ok(
        self,
        target: str,
        item: OutboxItem,
        request: WriteRequest,
        record: VendorRecord,
        *,
        adopted: bool = False,
        sent: bool = True,
    ) -> None:
        stats = self.stats.of(target)
        merged = Appointment.from_json(item.payload["merged"])
        fingerprint = merged.fingerprint()
        op = request.kind
        if not sent:
            stats.unchanged += 1  # nothing the target can hold still differed: no request was sent
        elif op is WriteKind.CREATE:
            stats.created += 1
        elif op is WriteKind.CANCEL:
            stats.cancelled += 1
        else:
            stats.updated += 1
        metrics.writes.labels(target, op.value, "ok" if sent else "not_needed").inc()
        metrics.observe_sync_latency(target, item.created_at, sent)
        echo_version = record.version if self._echo_matches(target, record, request.desired) else None

        async def link_row(tx: Tx, rows: OutcomeRows) -> None:
            # seen: what we wrote, not the answer -- where another user's change landed beside ours
            # (a race the vendor cannot detect), the next read must show it as news; only its read-only
            # fields are taken from the answer (they are the member's own value, never ours)
            held = await self._held(tx, target, record, merged)
            held_fingerprint = held.fingerprint()
            rows.links = [Link(canonical_id=item.canonical_id, connector=target,
                               external_id=record.external_id, version=record.version,
                               fingerprint=held_fingerprint, written_fingerprint=held_fingerprint,
                               written_version=echo_version, modified_at=record.modified_at,
                               seen=held.to_json())]
            if op is WriteKind.CREATE:
                # a merge while this create was in flight planned no write here (no link yet, and the
                # create was already sending): what it changed follows as an update
                row = (await tx.appointments([item.canonical_id])).get(item.canonical_id)
                latest = Appointment.from_json(row.snapshot) if row is not None and row.snapshot else None
                changed = writable(latest.diff(merged), self._limits(target)) if latest is not None else []
                if latest is not None and changed:
                    await tx.outbox_add([self._outbox(item.canonical_id, target, _target_op(latest, held), base=held,
                                                      merged=latest, source=str(item.payload.get("source") or ""),
                                                      changed=changed)])

        carried = request.changed or ([n for n in SYNC_FIELDS if getattr(merged, n) is not None]
                                      if op is WriteKind.CREATE else [])
        # committed together with the other outcomes ready now (one transaction for the group); the
        # write is done once it returns
        await self._commits.commit(OutcomeRows(
            canonical_id=item.canonical_id, outbox_id=item.id, state="done",
            error=None if sent else "nothing left to send",
            audit=[AuditEntry(canonical_id=item.canonical_id, connector=target, action=op.value,
                              fields=list(request.changed), fingerprint_after=fingerprint,
                              detail="adopted after a lost answer" if adopted else None)],
            lineage=[lineage.written(
                item.canonical_id, target, op.value, carried, outcome="ok" if sent else "not_needed",
                detail=self._write_detail(item, record, adopted=adopted, sent=sent, echo=echo_version is not None))],
            prepare=link_row))
        action = {WriteKind.CREATE: "created", WriteKind.CANCEL: "cancelled"}.get(op, "updated")
        if not sent:
            action = "unchanged"
        self._decide(Decision(action, target, item.canonical_id, record.external_id, tuple(sorted(request.changed))))

    @staticmethod
    def _write_detail(item: OutboxItem, record: VendorRecord, *, adopted: bool, sent: bool, echo: bool) -> str:
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

    async def _held(self, tx: Tx, target: str, record: VendorRecord, written: Appointment) -> Appointment:
        """What ``target`` holds after syncd wrote ``written`` there (canonical keys): ``written``, with
        its read-only fields as the vendor's answer ``record`` shows them."""
        limits = self._limits(target, record)
        if not limits.own_values or record.appointment is None or record.error is not None:
            return written
        refs = await self._source_refs(tx, target, [record])
        answer, _missing = self._to_canonical(target, record, refs)
        return held_after_write(written, answer, limits)

    async def _write_failed(self, target: str, item: OutboxItem, error: VendorError) -> None:
        """A retriable failure that outlived the HTTP layer's retries, a long wait or refused auth:
        the write stays queued in the outbox (nothing lost) and the connector stops for this pass."""
        metrics.writes.labels(target, item.op, error.kind).inc()
        self._stop(target, error)
        async with self.ledger.transaction() as tx:
            if item.id is not None:
                await tx.outbox_update([item.id], state="pending", error=error.describe()[:400])
            if item.attempts == 0:  # the first failure only: an outage must not fill the history
                await tx.add_lineage([lineage.written(
                    item.canonical_id, target, item.op, item.payload.get("changed") or [], outcome="queued",
                    detail=f"{error.kind}: the write stays queued and is retried until it goes through")])
            await tx.release([item.canonical_id], self.holder)

    async def _close_item(
        self,
        item: OutboxItem,
        state: str,
        error: str,
        *,
        dead: tuple[str, str, WriteRequest, VendorError | None] | None = None,
        conflict: tuple[str, str, str] | None = None,
    ) -> None:
        work = _PageWork()
        if dead is not None:
            kind, target, request, vendor_error = dead
            reason = vendor_error.describe() if vendor_error is not None else error
            self._dead_letter(work, target, kind, reason, canonical_id=item.canonical_id,
                              external_id=request.external_id,
                              payload={"phase": "write", "outbox": item.payload, "op": item.op}, retriable=True)
        if conflict is not None:
            work.lineage.append(lineage.conflict(item.canonical_id, conflict[2], conflict[0],
                                                 detail=f"{conflict[2]} refused the write: {conflict[1]}"))
        async with self.ledger.transaction() as tx:
            await self._store(tx, work)
            if conflict is not None:
                field_name, reason, target = conflict
                await tx.open_conflict(item.canonical_id, field_name, {"target": target}, reason[:500],
                                       connector=target)
                self.stats.of(target).conflicts += 1
                self._decide(Decision("conflict", target, item.canonical_id, None, (field_name,), reason))
            if item.id is not None:
                await tx.outbox_update([item.id], state=state, error=mask_contact(error)[:400])
            await tx.release([item.canonical_id], self.holder)

    async def _finish_items(self, tx: Tx, items: Sequence[OutboxItem]) -> None:
        ids = [i.id for i in items if i.id is not None]
        if ids:
            await tx.outbox_update(ids, state="failed")
            await tx.release([i.canonical_id for i in items], self.holder)

    async def _conflict_retry(
        self,
        target: str,
        connector: Connector,
        item: OutboxItem,
        request: WriteRequest,
        outcome: WriteOutcome,
        followups: list[OutboxItem],
    ) -> None:
        """The target changed between our read and our write: re-read, re-merge, retry (bounded)."""
        stats = self.stats.of(target)
        attempt = int(item.payload.get("attempt", 0)) + 1
        group = self.group_of.get(target)
        if group is None or request.external_id is None:
            await self._close_item(item, "failed", "conflict", conflict=("status", "target changed", target))
            return
        fresh = outcome.record
        if fresh is None or fresh.appointment is None:
            try:
                fresh = (await connector.read([request.external_id]))[request.external_id]
            except VendorError as exc:
                await self._write_failed(target, item, exc)
                return
        if fresh.deleted:
            await self._target_deleted(target, item, fresh, followups)
            return
        if attempt > MAX_CONFLICT_RETRIES or fresh.appointment is None or fresh.error is not None:
            reason = "the record kept changing under our writes" if attempt > MAX_CONFLICT_RETRIES else (
                "the record was deleted or became unreadable while we wrote")
            await self._close_item(item, "failed", reason, conflict=("status", reason, target))
            return
        stats.retried += 1
        self._decide(Decision("retry", target, item.canonical_id, request.external_id, detail="re-read and re-merge"))
        await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        async with self.ledger.transaction() as tx:
            refs = await self._source_refs(tx, target, [fresh])
        fresh_canonical, missing = self._to_canonical(target, fresh, refs)
        if fresh_canonical is None:
            await self._close_item(item, "failed", missing or "missing reference",
                                   dead=("missing_reference", target, request, None))
            return
        base_json = item.payload.get("base")
        base = Appointment.from_json(base_json) if base_json else fresh_canonical
        # read as the reconcile reads it: a lossy status or a field it cannot hold is no change of its own
        fresh_limits = self._limits(target, fresh)
        fresh_canonical = self._comparable(target, fresh_canonical, base, fresh_limits)
        mine = Appointment.from_json(item.payload["merged"])
        source = str(item.payload.get("source") or "")
        raw_modified = item.payload.get("source_modified")
        mine_modified = datetime.fromisoformat(raw_modified) if raw_modified else None
        sides = [
            Side(source, mine, mine_modified, frozenset()),
            Side(target, fresh_canonical, fresh.modified_at, fresh_limits.no_news),
        ]
        result = merge(base, sides, group.owners)
        # when times are unknown for our side, a true conflict is settled by owners or left open
        work = _PageWork()
        work.lineage.append(lineage.written(item.canonical_id, target, item.op, request.changed, outcome="conflict",
                                            detail=f"{target} changed since syncd read it (GET/PUT race): re-read, "
                                                   f"re-merged, retrying (attempt {attempt + 1})"))
        self._record_merge(work, item.canonical_id, target, base, result,
                           modified={source: mine_modified, target: fresh.modified_at},
                           detail="re-read after a write conflict")
        merged = result.merged
        async with self.ledger.transaction() as tx:
            await tx.upsert_links([Link(canonical_id=item.canonical_id, connector=target,
                                        external_id=fresh.external_id, version=fresh.version,
                                        fingerprint=fresh_canonical.fingerprint(), modified_at=fresh.modified_at,
                                        seen=fresh_canonical.to_json())])
            await tx.save_appointments([AppointmentRow(canonical_id=item.canonical_id, sync_group=group.name,
                                                       snapshot=merged.to_json(), fingerprint=merged.fingerprint())])
            links = (await tx.links_of([item.canonical_id])).get(item.canonical_id, [])
            # the target: from what it holds now to the new merge; the others: from our last merge
            self._plan_targets(group, item.canonical_id, target, mine, merged, merged.diff(mine), links, work,
                               source_view=(fresh, fresh_canonical), attempt=attempt)
            await self._store(tx, work)
            if item.id is not None:
                await tx.outbox_update([item.id], state="done", error="superseded by a re-merge")
            await tx.release([item.canonical_id], self.holder)
        followups.extend(work.outbox)

    async def _target_deleted(self, target: str, item: OutboxItem, deleted: VendorRecord,
                              followups: list[OutboxItem]) -> None:
        """The write found its target record deleted, and a re-read confirmed it: that deletion is a change
        of the target like any other (reconciled as one, so the appointment is cancelled elsewhere unless
        it is terminal already), never an open conflict. The queued write is done: nothing is left there."""
        work = _PageWork()
        async with self._reconcile_lock:
            async with self.ledger.transaction() as tx:
                if target in self.group_of:
                    await self._reconcile_page(tx, target, [deleted], work)
                    await self._store(tx, work)
                if item.id is not None:
                    await tx.outbox_update([item.id], state="done",
                                           error="the target record was deleted: its deletion is synced instead")
                await tx.release([item.canonical_id], self.holder)
        self._decide(Decision("unchanged", target, item.canonical_id, deleted.external_id, detail="target deleted"))
        followups.extend(work.outbox)

    async def _replace(self, target: str, connector: Connector, item: OutboxItem, request: WriteRequest,
                       link: Link, believed: Appointment, followups: list[OutboxItem]) -> None:
        """A change the target forbids in place: create a new record, cancel the old one with the vendor's
        reason, link the new one and retire the old (docs/vendors/README.md rule 13). Where the vendor needs the slot
        freed first (``capabilities.replace_cancel_first_when``), the old one is cancelled first."""
        stats = self.stats.of(target)
        current = request.current
        assert current is not None
        if believed.status.terminal:
            await self._close_item(item, "failed", "replace needed but the old record is terminal",
                                   conflict=("patient", "replace flow on a terminal record", target))
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
                    await self._handle_outcome(target, connector, item, cancel, cancelled, followups)
                    return
            [created] = await connector.write([create])
        except VendorError as exc:
            await self._write_failed(target, item, exc)
            return
        if created.error is not None or created.record is None:
            if cancel_first:
                # the old record is cancelled already: retire it so its cancellation is not taken for the
                # patient's, and leave the refused create on record (dead letter, retriable after a fix)
                async with self.ledger.transaction() as tx:
                    await tx.retire_links(target, [link.external_id])
            await self._handle_outcome(target, connector, item, create, created, followups)
            return
        if not cancel_first:
            try:
                [cancelled] = await connector.write([cancel])
            except VendorError as exc:
                cancelled = WriteOutcome(cancel, error=exc)
        assert cancelled is not None
        merged = Appointment.from_json(item.payload["merged"])
        fingerprint = merged.fingerprint()
        stats.created += 1
        metrics.writes.labels(target, "create", "ok").inc()
        async with self.ledger.transaction() as tx:
            held = await self._held(tx, target, created.record, merged)
            await tx.upsert_links([Link(canonical_id=item.canonical_id, connector=target,
                                        external_id=created.record.external_id, version=created.record.version,
                                        fingerprint=held.fingerprint(), written_fingerprint=held.fingerprint(),
                                        written_version=created.record.version,
                                        modified_at=created.record.modified_at, seen=held.to_json())])
            await tx.retire_links(target, [link.external_id])
            await tx.add_audit([AuditEntry(canonical_id=item.canonical_id, connector=target, action="replaced",
                                           fields=list(request.changed), fingerprint_after=fingerprint,
                                           detail=f"old {link.external_id} retired"[:255])])
            await tx.add_lineage([lineage.written(
                item.canonical_id, target, "replaced", request.changed, outcome="replaced",
                detail=f"{target} forbids this change in place: created {created.record.external_id}, old "
                       f"{link.external_id} retired ({'cancelled' if cancelled.error is None else 'cancel failed'})")])
            if item.id is not None:
                await tx.outbox_update([item.id], state="done")
        self._decide(Decision("replaced", target, item.canonical_id, created.record.external_id,
                              tuple(sorted(request.changed)), detail=f"old {link.external_id} cancelled"))
        if cancelled.error is None:
            stats.cancelled += 1
            metrics.writes.labels(target, "cancel", "ok").inc()
            return
        work = _PageWork()
        error = cancelled.error
        reason = error.describe() if isinstance(error, VendorError) else str(error)
        self._dead_letter(work, target, "replace_cancel", reason, canonical_id=item.canonical_id,
                          external_id=link.external_id,
                          payload={"phase": "cancel_old", "external_id": link.external_id})
        async with self.ledger.transaction() as tx:
            await self._store(tx, work)

    async def plan_resolution(
        self, conflict: ConflictRow, take: str, links: Sequence[Link], row: AppointmentRow | None
    ) -> Resolution:
        """What settling ``conflict`` by taking ``take``'s version would write to each member, re-reading
        every member's record first (one read per member) and asking each target's connector whether it
        can take it (:meth:`Connector.write_refusal`). Writes nothing; see :mod:`syncd.engine.resolve`."""
        cid = conflict.canonical_id
        plan = Resolution(conflict.id or 0, cid, conflict.field, take)
        group = self.group_of.get(take)
        active = {lk.connector: lk for lk in links if not lk.retired and lk.connector in self.connectors}
        if row is None or row.snapshot is None or group is None:
            return plan.but(problem=f"the ledger holds no merged record of {cid} in a group of {take}")
        if take not in active:
            holders = ", ".join(sorted(active)) or "none"
            return plan.but(problem=f"{take} holds no linked record of {cid} (members that do: {holders})")
        base = Appointment.from_json(row.snapshot)
        members = [m for m in group.members if m in active]
        read = await asyncio.gather(*(self.connectors[m].read([active[m].external_id]) for m in members))
        records = {m: got[active[m].external_id] for m, got in zip(members, read, strict=True)}
        keys: dict[str, set[str]] = defaultdict(set)  # every reference a merge may take, for the translation
        for name in REFERENCE_FIELDS:
            if getattr(base, name) is not None:
                keys[REFERENCE_KIND[name]].add(getattr(base, name))
        states: dict[str, MemberState] = {}
        async with self.ledger.transaction(readonly=True) as tx:
            for m, rec in records.items():
                ext = active[m].external_id
                if rec.deleted or rec.appointment is None:
                    why = "is deleted" if rec.deleted else f"cannot be read ({rec.error})"
                    states[m] = MemberState(m, ext, None, None, problem=why)
                    continue
                canonical, missing = self._to_canonical(m, rec, await self._source_refs(tx, m, [rec]))
                if canonical is None:
                    states[m] = MemberState(m, ext, rec.appointment, None, problem=missing)
                    continue
                states[m] = MemberState(m, ext, rec.appointment, canonical, self._limits(m, rec))
                for name in REFERENCE_FIELDS:
                    if getattr(canonical, name) is not None:
                        keys[REFERENCE_KIND[name]].add(getattr(canonical, name))
            lookups = {m: {kind: await tx.crosswalk_lookup(kind, sorted(values), m) for kind, values in keys.items()}
                       for m in members}
        for m, state in states.items():
            if state.canonical is None or state.vendor is None:
                return plan.but(problem=(f"{m}'s record {state.problem}: the choice cannot be checked against it; "
                                         "fix that first (a `syncd resync` carries a deletion to the others)"))
            comparable = self._comparable(m, state.canonical, base, state.limits)
            if holds_news(comparable, state.canonical.fingerprint(), active[m], base):
                return plan.but(problem=(
                    f"{m} changed the appointment since syncd last read it: run `syncd resync` first, so that the "
                    "choice is made on what every system holds now"))
        now = _now()

        versions = {m: (records[m].version, records[m].modified_at) for m in members}

        def evaluate(choice: str) -> Resolution:
            chosen = states[choice]
            assert chosen.canonical is not None
            unit = unit_of(conflict.field)
            if set(unit) & chosen.limits.not_stored:
                return plan.but(take=choice, problem=f"{choice} does not hold {conflict.field}: it has no version "
                                                          "of it to take")
            mine = self._comparable(choice, chosen.canonical, base, chosen.limits)
            merged = take_unit(base, mine, unit)
            if isinstance(merged, str):
                return plan.but(take=choice, problem=f"{choice}'s {conflict.field}: {merged}")
            targets: list[TargetPlan] = []
            for m in members:
                state = states[m]
                assert state.canonical is not None and state.vendor is not None
                view = self._comparable(m, state.canonical, merged, state.limits)
                names = [f for f in unit if f not in state.limits.unwritable and getattr(view, f) != getattr(merged, f)]
                kept = tuple(f for f in unit if f in state.limits.unwritable
                             and getattr(state.canonical, f) != getattr(merged, f))
                if not names:
                    targets.append(TargetPlan(m, state.external_id, "none", not_written=kept))
                    continue
                wanted = self._translate(m, merged, lookups[m])
                if isinstance(wanted, str):
                    targets.append(TargetPlan(m, state.external_id, "none", tuple(names), refusal=f"has {wanted}"))
                    continue
                connector = self.connectors[m]
                desired = with_fields(state.vendor, wanted, names)
                if isinstance(desired, str):
                    targets.append(TargetPlan(m, state.external_id, "none", tuple(names), refusal=desired))
                    continue
                op = ("replace" if connector.needs_replace(state.vendor, desired)
                      else _target_op(merged, view).value)
                refusal = connector.write_refusal(state.vendor, desired, now=now)
                targets.append(TargetPlan(m, state.external_id, op, tuple(names), shown(view, names),
                                          shown(merged, names), refusal, kept))
            return plan.but(take=choice, merged=merged, targets=tuple(targets), versions=versions)

        chosen = evaluate(take)
        if not chosen.refused:
            return chosen
        working = tuple(m for m in members if m != take and not evaluate(m).refused)
        return chosen.but(take=take, alternatives=working)

    async def take_version(self, plan: Resolution, links: Sequence[Link]) -> str | None:
        """Carry out a resolution that nothing refused: store the merge, queue and make the writes (the
        outbox, as every write), and close the conflict once they are done. Returns why it is not done
        (the conflict then stays open, with the refusal the vendor gave), or None."""
        assert plan.merged is not None and not plan.refused
        group = self.group_of[plan.take]
        merged = plan.merged
        active = {lk.connector: lk for lk in links if not lk.retired}
        async with self.ledger.transaction(readonly=True) as tx:
            row = (await tx.appointments([plan.canonical_id])).get(plan.canonical_id)
        base = Appointment.from_json(row.snapshot) if row is not None and row.snapshot is not None else merged
        work = _PageWork()
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
            work.outbox.append(self._outbox(plan.canonical_id, target.connector, op, base=believed, merged=merged,
                                            source=plan.take, changed=list(target.fields)))
        work.audit.append(AuditEntry(canonical_id=plan.canonical_id, connector=plan.take, action="resolved",
                                     fields=list(unit_of(plan.field)), fingerprint_before=base.fingerprint(),
                                     fingerprint_after=merged.fingerprint(),
                                     detail=f"conflict {plan.conflict_id}: took {plan.take}"))
        taken_at = plan.versions.get(plan.take, (None, None))[1]
        work.lineage.append(lineage.resolved(plan.canonical_id, plan.take, [f for f in unit_of(plan.field)
                                                                            if f in SYNC_FIELDS], taken_at,
                                             f"conflict {plan.conflict_id}: took {plan.take}'s version"))
        async with self.ledger.transaction() as tx:
            await tx.save_appointments([AppointmentRow(canonical_id=plan.canonical_id, sync_group=group.name,
                                                       snapshot=merged.to_json(), fingerprint=merged.fingerprint())])
            await self._store(tx, work)
        failed_before = self.stats.total("dead_lettered") + self.stats.total("conflicts")
        if work.outbox:
            await self.execute(work.outbox)
        if self.stats.stopped:
            name, why = next(iter(self.stats.stopped.items()))
            return f"{name} {why}: the write stays queued and is made by the next pass; the conflict stays open"
        if self.stats.total("dead_lettered") + self.stats.total("conflicts") > failed_before:
            return ("a target refused the write after all (see `syncd conflicts list` and `syncd deadletters list`); "
                    "the conflict stays open")
        async with self.ledger.transaction() as tx:
            await tx.resolve_conflict(plan.conflict_id, f"took {plan.take}")
        return None

    async def sweep_missing(self, source: str, seen: set[str]) -> None:
        """After a full window pass: known records of ``source`` whose start lies in its window but
        that the pass did not list are read one more time; the vendor answers "deleted" for those
        that are gone, and the deletion is then carried to the other members (docs/vendors/<type>.md §2)."""
        connector = self.connectors[source]
        cfg = self.config.connectors[source]
        tz = ZoneInfo(cfg.timezone)
        midnight = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
        low = midnight - timedelta(days=cfg.window_past_days)
        high = midnight + timedelta(days=cfg.window_future_days + 1)
        async with self.ledger.transaction(readonly=True) as tx:
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

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _api_calls(connector: Connector) -> int:
        calls = getattr(connector.http, "calls", None)
        return int(sum(calls.values())) if calls is not None else 0

    def http_retries(self, connector: Connector) -> int:
        return int(getattr(connector.http, "retried", 0) or 0)

    async def drain_outbox(self, connectors: Iterable[str] | None = None) -> None:
        """Carry out writes left queued by an earlier pass or a crash."""
        if self.dry_run:
            return
        names = set(connectors) if connectors is not None else set(self.connectors)
        async with self.ledger.transaction(readonly=True) as tx:
            items = await tx.outbox_pending(limit=10_000, states=("pending", "sending"))
        items = [i for i in items if i.connector in names]
        if items:
            await self.execute(items)
