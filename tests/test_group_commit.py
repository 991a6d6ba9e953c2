"""Write outcomes committed in groups (syncd/engine/outcomes.py) over a real ledger, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from syncd.engine.outcomes import GroupCommit, OutcomeRows
from syncd.ledger.models import AuditEntry, Link, OutboxItem
from syncd.ledger.store import Ledger, Tx

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
