"""Replicas on PostgreSQL: outbox and inbox rows claimed with ``FOR UPDATE SKIP LOCKED`` plus an expiry
(in order per appointment and target), and the appointment row locks that keep a merge on one replica
and a write outcome on another from missing each other (docs/operations.md "Replicas")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from syncd.engine.outcomes import GroupCommit, OutcomeRows
from syncd.ledger.models import AppointmentRow, Link, OutboxItem, utcnow
from syncd.ledger.store import Ledger, Tx

# PostgreSQL only (SQLite is one daemon per file): the shared ledger fixture's PostgreSQL case
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)]
TTL = 60.0


@pytest.fixture
async def two(ledger: Ledger) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """The test's ledger and a second connection pool on it: two replicas."""
    assert ledger.dialect == "postgresql"
    other = await Ledger.open(ledger.url, create=False)
    try:
        yield ledger, other
    finally:
        await other.close()


def _item(n: int, cid: str, connector: str = "sf") -> OutboxItem:
    return OutboxItem(idempotency_key=f"k{n}", canonical_id=cid, connector=connector, op="update", payload={"n": n})


async def _queue(ledger: Ledger, items: list[OutboxItem], *, age: float = 60.0) -> None:
    async with ledger.transaction() as tx:
        await tx.outbox_add(items)
        # queued a while ago (rows changed less than ROW_CLAIM_SETTLED ago are left to their planner)
        await tx.conn.execute(tx_outbox_age(age))


def tx_outbox_age(age: float) -> Any:
    import sqlalchemy as sa

    from syncd.ledger.store import OUTBOX

    return sa.update(OUTBOX).values(updated_at=utcnow() - timedelta(seconds=age))


