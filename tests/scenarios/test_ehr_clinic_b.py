"""End-to-end scenarios for the ``clinic-b`` shape (members onlive, saludya), on SQLite and PostgreSQL.

syncd is driven only through ``resync``; vendor data changes only through the sandboxes' control API.
SaludYa's ``send_notification`` must never be true for a sync write: the sandbox counts the
notifications each record's writes caused (``_notifications``), and every test checks they stay 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.scenarios.harness import World, pair_world, synced_pair

MEMBERS = {"onlive": "onlive", "saludya": "saludya"}
BOGOTA = ZoneInfo("America/Bogota")


async def _world(tmp_path: Path, ledger_url: str, n: int = 4, **kw: Any) -> World:
    return await pair_world(tmp_path, ledger_url, MEMBERS, source="onlive", n=n, **kw)


@pytest.fixture
async def synced(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Onlive holds 4 appointments, SaludYa none; a first resync has created them in SaludYa."""
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="onlive") as world:
        yield world


async def _no_saludya_notifications(world: World) -> None:
    counts = {r["id"]: r.get("_notifications") for r in await world.records("saludya")}
    assert all(c == 0 for c in counts.values()), counts


async def _pair(world: World, index: int) -> tuple[str, str, str]:
    """(canonical id, Onlive id, SaludYa id) of the ``index``-th seeded appointment."""
    cid = world.dataset.appointments[index].key
    return cid, await world.link(cid, "onlive"), await world.link(cid, "saludya")


def _onlive_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _no_new_writes_on_resync(world: World) -> None:
    before = {name: await world.write_requests(name) for name in MEMBERS}
    again = await world.resync_within()
    counts = again.document["connectors"]
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in counts.values()), counts
    assert {name: await world.write_requests(name) for name in MEMBERS} == before


async def test_onlive_appointments_are_created_in_saludya_silently(synced: World):
    for appt in synced.dataset.appointments:
        sy = await synced.record("saludya", await synced.link(appt.key, "saludya"))
        assert sy["notes"].endswith(f"[syncd:{appt.key}]")
        assert sy["patient_id"] == synced.external("saludya", "patient", appt.patient)
        assert sy["doctor_id"] == synced.external("saludya", "practitioner", appt.practitioner)
        local = appt.start.astimezone(BOGOTA)
        assert (sy["date"], sy["time"]) == (local.strftime("%Y-%m-%d"), local.strftime("%H:%M"))
        assert sy["status"] == ("confirmed" if appt.status == "booked" else "scheduled")
    await _no_saludya_notifications(synced)
    await _no_new_writes_on_resync(synced)


async def test_new_saludya_appointment_is_created_in_onlive(synced: World):
    appt = synced.dataset.appointments[0]
    service = next(s for s in synced.dataset.services if s.minutes == 30)
    start = (appt.start + timedelta(days=14)).replace(hour=15, minute=0)
    local = start.astimezone(BOGOTA)
    new = {"id": "apt_newfromsy01", "patient_id": synced.external("saludya", "patient", appt.patient),
           "doctor_id": synced.external("saludya", "practitioner", appt.practitioner), "specialty": service.name,
           "date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M"), "duration_minutes": 30,
           "status": "confirmed", "reason": "Control", "notes": "Bring the previous report"}
    await synced.control("saludya", "POST", "/_sandbox/records", {"records": [new]})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["onlive"]["created"] == 1
    created = [r for r in await synced.records("onlive")
               if r["externalId"] not in {a.key for a in synced.dataset.appointments}]
    assert len(created) == 1
    rec = created[0]
    assert _onlive_time(rec["startAt"]) == start and _onlive_time(rec["endAt"]) == start + timedelta(minutes=30)
    assert rec["calendarIds"] == [synced.external("onlive", "practitioner", appt.practitioner)]
    assert rec["guests"][0]["email"] == synced.external("onlive", "patient", appt.patient)
    assert rec["status"] == "confirmed" and rec["comment"] == "Bring the previous report"
    # the canonical id of the SaludYa appointment is Onlive's externalId, and both are linked to it
    assert await synced.link(rec["externalId"], "saludya") == "apt_newfromsy01"
    await _no_saludya_notifications(synced)
    await _no_new_writes_on_resync(synced)


