"""A record read before one of syncd's writes reached it must not undo that write.

Seen in ``syncd demo`` under load: Salesforce's poll took a concurrent note edit and syncd wrote it to
Zoho; Zoho's poll, running at the same moment, had read its record (a reschedule) *before* that write.
Reconciled after it, the Zoho record still held the old note and the merge took that for a change made
in Zoho: the old note went back to every system and the Salesforce user's edit was lost
(docs/reference.md §6, "no lost update").

Each member's link keeps what the member was last known to hold (``links.seen``); only where a record
differs from that is it news. A record older than what the ledger knows of it is read again first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.connector import VendorRecord
from syncd.engine.core import Engine
from syncd.engine.merge import LEDGER_SIDE, Side, merge_member, news_of
from syncd.model import Appointment, Status
from syncd.runtime import open_runtime
from tests.scenarios.harness import World, parse_sf_time, synced_pair, zoho_time

NOTE = "Wheelchair access: use the side door"


@asynccontextmanager
async def _pair(tmp_path: Path, ledger_url: str) -> AsyncIterator[tuple[World, str, str, str]]:
    """Zoho and Salesforce in sync on one appointment: (world, canonical id, zoho id, salesforce id)."""
    async with synced_pair(tmp_path, ledger_url, {"zoho": "zoho_crm", "sf": "salesforce_health"}, source="zoho",
                           n=1) as world:
        cid = world.dataset.appointments[0].key
        yield world, cid, await world.link(cid, "zoho"), await world.link(cid, "sf")


async def _reschedule_in_zoho(world: World, zid: str) -> datetime:
    rec = await world.record("zoho", zid)
    start = datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=2)
    end = datetime.fromisoformat(rec["Appointment_End_Time"]) + timedelta(hours=2)
    await world.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                   "Appointment_End_Time": zoho_time(end)})
    return start.astimezone(UTC)


async def _read(engine: Engine, name: str, external_id: str) -> list[VendorRecord]:
    return list((await engine.connectors[name].read([external_id])).values())


async def _canonical(world: World, cid: str) -> Appointment:
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            row = (await tx.appointments([cid]))[cid]
    finally:
        await ledger.close()
    assert row.snapshot is not None
    return Appointment.from_json(row.snapshot)


async def _claim(world: World, cid: str, holder: str, *, release: bool = False) -> None:
    ledger = await world.ledger()
    try:
        async with ledger.transaction() as tx:
            if release:
                await tx.release([cid], holder)
            else:
                assert await tx.claim([cid], holder, ttl=300) == {cid}
    finally:
        await ledger.close()


async def _assert_both(world: World, zid: str, sid: str, start: datetime) -> None:
    zoho, sf = await world.record("zoho", zid), await world.record("sf", sid)
    assert zoho["Additional_Information"] == NOTE, "Zoho lost the note"
    assert sf["Comments"] == NOTE, "Salesforce lost the note"
    assert datetime.fromisoformat(zoho["Appointment_Start_Time"]) == start
    assert parse_sf_time(sf["SchedStartTime"]) == start


async def test_a_read_taken_before_our_queued_write_does_not_undo_it(tmp_path: Path, ledger_url: str) -> None:
    async with _pair(tmp_path, ledger_url) as (world, cid, zid, sid):
        start = await _reschedule_in_zoho(world, zid)
        async with open_runtime(world.config) as rt:
            engine = Engine(world.config, rt.ledger, rt.connectors, holder="run:test")
            stale = await _read(engine, "zoho", zid)  # Zoho's poll: the reschedule, the old note
            # a Salesforce user adds a note; the write of it to Zoho stays queued (another replica holds
            # the appointment's claim for now)
            await world.edit("sf", sid, {"Comments": NOTE})
            await _claim(world, cid, "replica-2")
            await engine.process_page("sf", await _read(engine, "sf", sid))
            assert (await world.record("zoho", zid))["Additional_Information"] != NOTE  # still queued
            # now Zoho's page is reconciled: the old note it still holds is no change made in Zoho
            await engine.process_page("zoho", stale)
            merged = await _canonical(world, cid)
            assert merged.notes == NOTE, "the stale Zoho read took the Salesforce note back out"
            assert merged.start == start, "the reschedule was not merged"
        await _claim(world, cid, "replica-2", release=True)
        settle = await world.resync_within()  # the queued writes go out now
        assert settle.exit_code == 0, settle.document
        await _assert_both(world, zid, sid, start)
        quiet = await world.resync_within()
        assert all(c["updated"] == c["created"] == 0 for c in quiet.document["connectors"].values()), quiet.document


async def test_a_read_older_than_a_write_by_another_process_is_read_again(tmp_path: Path, ledger_url: str) -> None:
    async with _pair(tmp_path, ledger_url) as (world, _cid, zid, sid):
        start = await _reschedule_in_zoho(world, zid)
        async with open_runtime(world.config) as daemon_rt, open_runtime(world.config) as resync_rt:
            daemon = Engine(world.config, daemon_rt.ledger, daemon_rt.connectors, holder="run:test")
            other = Engine(world.config, resync_rt.ledger, resync_rt.connectors, holder="resync:test")
            stale = await _read(daemon, "zoho", zid)  # the daemon's poll of Zoho
            # a minute later a second process (``syncd resync``) carries a note from Salesforce to Zoho
            await world.set_clock("zoho", datetime.now(UTC) + timedelta(minutes=1))
            await world.edit("sf", sid, {"Comments": NOTE})
            await other.process_page("sf", await _read(other, "sf", sid))
            assert (await world.record("zoho", zid))["Additional_Information"] == NOTE
            # the daemon's page, older than that write, reaches the shared ledger only now
            await daemon.process_page("zoho", stale)
            sf = await world.record("sf", sid)
            assert sf["Comments"] == NOTE, "the stale Zoho read took the note back out of Salesforce"
            assert parse_sf_time(sf["SchedStartTime"]) == start
        settle = await world.resync_within()
        assert settle.exit_code == 0, settle.document
        await _assert_both(world, zid, sid, start)


def _appt(**kw: object) -> Appointment:
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    values: dict[str, object] = {"status": Status.BOOKED, "start": start, "end": start + timedelta(minutes=30),
                                 "notes": "old", "patient": "P-1"}
    values.update(kw)
    return Appointment(**values)  # type: ignore[arg-type]


def test_news_of_keeps_the_base_where_the_record_still_holds_what_it_held() -> None:
    seen = _appt()
    base = _appt(notes="from the other system")
    moved = datetime(2026, 12, 1, 11, tzinfo=UTC)
    record = _appt(start=moved, end=moved + timedelta(minutes=30))  # rescheduled here, note not arrived yet
    news = news_of(record, seen, base)
    assert news.notes == "from the other system"
    assert (news.start, news.end) == (moved, moved + timedelta(minutes=30))
    # nothing new at all: the base itself
    assert news_of(seen, seen, base) == base
    # a change of its own on the same field wins over the base (the merge settles it later)
    assert news_of(_appt(notes="edited here"), seen, base).notes == "edited here"
    # a cancellation brings its reason along
    cancelled = news_of(_appt(status=Status.CANCELLED, cancellation_reason="patient"), seen, base)
    assert (cancelled.status, cancelled.cancellation_reason, cancelled.notes) == (
        Status.CANCELLED, "patient", "from the other system")


async def test_queued_writes_on_both_sides_end_in_one_value_everywhere(tmp_path: Path, ledger_url: str) -> None:
    """Both systems edit the note while the writes between them are queued: the Salesforce user first,
    the Zoho user a minute later. When the queued writes go out, neither may carry its older merge
    over the newer one (a write that overtakes a later merge is a lost update): both systems end with
    the most recent note, and the ledger agrees."""
    async with _pair(tmp_path, ledger_url) as (world, cid, zid, sid):
        async with open_runtime(world.config) as rt:
            engine = Engine(world.config, rt.ledger, rt.connectors, holder="run:test")
            await _claim(world, cid, "replica-2")  # the writes stay queued for now
            await world.edit("sf", sid, {"Comments": "From the call centre"})
            await engine.process_page("sf", await _read(engine, "sf", sid))
            await world.set_clock("zoho", datetime.now(UTC) + timedelta(minutes=1))
            await world.edit("zoho", zid, {"Additional_Information": NOTE})
            await engine.process_page("zoho", await _read(engine, "zoho", zid))
        await _claim(world, cid, "replica-2", release=True)
        for _ in range(3):
            result = await world.resync_within()
            assert result.exit_code == 0, result.document
        zoho, sf = await world.record("zoho", zid), await world.record("sf", sid)
        assert (zoho["Additional_Information"], sf["Comments"]) == (NOTE, NOTE)
        assert (await _canonical(world, cid)).notes == NOTE


def test_merge_member_is_three_way_with_what_the_member_held_as_ancestor() -> None:
    seen = _appt()
    base = _appt(notes="from the other system")  # the ledger moved on: a write to the member is queued
    moved = datetime(2026, 12, 1, 11, tzinfo=UTC)
    early, late = datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)
    # the member changed only the slot: the slot is taken, the ledger's note stays
    only_slot = merge_member(seen, Side("zoho", _appt(start=moved, end=moved + timedelta(minutes=30)), late),
                             base, early)
    assert (only_slot.merged.start, only_slot.merged.notes) == (moved, "from the other system")
    assert only_slot.changed == ["start", "end"] and not only_slot.conflicts
    # both changed the note: a true conflict, the most recent change wins ...
    mine = Side("zoho", _appt(notes="edited here"), late)
    newer = merge_member(seen, mine, base, early)
    assert newer.merged.notes == "edited here" and newer.conflicts[0].winner == "zoho"
    older = merge_member(seen, Side("zoho", _appt(notes="edited here"), early), base, late)
    assert older.merged.notes == "from the other system" and older.changed == []
    assert older.conflicts[0].winner == LEDGER_SIDE
    # ... unless an owner says otherwise: another member's ownership is the ledger's side
    owned = merge_member(seen, mine, base, early, {"notes": "dentally"})
    assert owned.merged.notes == "from the other system" and owned.conflicts[0].rule == "owner"
    assert merge_member(seen, mine, base, late, {"notes": "zoho"}).merged.notes == "edited here"


async def test_a_re_read_after_a_refused_write_keeps_a_status_the_target_cannot_tell(
        tmp_path: Path, ledger_url: str) -> None:
    """Zoho shows pending and booked alike as "Scheduled". When syncd's write to Zoho finds the record
    changed (a Zoho user moved it) and re-reads it to merge again, that "Scheduled" is no news: the
    appointment stays pending everywhere (it used to come back as booked, and Dentally, say, then
    locked the slot of a Confirmed appointment)."""
    async with _pair(tmp_path, ledger_url) as (world, cid, zid, sid):
        await world.edit("sf", sid, {"Status": "None", "StatusCategory": "None"})
        assert (await world.resync_within()).exit_code == 0
        assert (await _canonical(world, cid)).status is Status.PENDING
        start = await _reschedule_in_zoho(world, zid)  # not read yet: syncd's write will find it changed
        await world.edit("sf", sid, {"Comments": NOTE})
        async with open_runtime(world.config) as rt:
            engine = Engine(world.config, rt.ledger, rt.connectors, holder="run:test")
            await engine.process_page("sf", await _read(engine, "sf", sid))
            assert engine.stats.of("zoho").retried >= 1  # the re-read and re-merge happened
        merged = await _canonical(world, cid)
        assert merged.status is Status.PENDING, "Zoho's 'Scheduled' was taken for a booking"
        assert (merged.notes, merged.start) == (NOTE, start)
        assert (await world.record("sf", sid))["Status"] == "None"
