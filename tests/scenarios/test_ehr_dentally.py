"""End-to-end scenarios between Zoho CRM and Dentally, on SQLite and PostgreSQL.

syncd is driven only through ``resync``; vendor data changes only through the sandboxes' control API,
the way another user (or Dentally itself) would change it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.harness import World, pair_world, synced_pair, zoho_time

MEMBERS = {"zoho": "zoho_crm", "dent": "dentally"}


async def _world(tmp_path: Path, ledger_url: str, n: int = 4, **kw: Any) -> World:
    return await pair_world(tmp_path, ledger_url, MEMBERS, source="zoho", n=n, **kw)


@pytest.fixture
async def synced(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Zoho holds 4 appointments, Dentally none; a first resync has created them in Dentally."""
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho") as world:
        yield world


async def _dent_of(world: World, index: int) -> tuple[str, str, dict[str, Any]]:
    """(canonical id, Dentally id, Dentally record) of the ``index``-th seeded appointment."""
    cid = world.dataset.appointments[index].key
    dent_id = await world.link(cid, "dent")
    return cid, dent_id, await world.record("dent", dent_id)


def _dent_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_new_crm_appointment_is_created_in_dentally_with_its_reference(synced: World):
    for appt in synced.dataset.appointments:
        dent = await synced.record("dent", await synced.link(appt.key, "dent"))
        assert dent["metadata"]["syncd_id"] == appt.key
        assert dent["patient_id"] == int(synced.external("dent", "patient", appt.patient))
        assert dent["practitioner_id"] == int(synced.external("dent", "practitioner", appt.practitioner))
        assert _dent_time(dent["start_time"]) == appt.start
        assert dent["state"] == "Confirmed"  # Zoho "Scheduled" is canonical booked
    before = await synced.write_requests("dent")
    again = await synced.resync_within()
    assert again.exit_code == 0
    assert again.document["connectors"]["dent"]["created"] == 0
    assert await synced.write_requests("dent") == before


async def test_cancellation_in_dentally_with_a_reason_cancels_in_the_crm(synced: World):
    cid, dent_id, _ = await _dent_of(synced, 1)
    await synced.edit("dent", dent_id, {"state": "Cancelled", "cancellation_reason_id": 2,
                                        "cancellation_reason": "Cancelled by patient"})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["zoho"]["cancelled"] == 1
    zoho = next(r for r in await synced.records("zoho") if r["Syncd_Id"] == cid)
    assert zoho["Status"] == "Cancelled"
    second = await synced.resync_within()
    assert all(c["cancelled"] == c["updated"] == 0 for c in second.document["connectors"].values())


async def test_patient_change_in_crm_is_a_replace_in_dentally(synced: World):
    appt = synced.dataset.appointments[0]
    cid, old_id, old = await _dent_of(synced, 0)
    other = next(p for p in synced.dataset.patients if p.key != appt.patient)
    zid = next(r["id"] for r in await synced.records("zoho") if r["Syncd_Id"] == cid)
    module, contact = synced.external("zoho", "patient", other.key).split(":", 1)
    await synced.edit("zoho", zid, {"Appointment_For": {"module": module, "id": contact}})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    counts = result.document["connectors"]["dent"]
    assert (counts["created"], counts["cancelled"], counts["updated"]) == (1, 1, 0), counts
    new_id = await synced.link(cid, "dent")
    assert new_id != old_id
    new = await synced.record("dent", new_id)
    assert new["patient_id"] == int(synced.external("dent", "patient", other.key))
    assert new["metadata"] == {"syncd_id": cid, "syncd_replaces": old_id}
    assert (new["start_time"], new["practitioner_id"], new["state"]) == (old["start_time"], old["practitioner_id"],
                                                                         old["state"])
    old_now = await synced.record("dent", old_id)
    assert old_now["state"] == "Cancelled"
    assert old_now["cancellation_reason"] == "Booked in error"
    assert f"replaced by appointment {new_id}" in old_now["notes"]
    links = await synced.links(cid, include_retired=True)
    dent_links = {lk.external_id: lk.retired for lk in links if lk.connector == "dent"}
    assert dent_links == {old_id: True, new_id: False}
    assert any(a.action == "replaced" and a.connector == "dent" for a in await synced.audit(cid))
    # the CRM keeps its (live) appointment: the old Dentally record's cancellation is not propagated
    zoho = await synced.record("zoho", zid)
    assert zoho["Status"] == "Scheduled"
    before = await synced.write_requests("dent"), await synced.write_requests("zoho")
    again = await synced.resync_within()
    assert again.exit_code == 0, again.document
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in again.document["connectors"].values())
    assert (await synced.write_requests("dent"), await synced.write_requests("zoho")) == before