async def test_cancellation_in_onlive_cancels_in_saludya_with_the_reason(synced: World):
    _cid, onlive_id, sy_id = await _pair(synced, 1)
    await synced.edit("onlive", onlive_id, {"status": "cancelled", "subStatus": "external-request",
                                            "cancellationReason": "Patient called to cancel"})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["saludya"]["cancelled"] == 1
    sy = await synced.record("saludya", sy_id)
    assert sy["status"] == "cancelled" and sy["cancellation_reason"] == "Patient called to cancel"
    await _no_saludya_notifications(synced)
    await _no_new_writes_on_resync(synced)


async def test_cancellation_in_saludya_cancels_in_onlive_through_the_cancel_route(synced: World):
    _cid, onlive_id, sy_id = await _pair(synced, 2)
    await synced.edit("saludya", sy_id, {"status": "cancelled", "cancellation_reason": "Doctor on leave"})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["onlive"]["cancelled"] == 1
    onlive = await synced.record("onlive", onlive_id)
    assert onlive["status"] == "cancelled" and onlive["cancellationReason"] == "Doctor on leave"
    assert (await synced.write_counts("onlive")).get("POST /api/v2/appointments/{id}/cancel") == 1
    await _no_new_writes_on_resync(synced)


async def test_practitioner_change_is_a_replace_in_onlive(synced: World):
    appt = synced.dataset.appointments[0]
    cid, old_id, sy_id = await _pair(synced, 0)
    other = next(p for p in synced.dataset.practitioners if p.key != appt.practitioner)
    # the patient is handed to a colleague who is free later that day (at the old time they are busy)
    new_start = appt.start + timedelta(hours=5)
    local = new_start.astimezone(BOGOTA)
    await synced.edit("saludya", sy_id, {"doctor_id": synced.external("saludya", "practitioner", other.key),
                                         "date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M")})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    counts = result.document["connectors"]["onlive"]
    assert (counts["created"], counts["cancelled"]) == (1, 1), counts
    new_id = await synced.link(cid, "onlive")
    assert new_id != old_id
    new = await synced.record("onlive", new_id)
    assert new["calendarIds"] == [synced.external("onlive", "practitioner", other.key)]
    assert _onlive_time(new["startAt"]) == new_start
    assert new["externalId"] == cid and new["extraFields"].get("syncdReplaces") == old_id
    old = await synced.record("onlive", old_id)
    assert old["status"] == "cancelled" and old["subStatus"] == "rescheduled"
    links = {lk.external_id: lk.retired for lk in await synced.links(cid, include_retired=True)
             if lk.connector == "onlive"}
    assert links == {old_id: True, new_id: False}
    assert any(a.action == "replaced" for a in await synced.audit(cid))
    await _no_new_writes_on_resync(synced)


async def test_patient_change_is_a_cancel_first_replace_in_saludya(synced: World):
    appt = synced.dataset.appointments[0]
    cid, onlive_id, old_id = await _pair(synced, 0)
    other = next(p for p in synced.dataset.patients if p.key != appt.patient)
    onlive = await synced.record("onlive", onlive_id)
    guests = [{"email": synced.external("onlive", "patient", other.key)}, *onlive["guests"][1:]]
    await synced.edit("onlive", onlive_id, {"guests": guests})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    counts = result.document["connectors"]["saludya"]
    assert (counts["created"], counts["cancelled"]) == (1, 1), counts
    new_id = await synced.link(cid, "saludya")
    assert new_id != old_id
    new = await synced.record("saludya", new_id)
    old = await synced.record("saludya", old_id)
    assert new["patient_id"] == synced.external("saludya", "patient", other.key)
    assert (new["date"], new["time"], new["doctor_id"]) == (old["date"], old["time"], old["doctor_id"])
    assert new["notes"].endswith(f"[syncd:{cid}]")
    assert old["status"] == "cancelled" and f"[syncd-replaced:{cid}]" in old["notes"]
    # cancel first (docs/vendors/saludya.md §4): the copy holds the same doctor and slot, which SaludYa refuses (409)
    # while the old appointment is still active, so the old one was cancelled before the copy was created
    assert any(a.action == "replaced" for a in await synced.audit(cid))
    await _no_saludya_notifications(synced)
    await _no_new_writes_on_resync(synced)


