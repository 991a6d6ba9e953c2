"""The ledger on SQLite and PostgreSQL (every test runs on both through the ``ledger`` fixture)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event

from syncd.connector import StateStore
from syncd.ledger.models import AppointmentRow, AuditEntry, DeadLetter, Link, OutboxItem, metadata
from syncd.ledger.store import Ledger, LedgerUnavailable

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def link(cid: str, connector: str, ext: str, **kw: Any) -> Link:
    return Link(canonical_id=cid, connector=connector, external_id=ext, **kw)


async def test_upgrade_from_empty_then_noop(ledger_url: str) -> None:
    """`db upgrade` creates the schema from nothing; a second upgrade changes nothing."""
    ledger = await Ledger.open(ledger_url)
    try:
        assert await ledger.revision() is None
        assert await ledger.upgrade() == Ledger.head_revision()

        async def schema() -> dict[str, list[str]]:
            def inspect(conn: sa.Connection) -> dict[str, list[str]]:
                insp = sa.inspect(conn)
                return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}

            async with ledger.engine.connect() as conn:
                return await conn.run_sync(inspect)

        first = await schema()
        assert {
            "appointments",
            "links",
            "cursors",
            "inbox",
            "outbox",
            "dead_letters",
            "conflicts",
            "crosswalk",
            "audit_log",
            "connector_state",
            "leases",
            "alembic_version",
        } <= set(first)
        assert await ledger.upgrade() == Ledger.head_revision()
        assert await schema() == first
    finally:
        await ledger.close()


async def test_migrations_match_models(ledger: Ledger) -> None:
    """The alembic migrations create exactly the tables the models describe (no drift)."""

    def diff(conn: sa.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))

    async with ledger.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_times_come_back_aware_utc(ledger: Ledger) -> None:
    """A time stored with any offset is read back as the same instant, aware, in UTC."""
    madrid = timezone(timedelta(hours=1))
    async with ledger.transaction() as tx:
        await tx.upsert_links([link("A-1", "sf", "X1", modified_at=datetime(2026, 11, 30, 10, 30, tzinfo=madrid))])
    async with ledger.transaction(readonly=True) as tx:
        got = (await tx.links_for("sf", ["X1"]))["X1"]
    assert got.modified_at == datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    assert got.modified_at is not None and got.modified_at.utcoffset() == timedelta(0)
    assert got.created_at.tzinfo is not None


async def test_naive_datetime_is_refused(ledger: Ledger) -> None:
    with pytest.raises(sa.exc.StatementError):
        async with ledger.transaction() as tx:
            await tx.upsert_links([link("A-1", "sf", "X1", modified_at=datetime(2026, 11, 30, 10, 30))])


async def test_links_upsert_lookup_and_retire(ledger: Ledger) -> None:
    """Links are keyed by (connector, external_id); updates keep created_at; retired are hidden."""
    clock = Clock()
    ledger.clock = clock
    async with ledger.transaction() as tx:
        await tx.upsert_links([link("A-1", "sf", "S1", version="1"), link("A-1", "dentally", "D1", version="7")])
    clock.now = T0 + timedelta(minutes=5)
    async with ledger.transaction() as tx:
        await tx.upsert_links([link("A-1", "sf", "S1", version="2", fingerprint="f2", written_fingerprint="f2")])
        found = await tx.links_for("sf", ["S1", "missing"])
    assert set(found) == {"S1"}
    assert (found["S1"].version, found["S1"].fingerprint, found["S1"].written_fingerprint) == ("2", "f2", "f2")
    assert found["S1"].created_at == T0 and found["S1"].updated_at == T0 + timedelta(minutes=5)
    async with ledger.transaction() as tx:
        await tx.upsert_links([link("A-1", "dentally", "D2")])
        await tx.retire_links("dentally", ["D1"])
    async with ledger.transaction(readonly=True) as tx:
        of = await tx.links_of(["A-1", "A-404"])
        everything = await tx.links_of(["A-1"], include_retired=True)
        retired = await tx.links_for("dentally", ["D1"])
    assert [(lk.connector, lk.external_id) for lk in of["A-1"]] == [("dentally", "D2"), ("sf", "S1")]
    assert "A-404" not in of
    assert len(everything["A-1"]) == 3
    assert retired["D1"].retired is True


async def test_appointments_and_claims(ledger: Ledger) -> None:
    """Merge bases round-trip; a claim is exclusive until released or expired."""
    clock = Clock()
    ledger.clock = clock
    snapshot = {"status": "booked", "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z"}
    async with ledger.transaction() as tx:
        await tx.save_appointments(
            [AppointmentRow(canonical_id="A-1", sync_group="g", snapshot=snapshot, fingerprint="fp1")]
        )
        assert await tx.claim(["A-1", "A-2"], "replica-1", ttl=30) == {"A-1", "A-2"}
        assert await tx.claim(["A-1", "A-3"], "replica-2", ttl=30) == {"A-3"}
        assert await tx.claim(["A-1"], "replica-1", ttl=30) == {"A-1"}  # renewal
    async with ledger.transaction(readonly=True) as tx:
        rows = await tx.appointments(["A-1", "A-2", "A-9"])
    assert rows["A-1"].snapshot == snapshot and rows["A-1"].fingerprint == "fp1"
    assert rows["A-1"].claimed_by == "replica-1"
    assert rows["A-2"].snapshot is None and "A-9" not in rows
    async with ledger.transaction() as tx:
        await tx.release(["A-1"], "replica-2")  # not the holder: no effect
        assert await tx.claim(["A-1"], "replica-2", ttl=30) == set()
        await tx.release(["A-1"], "replica-1")
        assert await tx.claim(["A-1"], "replica-2", ttl=30) == {"A-1"}
    clock.now = T0 + timedelta(seconds=31)
    async with ledger.transaction() as tx:
        assert await tx.claim(["A-1", "A-3"], "replica-1", ttl=30) == {"A-1", "A-3"}  # expired claims
        await tx.save_appointments(
            [AppointmentRow(canonical_id="A-1", sync_group="g", snapshot=snapshot, fingerprint="fp2")]
        )
    async with ledger.transaction(readonly=True) as tx:
        row = (await tx.appointments(["A-1"]))["A-1"]
    assert row.fingerprint == "fp2" and row.claimed_by == "replica-1"


async def test_concurrent_claims_from_two_replicas_are_disjoint(ledger: Ledger) -> None:
    """Two ledger connections claiming the same ids at once never both get one."""
    other = await Ledger.open(ledger.url)
    ids = [f"A-{i}" for i in range(50)]
    try:

        async def grab(lg: Ledger, holder: str) -> set[str]:
            got: set[str] = set()
            for start in range(0, len(ids), 10):
                async with lg.transaction() as tx:
                    got |= await tx.claim(ids[start : start + 10], holder, ttl=60)
                await asyncio.sleep(0)
            return got

        first, second = await asyncio.gather(grab(ledger, "r1"), grab(other, "r2"))
    finally:
        await other.close()
    assert first.isdisjoint(second)
    assert first | second == set(ids)


async def test_cursor_in_same_transaction_and_rollback(ledger: Ledger) -> None:
    """The cursor moves only with the rows it covers: an exception rolls both back."""
    async with ledger.transaction() as tx:
        await tx.upsert_links([link("A-1", "zoho", "Z1")])
        await tx.set_cursor("zoho", "c1", success_at=T0)
    with pytest.raises(RuntimeError):
        async with ledger.transaction() as tx:
            await tx.upsert_links([link("A-2", "zoho", "Z2")])
            await tx.set_cursor("zoho", "c2")
            raise RuntimeError("crash before commit")
    async with ledger.transaction() as tx:
        assert await tx.get_cursor("zoho") == "c1"
        assert await tx.links_for("zoho", ["Z2"]) == {}
        await tx.record_poll_error("zoho", "503 from api for jane@example.org")
        assert await tx.get_cursor("unknown") is None
    async with ledger.transaction(readonly=True) as tx:
        cursors = await tx.cursors(["zoho"])
    assert cursors["zoho"].value == "c1" and cursors["zoho"].last_success_at == T0
    assert cursors["zoho"].last_error == "503 from api for [email]"


async def test_inbox_dedup_and_drain(ledger: Ledger) -> None:
    """A repeated (connector, dedup_key) is stored once, in one call or across calls."""
    async with ledger.transaction() as tx:
        assert await tx.inbox_put("dentally", "evt-1", b"{}") is True
        assert await tx.inbox_put_many(
            [
                ("dentally", "evt-1", b"{}"),
                ("dentally", "evt-2", b"{}"),
                ("dentally", "evt-2", b"{}"),
                ("sf", "evt-1", b"{}"),
            ]
        ) == [False, True, False, True]
    async with ledger.transaction() as tx:
        pending = await tx.inbox_pending()
        assert [(i.connector, i.dedup_key) for i in pending] == [
            ("dentally", "evt-1"),
            ("dentally", "evt-2"),
            ("sf", "evt-1"),
        ]
        assert [i.dedup_key for i in await tx.inbox_pending("sf")] == ["evt-1"]
        await tx.inbox_mark_failed([pending[0].id or 0], "boom")
        await tx.inbox_mark_done([i.id or 0 for i in pending[1:]])
    async with ledger.transaction() as tx:
        left = await tx.inbox_pending()
        assert [(i.dedup_key, i.attempts) for i in left] == [("evt-1", 1)]
        assert await tx.inbox_put("dentally", "evt-2", b"{}") is False  # processed, still deduplicated
        assert await tx.inbox_purge(datetime.now(UTC) + timedelta(days=1)) == 2


async def test_outbox_idempotent_queue(ledger: Ledger) -> None:
    async with ledger.transaction() as tx:
        added = await tx.outbox_add(
            [
                OutboxItem(idempotency_key="k1", canonical_id="A-1", connector="sf", op="create", payload={"a": 1}),
                OutboxItem(idempotency_key="k2", canonical_id="A-1", connector="zoho", op="update"),
            ]
        )
        assert added == ["k1", "k2"]
        again = await tx.outbox_add([OutboxItem(idempotency_key="k1", canonical_id="A-1", connector="sf", op="create")])
        assert again == []
    async with ledger.transaction() as tx:
        items = await tx.outbox_pending()
        assert [(i.idempotency_key, i.payload) for i in items] == [("k1", {"a": 1}), ("k2", {})]
        await tx.outbox_update([items[0].id or 0], state="sending", bump_attempts=True)
        await tx.outbox_update([items[1].id or 0], state="failed", error="x" * 900)
    async with ledger.transaction(readonly=True) as tx:
        assert await tx.outbox_pending() == []
        sending = await tx.outbox_pending(states=("sending",))
        failed = await tx.outbox_pending("zoho", states=("failed",))
    assert sending[0].attempts == 1
    assert failed[0].last_error is not None and len(failed[0].last_error) <= 500


async def test_dead_letters_are_deduplicated_and_resolvable(ledger: Ledger) -> None:
    async with ledger.transaction() as tx:
        first = await tx.add_dead_letter(
            "dentally",
            "rejected",
            "422 state: call 0612 345 678",
            external_id="777",
            payload={"op": "update"},
            retriable=False,
        )
        second = await tx.add_dead_letter("dentally", "rejected", "422 again", external_id="777")
        other = await tx.add_dead_letters(
            [
                DeadLetter(
                    connector="sf",
                    kind="missing_reference",
                    reason="patient P-1 has no entry on sf",
                    canonical_id="A-1",
                )
            ]
        )
    assert first == second and other[0] != first
    async with ledger.transaction() as tx:
        letters = await tx.dead_letters()
        assert [(d.connector, d.attempts, d.reason) for d in letters] == [
            ("dentally", 2, "422 again"),
            ("sf", 1, "patient P-1 has no entry on sf"),
        ]
        assert await tx.resolve_dead_letters([first]) == 1
        assert await tx.resolve_dead_letters([first]) == 0
        assert [d.id for d in await tx.dead_letters()] == other
        assert len(await tx.dead_letters(include_resolved=True)) == 2
    async with ledger.transaction() as tx:
        letter = await tx.add_dead_letter("dentally", "rejected", "call +44 20 7946 0958 now", external_id="777")
        assert letter != first  # the old one is resolved: a new letter
        assert (await tx.dead_letters(ids=[letter]))[0].reason == "call [phone] now"


async def test_conflicts_open_once_and_resolve(ledger: Ledger) -> None:
    """A conflict is opened once per field and counts on the one connector it belongs to, not on every
    member the appointment is linked to."""
    async with ledger.transaction() as tx:
        a = await tx.open_conflict("A-1", "start", {"sf": "2026-12-01T09:00:00Z"}, "both changed", connector="sf")
        b = await tx.open_conflict("A-1", "start", {"sf": "2026-12-01T10:00:00Z"}, "both changed", connector="sf")
        await tx.upsert_links([link("A-1", "sf", "S1"), link("A-1", "dentally", "D1")])
        # a write the target could not take names its target (rows from before revision 0003 too)
        await tx.open_conflict("A-2", "status", {"target": "zoho"}, "locked")
    assert a == b
    summaries = await ledger.summaries(["sf", "dentally", "zoho"])
    assert (summaries["sf"].open_conflicts, summaries["dentally"].open_conflicts,
            summaries["zoho"].open_conflicts) == (1, 0, 1)
    async with ledger.transaction() as tx:
        row, other = await tx.conflicts()
        assert row.values == {"sf": "2026-12-01T10:00:00Z"} and row.opened.tzinfo is not None
        assert row.connector == "sf"
        assert await tx.resolve_conflict(other.id or 0, "take zoho") is True
        assert await tx.resolve_conflict(a, "take sf") is True
        assert await tx.resolve_conflict(a, "take sf") is False
        assert await tx.conflicts() == []
        assert (await tx.totals()) == {"dead_letters": 0, "open_conflicts": 0}


async def test_audit_trail(ledger: Ledger) -> None:
    async with ledger.transaction() as tx:
        await tx.add_audit(
            [
                AuditEntry(
                    canonical_id="A-1",
                    connector="sf",
                    action="update",
                    fields=["start", "end"],
                    fingerprint_before="f1",
                    fingerprint_after="f2",
                    at=T0,
                ),
                AuditEntry(canonical_id="A-1", connector="dentally", action="replace", fields=["patient"], at=T0),
            ]
        )
    async with ledger.transaction(readonly=True) as tx:
        trail = (await tx.audit_for(["A-1"]))["A-1"]
    assert [(e.action, e.fields) for e in trail] == [("update", ["start", "end"]), ("replace", ["patient"])]
    assert trail[0].at == T0


async def test_state_store_and_leases(ledger: Ledger) -> None:
    """The StateStore protocol is backed by the ledger; leases exclude a second holder until expiry."""
    store = ledger.state_store("zoho")
    assert isinstance(store, StateStore)
    assert await store.get("channel") is None
    await store.set("channel", "ch-1")
    await store.set("channel", "ch-2")
    assert await store.get("channel") == "ch-2"
    assert await ledger.state_store("sf").get("channel") is None
    await store.set("channel", None)
    assert await store.get("channel") is None
    clock = Clock()
    ledger.clock = clock
    async with ledger.transaction() as tx:
        assert await tx.lease_acquire("run", "p1", ttl=30) is True
        assert await tx.lease_acquire("run", "p2", ttl=30) is False
        assert await tx.lease_acquire("run", "p1", ttl=30) is True
    clock.now = T0 + timedelta(seconds=60)
    async with ledger.transaction() as tx:
        assert await tx.lease_acquire("run", "p2", ttl=30) is True
        holder = await tx.lease_holder("run")
        assert holder is not None and holder.holder == "p2"
        await tx.lease_release("run", "p2")
        assert await tx.lease_holder("run") is None


async def test_a_page_of_500_is_one_transaction_with_few_statements(ledger: Ledger) -> None:
    """Batch-first: 500 records cost a handful of statements, not one per record."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(ledger.engine.sync_engine, "before_cursor_execute", count)
    try:
        ext = [f"Z{i}" for i in range(500)]
        async with ledger.transaction() as tx:
            await tx.links_for("zoho", ext)
            await tx.upsert_links([link(f"A-{i}", "zoho", e, version="1") for i, e in enumerate(ext)])
            await tx.save_appointments(
                [AppointmentRow(canonical_id=f"A-{i}", sync_group="g", snapshot={"i": i}) for i in range(500)]
            )
            await tx.claim([f"A-{i}" for i in range(500)], "r1", ttl=60)
            await tx.outbox_add(
                [
                    OutboxItem(idempotency_key=f"k{i}", canonical_id=f"A-{i}", connector="sf", op="create")
                    for i in range(500)
                ]
            )
            await tx.set_cursor("zoho", "c")
    finally:
        event.remove(ledger.engine.sync_engine, "before_cursor_execute", count)
    writes = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "SELECT 1"))]
    assert len(writes) <= 20, len(writes)