async def test_reschedule_onto_a_confirmed_dentally_appointment_is_a_locked_conflict(synced: World):
    """docs/vendors/dentally.md §5/§8: only state and notes can change once Confirmed; still locked after a re-read
    -> an open conflict (docs/vendors/README.md rule 10), never a move back to Pending, and no blind retry."""
    cid, dent_id, dent = await _dent_of(synced, 0)
    assert dent["state"] == "Confirmed"
    zid = next(r["id"] for r in await synced.records("zoho") if r["Syncd_Id"] == cid)
    zoho = await synced.record("zoho", zid)
    start = datetime.fromisoformat(zoho["Appointment_Start_Time"]) + timedelta(hours=1)
    await synced.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                    "Appointment_End_Time": zoho_time(start + timedelta(minutes=zoho["Duration"]))})
    result = await synced.resync_within()
    assert result.exit_code == 1, result.document
    conflicts = [c for c in await synced.conflicts() if c.canonical_id == cid]
    assert any("locked: Confirmed" in c.reason for c in conflicts), [dl.reason for dl in await synced.dead_letters()]
    assert not await synced.dead_letters("dent")
    after = await synced.record("dent", dent_id)
    assert after["state"] == "Confirmed" and after["start_time"] == dent["start_time"]
    writes = await synced.write_requests("dent")
    again = await synced.resync_within()
    assert again.document["connectors"]["dent"]["updated"] == 0
    assert await synced.write_requests("dent") == writes
    assert len([c for c in await synced.conflicts() if c.canonical_id == cid]) == len(conflicts)


async def test_auto_confirm_between_read_and_write_hits_the_lock_and_is_a_conflict(tmp_path: Path, ledger_url: str):
    """The seed thread's case: a Pending appointment is confirmed by SMS between syncd's GET and its PUT."""
    world = await _world(tmp_path, ledger_url, n=4)
    try:
        await world.import_crosswalk()
        assert (await world.resync_within()).exit_code == 0
        cid = world.dataset.appointments[0].key
        dent_id = await world.link(cid, "dent")
        await world.edit("dent", dent_id, {"state": "Pending"})
        assert (await world.resync_within()).exit_code == 0
        zid = next(r["id"] for r in await world.records("zoho") if r["Syncd_Id"] == cid)
        zoho = await world.record("zoho", zid)
        start = datetime.fromisoformat(zoho["Appointment_Start_Time"]) + timedelta(hours=3)
        await world.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                       "Appointment_End_Time": zoho_time(start + timedelta(minutes=zoho["Duration"]))})
        await world.fault("dent", "PUT", f"/v1/appointments/{dent_id}", {"type": "auto_confirm"})
        result = await world.resync_within()
        assert result.exit_code == 1, result.document
        dent = await world.record("dent", dent_id)
        assert dent["state"] == "Confirmed"  # never moved back to Pending to unlock it
        conflicts = [c for c in await world.conflicts() if c.canonical_id == cid]
        assert any("locked: Confirmed" in c.reason for c in conflicts), [dl.reason for dl in await world.dead_letters()]
    finally:
        await world.stop()


async def test_zoho_completed_only_after_the_end_time(synced: World):
    """Zoho part 6: Completed before Appointment_End_Time would be refused (DEPENDENT_MISMATCH), so syncd
    defers it: the write stays queued in the outbox (no dead letter, nothing sent), exit 0."""
    cid, dent_id, _ = await _dent_of(synced, 2)
    await synced.edit("dent", dent_id, {"state": "Completed"})
    first = await synced.resync_within()
    assert first.exit_code == 0, first.document
    zid = next(r["id"] for r in await synced.records("zoho") if r["Syncd_Id"] == cid)
    assert (await synced.record("zoho", zid))["Status"] != "Completed"
    assert not await synced.dead_letters("zoho")
    ledger = await synced.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            queued = [o for o in await tx.outbox_pending(connector="zoho") if o.canonical_id == cid]
    finally:
        await ledger.close()
    assert queued and all((o.last_error or "").startswith("deferred until") for o in queued)
    writes = await synced.write_requests("zoho")
    await synced.resync_within()
    assert await synced.write_requests("zoho") == writes  # still too early: nothing sent


async def test_completed_in_crm_onto_a_confirmed_dentally_appointment_is_a_refused_transition(synced: World):
    """Dentally 5: Confirmed -> Completed is not an API transition; the 422 is a dead letter with Dentally's
    params, and the refused write is not sent again by the next pass."""
    cid, dent_id, _ = await _dent_of(synced, 3)
    zid = next(r["id"] for r in await synced.records("zoho") if r["Syncd_Id"] == cid)
    await synced.edit("zoho", zid, {"Status": "Completed"})
    result = await synced.resync_within()
    assert result.exit_code == 1, result.document
    [letter] = await synced.dead_letters("dent")
    assert letter.kind == "rejected" and letter.canonical_id == cid
    assert "can not transition from Confirmed to Completed" in letter.reason
    assert (await synced.record("dent", dent_id))["state"] == "Confirmed"
    writes = await synced.write_requests("dent")
    again = await synced.resync_within()
    assert again.document["connectors"]["dent"]["updated"] == 0
    assert await synced.write_requests("dent") == writes
    assert len(await synced.dead_letters("dent")) == 1