async def test_two_concurrent_claimers_get_disjoint_outbox_rows(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    await _queue(a, [_item(n, f"A-{n}") for n in range(10)])
    async with a.transaction() as tx_a:
        mine = await tx_a.outbox_claim("run:a:1", TTL, connectors=["sf"], limit=4)
        # A's claim is not committed yet: B neither waits for it nor takes its rows (SKIP LOCKED)
        async with b.transaction() as tx_b:
            theirs = await asyncio.wait_for(tx_b.outbox_claim("run:b:2", TTL, connectors=["sf"], limit=100), 5)
    assert len(mine) == 4 and len(theirs) == 6
    assert not {i.id for i in mine} & {i.id for i in theirs}
    # committed: neither claims the other's rows again until they expire
    async with a.transaction() as tx:
        renewed = await tx.outbox_claim("run:a:1", TTL, connectors=["sf"], limit=100)
    assert {i.id for i in renewed} == {i.id for i in mine}  # its own, renewed; none of B's
    async with b.transaction() as tx:
        again = await tx.outbox_claim("run:b:2", TTL, connectors=["sf"], limit=100)
    assert {i.id for i in again} == {i.id for i in theirs}  # its own, renewed; none of A's


async def test_concurrent_claim_rounds_never_take_one_row_twice(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    await _queue(a, [_item(n, f"C-{n}") for n in range(120)])
    taken: dict[str, list[int]] = {"run:a:1": [], "run:b:2": []}

    async def claimer(ledger: Ledger, holder: str) -> None:
        while True:
            async with ledger.transaction() as tx:
                rows = await tx.outbox_claim(
                    holder, TTL, connectors=["sf"], limit=7, after=max(taken[holder], default=0)
                )
            if not rows:
                return
            taken[holder].extend(int(r.id or 0) for r in rows)
            await asyncio.sleep(0)

    await asyncio.gather(claimer(a, "run:a:1"), claimer(b, "run:b:2"))
    both = taken["run:a:1"] + taken["run:b:2"]
    assert len(both) == len(set(both)) == 120
    assert taken["run:a:1"] and taken["run:b:2"]


async def test_order_per_appointment_and_target_is_kept_across_replicas(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    await _queue(a, [_item(1, "X"), _item(2, "X"), _item(3, "Y"), _item(4, "X", connector="zoho")])
    async with a.transaction() as tx:
        first = await tx.outbox_claim("run:a:1", TTL, connectors=["sf", "zoho"])
    # the first open row of each (appointment, target) only: X's second sf write waits behind its first
    assert sorted(i.idempotency_key for i in first) == ["k1", "k3", "k4"]
    async with b.transaction() as tx:
        assert await tx.outbox_claim("run:b:2", TTL, connectors=["sf", "zoho"]) == []
    async with a.transaction() as tx:
        await tx.outbox_update([i.id for i in first if i.idempotency_key == "k1" and i.id is not None], state="done")
    async with b.transaction() as tx:
        later = await tx.outbox_claim("run:b:2", TTL, connectors=["sf", "zoho"])
    assert [i.idempotency_key for i in later] == ["k2"]


async def test_a_dead_holders_rows_are_claimed_again_once_its_claim_expires(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    await _queue(a, [_item(1, "D-1"), _item(2, "D-2")])
    async with a.transaction() as tx:
        assert len(await tx.outbox_claim("run:elsewhere:1", 1.0, connectors=["sf"])) == 2
    async with b.transaction() as tx:
        assert await tx.outbox_claim("run:b:2", TTL, connectors=["sf"]) == []
    await asyncio.sleep(1.2)
    async with b.transaction() as tx:
        assert len(await tx.outbox_claim("run:b:2", TTL, connectors=["sf"])) == 2
    # a row changed just now is left to whoever queued it
    await _queue(a, [_item(3, "D-3")], age=0.0)
    async with b.transaction() as tx:
        assert await tx.outbox_claim("run:b:2", TTL, connectors=["sf"], settled_for=5.0) == []
        released = await tx.outbox_claim("run:b:2", TTL, connectors=["sf"])
        await tx.outbox_release([i.id for i in released if i.id is not None], "run:b:2")
    async with a.transaction() as tx:
        assert len(await tx.outbox_claim("run:a:1", TTL, connectors=["sf"])) == 3  # given back: free


async def test_inbox_deliveries_are_claimed_by_one_replica_each(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    async with a.transaction() as tx:
        await tx.inbox_put_many([("sf", f"d{n}", b"{}") for n in range(6)])
    async with a.transaction() as tx_a:
        mine = await tx_a.inbox_claim("run:a:1", TTL, limit=2)
        async with b.transaction() as tx_b:
            theirs = await asyncio.wait_for(tx_b.inbox_claim("run:b:2", TTL), 5)
    assert len(mine) == 2 and len(theirs) == 4
    assert not {i.id for i in mine} & {i.id for i in theirs}
    async with b.transaction() as tx:
        await tx.inbox_mark_done([i.id for i in theirs if i.id is not None])
        await tx.inbox_release([i.id for i in mine if i.id is not None], "run:b:2")  # not its own: no effect
    async with b.transaction() as tx:
        assert await tx.inbox_claim("run:b:2", TTL) == []  # A's two are still A's


# -- the reconcile race -------------------------------------------------------------------------------

CID = "APPT-1"
S1, S2, S3 = "s1", "s2", "s3"


async def _seed_appointment(ledger: Ledger) -> None:
    async with ledger.transaction() as tx:
        await tx.save_appointments(
            [AppointmentRow(canonical_id=CID, sync_group="g", snapshot={"notes": "v1"}, fingerprint="v1")]
        )
        await tx.upsert_links(
            [
                Link(canonical_id=CID, connector=S1, external_id="e1"),
                Link(canonical_id=CID, connector=S2, external_id="e2"),
            ]
        )


async def _merge_on_replica_a(ledger: Ledger) -> list[str]:
    """Replica A merges a change of S1's record into the appointment, as the engine's page transaction
    does (the lock first, the same call as ``Engine.process_page``; then links, merge base, the writes
    planned for every linked member): returns the members it planned a write to."""
    async with ledger.transaction() as tx:
        await tx.lock_appointments([], S1, ["e1"])
        links = (await tx.links_of([CID])).get(CID, [])
        await tx.save_appointments(
            [AppointmentRow(canonical_id=CID, sync_group="g", snapshot={"notes": "v2"}, fingerprint="v2")]
        )
        targets = sorted(lk.connector for lk in links if lk.connector != S1)
        await tx.outbox_add([_merge_write(n, t) for n, t in enumerate(targets)])
    return targets


def _merge_write(n: int, target: str) -> OutboxItem:
    return OutboxItem(
        idempotency_key=f"merge-{n}-{target}",
        canonical_id=CID,
        connector=target,
        op="update",
        payload={"merged": {"notes": "v2"}},
    )


async def _race(two: tuple[Ledger, Ledger]) -> tuple[list[str], list[str], bool]:
    """Replica B's create into S3 commits its outcome (the real :class:`GroupCommit`, with a prepare step
    like the engine's: the latest merge base read, a follow-up update queued when it moved) while
    replica A merges; B is held right after its read until A has merged or for a second. Returns
    (members A planned, follow-ups B queued, whether A merged while B was held)."""
    a, b = two
    await _seed_appointment(a)
    b_read = asyncio.Event()
    b_go = asyncio.Event()
    followups: list[str] = []

    async def prepare(tx: Tx, rows: OutcomeRows) -> None:
        row = (await tx.appointments([CID]))[CID]
        b_read.set()
        await b_go.wait()
        if row.snapshot != {"notes": "v1"}:  # created with v1: the merge moved on meanwhile
            followups.append(S3)
            await tx.outbox_add([_merge_write(9, S3)])

    commits = GroupCommit(b, "run:b:2")
    outcome = asyncio.create_task(
        commits.commit(
            OutcomeRows(
                canonical_id=CID,
                outbox_id=None,
                links=[Link(canonical_id=CID, connector=S3, external_id="e3")],
                prepare=prepare,
            )
        )
    )
    await asyncio.wait_for(b_read.wait(), 10)
    merge = asyncio.create_task(_merge_on_replica_a(a))
    done, _ = await asyncio.wait({merge}, timeout=1.0)  # merged at once, or waiting for B's lock
    b_go.set()
    await asyncio.wait_for(outcome, 10)
    planned = await asyncio.wait_for(merge, 10)
    return planned, followups, bool(done)


async def test_a_merge_beside_a_create_outcome_never_misses_the_new_member(two: tuple[Ledger, Ledger]) -> None:
    planned, followups, merged_at_once = await _race(two)
    # the locks order them: A waits for B's commit, then sees S3's new link and writes the change there
    assert not merged_at_once
    assert S3 in planned, (planned, followups)


async def test_without_the_lock_the_race_misses_the_member(
    two: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race above is real: with the lock disabled, A merges without S3 and B's outcome does not see
    A's merge, so S3 keeps the old version (what the test above would catch)."""

    async def no_lock(self: Tx, *args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(Tx, "lock_appointments", no_lock)
    planned, followups, merged_at_once = await _race(two)
    assert merged_at_once
    assert S3 not in planned and S3 not in followups, (planned, followups)


async def test_a_dead_holders_row_claims_can_be_dropped_at_once(two: tuple[Ledger, Ledger]) -> None:
    """What the daemon does for a process of its host that is gone (kill -9, then a restart)."""
    a, b = two
    await _queue(a, [_item(1, "G-1")])
    async with a.transaction() as tx:
        await tx.inbox_put_many([("sf", "g1", b"{}")])
    async with a.transaction() as tx:
        assert len(await tx.outbox_claim("run:gone:1", TTL, connectors=["sf"])) == 1
        assert len(await tx.inbox_claim("run:gone:1", TTL)) == 1
    async with b.transaction() as tx:
        assert await tx.row_claimants() == {"run:gone:1"}
        assert await tx.inbox_claim("run:b:2", TTL) == []
        await tx.drop_row_claims("run:gone:1")
    async with b.transaction() as tx:
        assert await tx.row_claimants() == set()
        assert len(await tx.inbox_claim("run:b:2", TTL)) == 1
        assert len(await tx.outbox_claim("run:b:2", TTL, connectors=["sf"])) == 1