async def test_ten_thousand_changes_in_batches_is_fast(ledger: Ledger) -> None:
    """A poll of 10,000 changes, stored as 20 transactions of 500, takes seconds, not minutes."""
    started = time.perf_counter()
    for page in range(20):
        ext = [f"E{page}-{i}" for i in range(500)]
        async with ledger.transaction() as tx:
            known = await tx.links_for("sf", ext)
            assert known == {}
            await tx.upsert_links([link(f"C{page}-{i}", "sf", e) for i, e in enumerate(ext)])
            await tx.set_cursor("sf", f"page-{page}")
    assert time.perf_counter() - started < 30
    async with ledger.transaction(readonly=True) as tx:
        assert len(await tx.links_for("sf", [f"E19-{i}" for i in range(500)])) == 500


async def test_status_summaries(ledger: Ledger) -> None:
    async with ledger.transaction() as tx:
        await tx.set_cursor("sf", "cur-1", success_at=T0)
        await tx.inbox_put("sf", "e1", b"{}")
        await tx.outbox_add([OutboxItem(idempotency_key="k", canonical_id="A", connector="dentally", op="update")])
        await tx.add_dead_letter("dentally", "mapping", "unknown status")
    summary = await ledger.summaries(["sf", "dentally"])
    assert summary["sf"].cursor == "cur-1" and summary["sf"].last_success_at == T0
    assert (summary["sf"].inbox_pending, summary["dentally"].outbox_pending) == (1, 1)
    assert (summary["dentally"].dead_letters, summary["sf"].dead_letters) == (1, 0)


async def test_unreachable_ledgers_raise_ledger_unavailable(tmp_path: Any) -> None:
    with pytest.raises(LedgerUnavailable):
        await Ledger.open(f"sqlite+aiosqlite:///{tmp_path}/missing.db", create=False)
    with pytest.raises(LedgerUnavailable):
        await Ledger.open(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(LedgerUnavailable):
        await Ledger.open("postgresql+asyncpg://postgres@127.0.0.1:1/none")


async def test_dead_letters_in_bulk(ledger: Ledger) -> None:
    """A batch of dead letters is stored in bulk; the same batch again updates, never duplicates."""
    batch = [DeadLetter(connector="saludya", kind="mapping", reason=f"r{i}", external_id=f"E{i}") for i in range(300)]
    async with ledger.transaction() as tx:
        first = await tx.add_dead_letters(batch)
    async with ledger.transaction() as tx:
        second = await tx.add_dead_letters(batch)
        letters = await tx.dead_letters(connector="saludya")
    assert first == second and len(set(first)) == 300
    assert {d.attempts for d in letters} == {2} and len(letters) == 300