async def test_one_record_the_vendor_always_fails_on_holds_up_no_other_and_becomes_a_dead_letter(synced: World):
    """A write that fails with a 5xx every time (the vendor chokes on this one record) stays queued and
    is retried, while the other records' writes go through in the same pass; after 5 attempts it is
    dead-lettered as write_failed (retriable). An outage (every write failing) still stops the target."""
    zoho = {r["Syncd_Id"]: r["id"] for r in await synced.records("zoho")}
    appts = [a.key for a in synced.dataset.appointments]
    poisoned = await synced.link(appts[0], "dent")
    await synced.fault("dent", "PUT", f"/v1/appointments/{poisoned}", {"type": "status", "status": 503}, times=1000)
    for cid in appts:
        await synced.edit("zoho", zoho[cid], {"Status": "Cancelled", "Cancellation_Reason": "By Customer"})
    first = await synced.resync_within(60)
    assert first.exit_code == 3, first.document  # a write failed after retries and stays queued
    assert first.document["requeued"] == {"dent": 1}
    assert first.document["connectors"]["dent"]["cancelled"] == 3
    for cid in appts[1:]:
        assert (await synced.record("dent", await synced.link(cid, "dent")))["state"] == "Cancelled"
    assert not await synced.dead_letters("dent")
    for _ in range(3):
        again = await synced.resync_within(60)
        assert again.exit_code == 3 and again.document["requeued"] == {"dent": 1}
    # the fifth attempt: the others went through lately, so this record is the vendor's problem, not an outage
    last = await synced.resync_within(60)
    [letter] = await synced.dead_letters("dent")
    assert (letter.kind, letter.canonical_id, letter.retriable) == ("write_failed", appts[0], True)
    assert last.exit_code == 1, last.document
    assert "requeued" not in last.document
    assert (await synced.record("dent", poisoned))["state"] != "Cancelled"
    await synced.control("dent", "DELETE", "/_sandbox/faults")
    quiet = await synced.resync_within(60)
    assert quiet.exit_code == 1 and quiet.document["connectors"]["dent"]["cancelled"] == 0  # nothing re-sent


async def test_an_outage_of_every_write_stops_the_target_after_three_failures(synced: World):
    zoho = {r["Syncd_Id"]: r["id"] for r in await synced.records("zoho")}
    await synced.fault("dent", "PUT", "/v1/appointments/*", {"type": "status", "status": 503}, times=1000)
    for cid in zoho:
        await synced.edit("zoho", zoho[cid], {"Status": "Cancelled", "Cancellation_Reason": "By Customer"})
    result = await synced.resync_within(60)
    assert result.exit_code == 3 and "dent" in result.document["stopped"], result.document
    assert result.document["requeued"] == {"dent": 4}
    assert not await synced.dead_letters("dent")


async def test_a_queued_write_another_process_finished_meanwhile_is_not_sent_again(synced: World):
    """Replicas (or a pass and the daemon) may read the same queued write; whoever claims it second finds
    it done in the ledger and sends nothing. The same write still queued is sent."""
    from syncd.engine.core import Engine
    from syncd.ledger.models import OutboxItem
    from syncd.model import Appointment, Status
    from syncd.runtime import open_runtime

    cids = [a.key for a in synced.dataset.appointments[:2]]
    ledger = await synced.ledger()
    try:
        async with ledger.transaction() as tx:
            rows = await tx.appointments(cids)
            items = []
            for cid in cids:
                snapshot = rows[cid].snapshot
                assert snapshot is not None
                base = Appointment.from_json(snapshot)
                cancelled = base.with_changes(status=Status.CANCELLED)
                items.append(OutboxItem(idempotency_key=f"test:{cid}", canonical_id=cid, connector="dent", op="cancel",
                                        payload={"base": base.to_json(), "merged": cancelled.to_json(),
                                                 "changed": ["status"], "source": "zoho", "attempt": 0}))
                rows[cid].snapshot, rows[cid].fingerprint = cancelled.to_json(), cancelled.fingerprint()
            await tx.save_appointments(list(rows.values()))  # the merge the queued writes carry
            await tx.outbox_add(items)
            queued = await tx.outbox_by_keys([i.idempotency_key for i in items])
        async with ledger.transaction() as tx:  # another process finished the first one meanwhile
            await tx.outbox_update([queued[0].id or 0], state="done")
    finally:
        await ledger.close()
    before = await synced.write_requests("dent")
    async with open_runtime(synced.config) as rt:
        await Engine(synced.config, rt.ledger, rt.connectors, holder="run:test").execute(queued)
    done_elsewhere, still_queued = [await synced.record("dent", await synced.link(cid, "dent")) for cid in cids]
    assert done_elsewhere["state"] != "Cancelled"  # not sent: it was done already
    assert still_queued["state"] == "Cancelled"
    assert await synced.write_requests("dent") == before + 1
