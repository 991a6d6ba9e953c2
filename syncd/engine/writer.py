"""Writer: carries out queued writes (the outbox) in each target's dialect, and owns what is in flight.

Per target, writes go out in the batch size the connector declares (``batch_write_size``); one by one
otherwise, concurrently within a bounded pool of write slots, in groups whose claims are taken (and
released) in one transaction each. Two writes of one appointment never share a group: the later waits
for the earlier. Every outcome goes to :class:`~syncd.engine.races.Races`, which records it (grouped
commits, :mod:`syncd.engine.outcomes`) or runs the GET/PUT race loop, the replace flow or the search for
a create whose answer was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from syncd.connector import Connector, VendorRecord, WriteKind, WriteRequest
from syncd.engine.context import EngineContext
from syncd.engine.fields import missing_field_reason, missing_on_create
from syncd.engine.holders import holder_is_dead
from syncd.engine.onboard import LINK_FIELD, names_connector
from syncd.engine.outcomes import OutcomeBook
from syncd.engine.plan import Planner, bring_up_to_date
from syncd.engine.races import DeletionHandler, Races
from syncd.engine.work import Decision, PageWork, ids_of, payload_appointment, store_work
from syncd.errors import AuthFailure, RateLimited, Retriable
from syncd.ledger.models import Link, OutboxItem
from syncd.ledger.store import Tx
from syncd.logging import get_logger
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND, Appointment

__all__ = ["CLAIM_SECONDS", "RECENT_WRITE_SECONDS", "Writer"]

log = get_logger("syncd.engine")

RECENT_WRITE_SECONDS = 30.0
"""A record read this soon after our write to it (with another version) is read again first."""
CLAIM_SECONDS = 120
"""How long a claim on an appointment lasts while its writes are made."""
GROUPS_IN_FLIGHT = 3

Prepared = tuple[OutboxItem, WriteRequest]
Replace = tuple[OutboxItem, WriteRequest, Link, Appointment]


class Writer:
    def __init__(self, ctx: EngineContext, planner: Planner, on_deleted: DeletionHandler, *,
                 max_concurrency: int = 8) -> None:
        self.ctx = ctx
        self.planner = planner
        self.book = OutcomeBook(ctx, planner)
        self.races = Races(ctx, planner, self.book, on_deleted)
        self.max_concurrency = max(1, max_concurrency)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._record_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._inflight: dict[tuple[str, str], int] = {}
        """(connector, external id) -> writes in flight: a record read meanwhile may be half-written."""
        self._recent: dict[tuple[str, str], tuple[float, str | None]] = {}
        """(connector, external id) -> (when our last write finished, the version it produced)."""
        self.planned: list[OutboxItem] = []
        """dry-run: the writes that would have been made."""

    # ------------------------------------------------------------------ what is in flight
    def in_flight(self, connector: str, external_id: str) -> bool:
        return (connector, external_id) in self._inflight

    def touched(self, connector: str, external_id: str, version: str | None) -> bool:
        """A write of ours to this record is in flight, or finished lately with another version than
        ``version`` (a read of it may show a half-applied write or the state before it)."""
        key = (connector, external_id)
        recent = self._recent.get(key)
        return key in self._inflight or (
            recent is not None and time.monotonic() - recent[0] < RECENT_WRITE_SECONDS and version != recent[1])

    # ------------------------------------------------------------------ entry points
    async def execute(self, items: Sequence[OutboxItem]) -> None:
        """Carry out queued writes, grouped by target (batched where the target can). Creates into a
        member whose window this ledger has not read yet stay queued (onboarding)."""
        by_target: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in await self.hold_creates(items):
            if not self.ctx.stopped(item.connector):
                by_target[item.connector].append(item)
        await asyncio.gather(*(self._execute_target(target, batch) for target, batch in by_target.items()))

    async def drain_outbox(self, connectors: Iterable[str] | None = None) -> None:
        """Carry out writes left queued by an earlier pass or a crash."""
        if self.ctx.dry_run:
            return
        names = set(connectors) if connectors is not None else set(self.ctx.connectors)
        async with self.ctx.ledger.transaction(readonly=True) as tx:
            items = await tx.outbox_pending(limit=10_000, states=("pending", "sending"))
        items = [i for i in items if i.connector in names]
        if items:
            await self.execute(items)

    async def hold_creates(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Creates into a member whose window this ledger has not read yet wait in the outbox (a dry run
        keeps them in its overlay): the record they would duplicate may be there. Returns the rest."""
        targets = {i.connector for i in items if i.op == WriteKind.CREATE.value}
        if not targets:
            return list(items)
        read = await self.ctx.windows_read(targets)
        ready: list[OutboxItem] = []
        held: dict[str, int] = defaultdict(int)
        for item in items:
            waits = item.connector not in read and item.connector not in self.ctx.never_read
            if item.op == WriteKind.CREATE.value and waits:
                held[item.connector] += 1
                if self.ctx.overlay is not None:
                    self.ctx.overlay.hold(item)
                continue
            ready.append(item)
        for connector, count in sorted(held.items()):
            log.info("creates_held", connector=connector, count=count)
        return ready

    async def blocked_creates(self, tx: Tx, target: str, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Creates into ``target`` of appointments with an open link conflict about ``target``'s records
        (onboarding could not tell which one it is): they wait until that is settled."""
        creates = [i for i in items if i.op == WriteKind.CREATE.value]
        if not creates:
            return []
        cids = {i.canonical_id for i in creates}
        blocked = {c.canonical_id for c in await tx.open_conflicts_on(LINK_FIELD, cids)
                   if names_connector(c.values, target)}
        if self.ctx.overlay is not None:
            overlay = self.ctx.overlay
            blocked |= {cid for cid in cids if names_connector(overlay.link_conflicts.get(cid, {}), target)}
        return [i for i in creates if i.canonical_id in blocked]

    # ------------------------------------------------------------------ per target
    async def _execute_target(self, target: str, items: list[OutboxItem]) -> None:
        connector = self.ctx.connectors.get(target)
        if connector is None:
            return
        size = max(1, connector.capabilities.batch_write_size)
        if size > 1:
            for start in range(0, len(items), size):
                if self.ctx.stopped(target):
                    return
                await self._execute_batch(connector, target, items[start:start + size])
            return
        # one record per call: groups of records are claimed (and settled) in one transaction each, a
        # few groups at a time, and their calls go out concurrently within the write slots (_send).
        # Two writes of one appointment never share a group: the later one waits for the earlier.
        group_size = 2 * self.max_concurrency
        waves: list[list[OutboxItem]] = []
        seen: dict[str, int] = defaultdict(int)
        for item in items:
            wave = seen[item.canonical_id]
            seen[item.canonical_id] += 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(item)
        groups_in_flight = asyncio.Semaphore(GROUPS_IN_FLIGHT)

        async def group(chunk: list[OutboxItem]) -> None:
            async with groups_in_flight:
                if not self.ctx.stopped(target):
                    await self._execute_batch(connector, target, chunk)

        for wave_items in waves:
            if self.ctx.stopped(target):
                return
            await asyncio.gather(*(group(wave_items[start:start + group_size])
                                   for start in range(0, len(wave_items), group_size)))

    async def _execute_batch(self, connector: Connector, target: str, items: list[OutboxItem]) -> None:
        cids = sorted({item.canonical_id for item in items})
        locks = [self._record_locks[cid] for cid in cids]
        followups: list[OutboxItem] = []
        for lock in locks:
            await lock.acquire()
        try:
            requests, replaces = await self._prepare(connector, target, items)
            if requests:
                await self._send(connector, target, requests, followups)
            for item, request, link, believed in replaces:
                await self.races.replace(connector, item, request, link, believed, followups)
            self.ctx.stats.of(target).api_calls = api_calls(connector)
        finally:
            for lock in locks:
                lock.release()
            if not self.ctx.dry_run:
                async with self.ctx.ledger.transaction() as tx:
                    await tx.release(cids, self.ctx.holder)
        if followups:
            await self.execute(followups)

    async def _claim(self, tx: Tx, target: str, items: list[OutboxItem]) -> list[OutboxItem]:
        """Claim the appointments of ``items`` for this holder; those another live holder has are left
        (counted in ``claimed_elsewhere``); claims a killed process of this host left are taken over."""
        ctx = self.ctx
        wanted = [i.canonical_id for i in items]
        held = await tx.claim(wanted, ctx.holder, ttl=CLAIM_SECONDS)
        if len(held) < len(set(wanted)):
            holders = await tx.claim_holders([cid for cid in wanted if cid not in held])
            dead = {h for h in holders.values() if holder_is_dead(h)}
            for gone in sorted(dead):
                stale = [cid for cid, h in holders.items() if h == gone]
                await tx.release(stale, gone)
                log.warning("stale_claims_taken_over", connector=target, count=len(stale))
            if dead:
                held = await tx.claim(wanted, ctx.holder, ttl=CLAIM_SECONDS)
            if len(held) < len(set(wanted)):
                others = await tx.claim_holders([cid for cid in wanted if cid not in held])
                for other, count in Counter(others.values()).items():
                    ctx.stats.claimed_elsewhere[other] = ctx.stats.claimed_elsewhere.get(other, 0) + count
                    log.info("claimed_elsewhere", connector=target, holder=other, count=count)
        return await self._still_open(tx, [i for i in items if i.canonical_id in held])

    async def _still_open(self, tx: Tx, items: list[OutboxItem]) -> list[OutboxItem]:
        """The claimed items as the ledger holds them now, those still to be carried out only: another
        process (a replica, an earlier pass) may have finished one since it was read, or tried it (its
        attempts then say so, and a create tried before is searched for before it is sent again)."""
        stored = {o.idempotency_key: o for o in await tx.outbox_by_keys([i.idempotency_key for i in items if i.id])}
        fresh: list[OutboxItem] = []
        for item in items:
            now = stored.get(item.idempotency_key) if item.id is not None else item
            if now is None or now.state not in ("pending", "sending"):
                log.info("write_done_elsewhere", connector=item.connector, canonical_id=item.canonical_id)
                await tx.release([item.canonical_id], self.ctx.holder)
                continue
            fresh.append(now)
        return fresh

    async def _prepare(self, connector: Connector, target: str,
                       items: list[OutboxItem]) -> tuple[list[Prepared], list[Replace]]:
        """In one transaction: claim, drop what is blocked, superseded or already linked, translate the
        rest into requests (or replace flows), and mark them ``sending``."""
        ctx = self.ctx
        work = PageWork()
        requests: list[Prepared] = []
        replaces: list[Replace] = []
        async with ctx.ledger.transaction() as tx:
            items = await self._claim(tx, target, items)
            if not items:
                return [], []
            links = await tx.links_of([i.canonical_id for i in items])
            items = await self._current(tx, target, items, links)
            if not items:
                return [], []
            lookup = await self._lookup(tx, target, items)
            for item in items:
                built = self._build_request(connector, item, links.get(item.canonical_id, []), lookup, work)
                if built is None:
                    continue
                request, link, believed = built
                if (item.op == WriteKind.UPDATE.value and link is not None and believed is not None
                        and self.ctx.members.needs_replace(target, believed, request.desired)):
                    replaces.append((item, request, link, believed))
                else:
                    requests.append((item, request))
            sending = ids_of([item for item, _ in requests])
            if sending:
                await tx.outbox_update(sending, state="sending", bump_attempts=True)
            await store_work(ctx, tx, work)
            await self._settle_unsent(tx, target, items)
        ctx.report(work.decisions)
        return requests, replaces

    async def _current(self, tx: Tx, target: str, items: list[OutboxItem],
                       links: Mapping[str, list[Link]]) -> list[OutboxItem]:
        """``items`` less the creates an open link conflict blocks and the writes a later merge made moot;
        the rest brought up to the ledger's latest merge."""
        ctx = self.ctx
        latest = await tx.appointments({i.canonical_id for i in items})
        blocked = await self.blocked_creates(tx, target, items)
        if blocked:
            # onboarding could not tell which record of the target this appointment is: no create
            await tx.release([i.canonical_id for i in blocked], ctx.holder)
            items = [i for i in items if i not in blocked]
        limits = ctx.members.limits(target)
        superseded = [i for i in items if not bring_up_to_date(
            i, latest.get(i.canonical_id), links.get(i.canonical_id, []), target, limits)]
        if superseded:
            await self._nothing_to_write(tx, target, superseded, "superseded by a later merge: nothing to write",
                                         "superseded")
            items = [i for i in items if i not in superseded]
        return items

    async def _nothing_to_write(self, tx: Tx, target: str, items: list[OutboxItem], error: str, detail: str) -> None:
        """``items`` are done without a write (``error`` says why); their claims go, each is unchanged."""
        if ids_of(items):
            await tx.outbox_update(ids_of(items), state="done", error=error)
        await tx.release([i.canonical_id for i in items], self.ctx.holder)
        for i in items:
            self.ctx.stats.of(target).unchanged += 1
            self.ctx.decide(Decision("unchanged", target, i.canonical_id, None, detail=detail))

    async def _lookup(self, tx: Tx, target: str, items: list[OutboxItem]) -> dict[str, dict[str, str]]:
        """The target's ids for every reference the items carry: the merged record's, and the base's (the
        target's current record, which a replace decision looks at, may still name the old patient)."""
        keyed: dict[str, set[str]] = defaultdict(set)
        for item in items:
            for raw in (item.payload["merged"], item.payload.get("base")):
                for name in REFERENCE_FIELDS:
                    value = raw.get(name) if raw else None
                    if value is not None:
                        keyed[REFERENCE_KIND[name]].add(value)
        if self.ctx.members.default_locations:
            keyed["location"].update(self.ctx.members.default_locations.values())  # one `located` may fill in
        return {kind: await tx.crosswalk_lookup(kind, sorted(keys), target) for kind, keys in keyed.items()}

    async def _settle_unsent(self, tx: Tx, target: str, items: list[OutboxItem]) -> None:
        """Items the translation closed: failed (dead-lettered), or already linked (nothing to create)."""
        ctx = self.ctx
        failed = [i for i in items if i.state == "failed"]
        if ids_of(failed):
            await tx.outbox_update(ids_of(failed), state="failed")
            await tx.release([i.canonical_id for i in failed], ctx.holder)
        linked = [i for i in items if i.state == "linked"]
        if linked:
            await self._nothing_to_write(tx, target, linked,
                                         "nothing to create: a record there is linked to this appointment",
                                         "already linked")

    def _build_request(self, connector: Connector, item: OutboxItem, links: list[Link],
                       lookup: Mapping[str, Mapping[str, str]],
                       work: PageWork) -> tuple[WriteRequest, Link | None, Appointment | None] | None:
        """The request that carries ``item`` to its target, in the target's ids; None when there is none
        (``item.state`` then says why: failed -- dead-lettered into ``work`` -- or linked)."""
        target, members = item.connector, self.ctx.members
        merged = Appointment.from_json(item.payload["merged"])
        base = payload_appointment(item.payload, "base")
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
        located = members.located(merged, links, str(item.payload.get("source") or ""))
        if located is not merged:
            # merged before the member's default_location was configured: written with it now
            merged = located
            item.payload = {**item.payload, "merged": merged.to_json()}
        desired = members.translate(target, merged, lookup)
        missing = desired if isinstance(desired, str) else (
            self._missing_on_create(connector, item, desired, links) if op is WriteKind.CREATE else None)
        if missing is not None:
            item.state = "failed"
            self.planner.dead_letter(work, target, "missing_reference" if isinstance(desired, str) else "missing_field",
                                     missing, canonical_id=item.canonical_id,
                                     external_id=link.external_id if link and isinstance(desired, str) else None,
                                     payload={"phase": "write", "outbox": item.payload, "op": item.op})
            return None
        assert isinstance(desired, Appointment)
        current: VendorRecord | None = None
        believed: Appointment | str | None = None
        if link is not None:
            # what the target holds as far as the ledger knows: its version (the connector re-reads and
            # compares it before writing) and the merge base in the target's ids (its references give a
            # connector the related records it needs; the replace decision looks at it)
            believed = members.translate(target, base, lookup) if base is not None else None
            current = VendorRecord(external_id=link.external_id, version=link.version,
                                   appointment=believed if isinstance(believed, Appointment) else None,
                                   modified_at=link.modified_at)
        changed = frozenset(item.payload.get("changed") or [])
        request = WriteRequest(op, item.canonical_id, desired, external_id=link.external_id if link else None,
                               current=current, changed=changed, current_is_read=False)
        return request, link, believed if isinstance(believed, Appointment) else None

    def _missing_on_create(self, connector: Connector, item: OutboxItem, desired: Appointment,
                           links: Sequence[Link]) -> str | None:
        """Why ``desired`` cannot be created in the target (a field its vendor requires is empty), or None."""
        target, members = item.connector, self.ctx.members
        missing = missing_on_create(desired, connector.capabilities.required_on_create)
        if not missing:
            return None
        source = str(item.payload.get("source") or "")
        holders = {lk.connector for lk in links if not lk.retired} | ({source} if source else set())
        not_storing = [m for m in holders if m in members and "location" in members.limits(m).not_stored]
        return missing_field_reason(target, self.ctx.config.connectors[target].type, item.canonical_id, missing,
                                    not_storing)

    # ------------------------------------------------------------------ sending
    async def _send(self, connector: Connector, target: str, requests: list[Prepared],
                    followups: list[OutboxItem]) -> None:
        ctx = self.ctx
        unread = target in ctx.never_read and target not in await ctx.windows_read([target])
        searching = [(i, r) for i, r in requests if r.kind is WriteKind.CREATE and (i.attempts > 0 or unread)]
        if searching:
            # a create tried before (a crash or a lost answer): find it by its reference first (the
            # searches of a group go out concurrently, within the write slots)
            settled = await asyncio.gather(*(self._search(connector, i, r) for i, r in searching))
            done = {id(i) for (i, _), gone in zip(searching, settled, strict=True) if gone}
            requests = [(i, r) for i, r in requests if id(i) not in done]
        if not requests or ctx.stopped(target):
            await self._requeue([item for item, _ in requests])
            return
        if connector.capabilities.batch_write_size > 1:
            await self._write(connector, target, requests, followups)
        else:
            # one call per record: sent concurrently within the write slots; each outcome is committed
            # with the others ready at the same time (GroupCommit)
            async def one(item: OutboxItem, request: WriteRequest) -> None:
                async with self._slots:
                    if ctx.stopped(target):
                        await self._requeue([item])  # not sent: its attempt counts, so it is searched for first
                    else:
                        await self._write(connector, target, [(item, request)], followups)
            await asyncio.gather(*(one(item, request) for item, request in requests))
        ctx.stats.of(target).api_calls = api_calls(connector)

    async def _search(self, connector: Connector, item: OutboxItem, request: WriteRequest) -> bool:
        """True: the create tried before is settled (found, refused, or queued again)."""
        async with self._slots:
            if self.ctx.stopped(item.connector):
                await self._requeue([item])
                return True
            try:
                return await self.races.unknown_create(connector, item, request)
            except (Retriable, RateLimited, AuthFailure) as exc:
                await self.book.write_failed(item, exc)
                return True

    async def _requeue(self, items: Sequence[OutboxItem]) -> None:
        """The target stopped (auth refused, unreachable): ``items`` go back to the queue."""
        error = self.ctx.stop_errors.get(items[0].connector) if items else None
        if error is not None:
            for item in items:
                await self.book.write_failed(item, error, sent=False)

    async def _write(self, connector: Connector, target: str, requests: list[Prepared],
                     followups: list[OutboxItem]) -> None:
        """One ``connector.write`` call for ``requests``; their outcomes are handled concurrently."""
        keys = [(target, r.external_id) for _, r in requests if r.external_id is not None]
        for key in keys:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            outcomes = await connector.write([r for _, r in requests])
        except (Retriable, RateLimited, AuthFailure) as exc:
            for item, _ in requests:
                await self.book.write_failed(item, exc)
            return
        finally:
            finished = time.monotonic()
            for key in keys:
                self._inflight[key] -= 1
                if not self._inflight[key]:
                    del self._inflight[key]
                self._recent[key] = (finished, None)
        for outcome in outcomes:
            if outcome.record is not None and outcome.error is None:
                self._recent[(target, outcome.record.external_id)] = (time.monotonic(), outcome.record.version)
        await asyncio.gather(*(self.races.handle(connector, item, request, outcome, followups)
                               for (item, request), outcome in zip(requests, outcomes, strict=True)))


def api_calls(connector: Connector) -> int:
    """Calls the connector's HTTP client made so far."""
    calls = getattr(connector.http, "calls", None)
    return int(sum(calls.values())) if calls is not None else 0
