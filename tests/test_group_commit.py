"""Write outcomes committed in groups (syncd/engine/outcomes.py) over a real ledger, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from syncd.config import Config
from syncd.connector import Capabilities, Connector, VendorRecord, WriteKind, WriteRequest
from syncd.engine.canonical import Members
from syncd.engine.context import EngineContext
from syncd.engine.outcomes import GroupCommit, OutcomeBook, OutcomeRows
from syncd.engine.plan import Planner
from syncd.ledger.models import AppointmentRow, AuditEntry, Link, OutboxItem
from syncd.ledger.store import Ledger, Tx
from syncd.model import Appointment, Status

HOLDER = "syncd-test:1"


async def _queued(ledger: Ledger, n: int) -> list[OutboxItem]:
    cids = [f"apt_{i:03d}" for i in range(n)]
    async with ledger.transaction() as tx:
        await tx.outbox_add([OutboxItem(idempotency_key=f"k{cid}", canonical_id=cid, connector="sf", op="create",
                                        payload={}, state="sending") for cid in cids])
        assert await tx.claim(cids, HOLDER, ttl=120) == set(cids)
        return await tx.outbox_by_keys([f"k{cid}" for cid in cids])


def _rows(item: OutboxItem) -> OutcomeRows:
    return OutcomeRows(
        canonical_id=item.canonical_id, outbox_id=item.id,
        links=[Link(canonical_id=item.canonical_id, connector="sf", external_id=f"ext-{item.canonical_id}",
                    version="v1", fingerprint="f", written_fingerprint="f")],
        audit=[AuditEntry(canonical_id=item.canonical_id, connector="sf", action="create", fields=["status"])])


async def test_outcomes_ready_together_share_one_transaction(ledger: Ledger) -> None:
    items = await _queued(ledger, 40)
    commits = GroupCommit(ledger, HOLDER)
    await asyncio.gather(*(commits.commit(_rows(item)) for item in items))
    # all 40 arrived in one turn of the loop: one transaction for all of them
    assert commits.transactions == 1
    async with ledger.transaction(readonly=True) as tx:
        stored = await tx.outbox_by_keys([i.idempotency_key for i in items])
        links = await tx.links_for("sf", [f"ext-{i.canonical_id}" for i in items])
        audit = await tx.audit_for([i.canonical_id for i in items])
        holders = await tx.claim_holders([i.canonical_id for i in items])
    assert {o.state for o in stored} == {"done"}
    assert len(links) == 40 and all(lk.version == "v1" for lk in links.values())
    assert sum(len(v) for v in audit.values()) == 40
    assert holders == {}  # every claim released with its outcome


async def test_a_late_outcome_joins_the_next_group_and_waits_for_its_commit(ledger: Ledger) -> None:
    items = await _queued(ledger, 3)
    commits = GroupCommit(ledger, HOLDER)
    first = asyncio.create_task(commits.commit(_rows(items[0])))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first group's transaction is under way
    await asyncio.gather(commits.commit(_rows(items[1])), commits.commit(_rows(items[2])))
    await first
    async with ledger.transaction(readonly=True) as tx:
        stored = await tx.outbox_by_keys([i.idempotency_key for i in items])
    assert [o.state for o in stored] == ["done", "done", "done"]
    assert 1 <= commits.transactions <= 2


async def test_one_failing_outcome_does_not_take_the_others_with_it(ledger: Ledger) -> None:
    items = await _queued(ledger, 5)
    commits = GroupCommit(ledger, HOLDER)

    async def broken(tx: Tx, rows: OutcomeRows) -> None:
        raise RuntimeError("this outcome cannot be stored")

    bad = _rows(items[2])
    bad.prepare = broken
    results = await asyncio.gather(*(commits.commit(bad if i == 2 else _rows(item)) for i, item in enumerate(items)),
                                   return_exceptions=True)
    assert isinstance(results[2], RuntimeError)
    assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
    async with ledger.transaction(readonly=True) as tx:
        stored = {o.canonical_id: o.state for o in await tx.outbox_by_keys([i.idempotency_key for i in items])}
        links = await tx.links_for("sf", [f"ext-{i.canonical_id}" for i in items])
    # the failed one is not done: its row stays 'sending', so its next attempt searches by reference
    assert stored == {"apt_000": "done", "apt_001": "done", "apt_002": "sending", "apt_003": "done",
                      "apt_004": "done"}
    assert "ext-apt_002" not in links and len(links) == 4


# -- a confirmed create and the merge that came while it was in flight -------------------------------


def _book(ledger: Ledger) -> OutcomeBook:
    caps = Capabilities(webhooks=False, batch_read_size=1, batch_write_size=1,
                        patient_change=True)
    connectors = {"sf": cast(Connector, SimpleNamespace(capabilities=caps, mapping=None))}
    ctx = EngineContext(cast(Config, SimpleNamespace(sync=(), connectors={})), ledger, connectors,
                        Members(connectors, {}), holder=HOLDER)
    return OutcomeBook(ctx, Planner(ctx.members, ctx.stats))


async def test_creates_confirmed_together_follow_later_merges_with_one_update_each(ledger: Ledger) -> None:
    """Each create carries the merge it was planned from; a newer merge committed meanwhile (no write was
    planned for the target: it had no link yet) follows as an update, read for the whole group at once."""
    start = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
    planned = Appointment(status=Status.BOOKED, start=start, end=start + timedelta(minutes=30))
    newer = planned.with_changes(start=start + timedelta(hours=1), end=start + timedelta(hours=1, minutes=30))
    items = await _queued(ledger, 6)
    async with ledger.transaction() as tx:
        await tx.save_appointments([AppointmentRow(canonical_id=i.canonical_id, sync_group="g",
                                                   snapshot=(newer if n % 2 else planned).to_json(),
                                                   fingerprint="x") for n, i in enumerate(items)])
    book = _book(ledger)
    for item in items:
        item.payload = {"merged": planned.to_json(), "source": "crm"}

    async def confirm(item: OutboxItem) -> None:
        request = WriteRequest(WriteKind.CREATE, item.canonical_id, planned)
        record = VendorRecord(external_id=f"sf-{item.canonical_id}", version="v1", appointment=planned)
        await book.write_ok(item, request, record)

    await asyncio.gather(*(confirm(item) for item in items))
    assert book.commits.transactions == 1
    async with ledger.transaction(readonly=True) as tx:
        queued = await tx.outbox_pending(limit=100, states=("pending",))
        links = await tx.links_for("sf", [f"sf-{i.canonical_id}" for i in items])
    assert len(links) == 6
    moved = {i.canonical_id for n, i in enumerate(items) if n % 2}
    assert {(q.canonical_id, q.op) for q in queued} == {(cid, "update") for cid in moved}
    assert all(set(q.payload["changed"]) == {"start", "end"} for q in queued)