async def test_doctor_change_in_onlive_is_a_create_first_replace_in_saludya(synced: World):
    """docs/vendors/saludya.md §4, doctor changed: POST the copy for the new doctor first, then cancel the old one with
    "Replaced via sync (syncd)" and its marker turned into [syncd-replaced:X]."""
    appt = synced.dataset.appointments[0]
    cid, onlive_id, old_id = await _pair(synced, 0)
    other = next(p for p in synced.dataset.practitioners if p.key != appt.practitioner)
    new_start = appt.start + timedelta(hours=5)
    await synced.edit("onlive", onlive_id, {
        "calendarIds": [synced.external("onlive", "practitioner", other.key)],
        "startAt": new_start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "endAt": (new_start + (appt.end - appt.start)).strftime("%Y-%m-%dT%H:%M:%S.000Z")})
    result = await synced.resync_within()
    assert result.exit_code == 0, (result.document, [dl.reason for dl in await synced.dead_letters()])
    counts = result.document["connectors"]["saludya"]
    assert (counts["created"], counts["cancelled"]) == (1, 1), counts
    new_id = await synced.link(cid, "saludya")
    new, old = await synced.record("saludya", new_id), await synced.record("saludya", old_id)
    assert new["doctor_id"] == synced.external("saludya", "practitioner", other.key)
    assert new["notes"].endswith(f"[syncd:{cid}]")
    assert old["status"] == "cancelled" and old["cancellation_reason"] == "Replaced via sync (syncd)"
    assert f"[syncd-replaced:{cid}]" in old["notes"]
    await _no_saludya_notifications(synced)
    await _no_new_writes_on_resync(synced)


async def test_saludya_doctor_busy_is_a_dead_letter_and_the_others_still_sync(tmp_path: Path, ledger_url: str):
    world = await _world(tmp_path, ledger_url)
    try:
        await world.import_crosswalk()
        await world.fault("saludya", "POST", "/api/appointments",
                          {"type": "doctor_busy", "suggested_times": ["10:30", "11:00"]})
        result = await world.resync_within()
        assert result.exit_code == 1, result.document
        counts = result.document["connectors"]["saludya"]
        assert counts["created"] == 3 and counts["dead_lettered"] == 1, counts
        [letter] = await world.dead_letters("saludya")
        assert "APPOINTMENT_CONFLICT" in letter.reason and "Doctor is not available" in letter.reason
        assert "10:30" in str(letter.reason) + str(letter.payload)
        assert len(await world.records("saludya")) == 3
        writes = await world.write_requests("saludya")
        again = await world.resync_within()
        assert again.document["connectors"]["saludya"]["created"] == 0  # never retried blindly
        assert await world.write_requests("saludya") == writes
        await _no_saludya_notifications(world)
    finally:
        await world.stop()


async def test_completed_in_onlive_is_never_written_to_saludya(synced: World):
    """SaludYa: completing needs a diagnosis only the doctor gives; syncd writes nothing for it and records
    nothing (docs/vendors/README.md rule 15)."""
    _cid, onlive_id, sy_id = await _pair(synced, 3)
    before = await synced.record("saludya", sy_id)
    await synced.edit("onlive", onlive_id, {"status": "completed"})
    result = await synced.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["dead_letters"] == 0 and result.document["open_conflicts"] == 0
    after = await synced.record("saludya", sy_id)
    assert after["status"] == before["status"] and after["updated_at"] == before["updated_at"]
    assert after["diagnosis"] is None
    await _no_new_writes_on_resync(synced)
    await _no_saludya_notifications(synced)


async def test_onlive_refuses_edits_in_the_past_once(synced: World):
    """Onlive: past appointments cannot be modified (422 APPOINTMENT_IN_PAST): a dead letter with the vendor's
    reason, not retried by the next pass."""
    appt = synced.dataset.appointments[0]
    _cid, onlive_id, sy_id = await _pair(synced, 0)
    await synced.set_clock("onlive", appt.end + timedelta(minutes=5))
    await synced.edit("saludya", sy_id, {"reason": "Moved to video by the clinic"})
    result = await synced.resync_within()
    assert result.exit_code == 1, result.document
    letters = await synced.dead_letters("onlive")
    assert len(letters) == 1 and "APPOINTMENT_IN_PAST" in letters[0].reason, [dl.reason for dl in letters]
    assert (await synced.record("onlive", onlive_id))["description"] != "Moved to video by the clinic"
    writes = await synced.write_requests("onlive")
    again = await synced.resync_within()
    assert again.document["connectors"]["onlive"]["updated"] == 0
    assert await synced.write_requests("onlive") == writes
