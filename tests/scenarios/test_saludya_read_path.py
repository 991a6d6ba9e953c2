"""SaludYa between two CRMs: what SaludYa does not store (location) and what it stores but syncd may not
write (the specialty, read as ``service_type``), on SQLite and PostgreSQL.

The group is Zoho CRM, SaludYa and Salesforce Health Cloud; SaludYa's ``default_location`` names the one
location its appointments take place at (docs/reference.md §2), since Salesforce requires a Facility.
syncd is driven only through ``resync`` and ``deadletters retry``; vendor data changes only through the
sandboxes' control API, and what syncd sent is checked in the sandboxes' request logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.config import load_config
from syncd.repairs import retry_dead_letters
from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "saludya": "saludya", "sf": "salesforce_health"}
BOGOTA = ZoneInfo("America/Bogota")
N = 3


async def _world(tmp_path: Path, ledger_url: str, members: dict[str, str] = MEMBERS, *, n: int = N,
                 default_location: str | None = "LOC-1") -> World:
    """SaludYa holds ``n`` seeded appointments (linked by the crosswalk), the others reference data only."""
    extra = {"saludya": {"default_location": default_location}} if default_location else None
    world = await make_world(tmp_path, ledger_url, members, n_appointments=n, connector_extra=extra)
    try:
        await world.seed("saludya")
        for name in members:
            if name != "saludya":
                await world.seed(name, appointments=False)
        await world.import_crosswalk(appointments_for=["saludya"])
    except BaseException:
        await world.stop()
        raise
    return world


@pytest.fixture
async def synced(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    world = await _world(tmp_path, ledger_url)
    try:
        first = await world.resync_within(15)
        assert first.exit_code == 0, (first.document, [d.reason for d in await world.dead_letters()])
        yield world
    finally:
        await world.stop()


def _appointments(world: World, name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if world.types[name] == "salesforce_health":
        return [r for r in records if (r.get("attributes") or {}).get("type") == "ServiceAppointment"]
    return records


async def _live(world: World, name: str) -> list[dict[str, Any]]:
    records = _appointments(world, name, await world.records(name))
    return [r for r in records if not r.get("_deleted_at")]


def _specialty(world: World, service_key: str) -> str:
    return world.external("saludya", "service", service_key)


async def _nothing_written_on_resync(world: World) -> None:
    before = {name: await world.write_counts(name) for name in world.types}
    again = await world.resync_within(15)
    assert again.exit_code == 0, again.document
    counts = again.document["connectors"]
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in counts.values()), counts
    assert {name: await world.write_counts(name) for name in world.types} == before


async def _no_conflicts_or_dead_letters(world: World) -> None:
    assert [c.reason for c in await world.conflicts()] == []
    assert [d.reason for d in await world.dead_letters()] == []


async def test_saludya_bookings_reach_both_crms_with_their_service_type(synced: World) -> None:
    """The specialty is read-only in SaludYa but it is SaludYa's value: read through the crosswalk (kind
    service) into the canonical record, so Zoho (which requires a service) and Salesforce (a work type)
    get the mapped one; the default location gives Salesforce its Facility."""
    world = synced
    for appt in world.dataset.appointments:
        zoho = await world.record("zoho", await world.link(appt.key, "zoho"))
        assert zoho["Service_Name"]["id"] == world.external("zoho", "service", appt.service)
        assert zoho["Location"] == world.external("zoho", "location", "LOC-1")
        sf = await world.record("sf", await world.link(appt.key, "sf"))
        assert sf["WorkTypeId"] == world.external("sf", "service", appt.service)
        assert sf["ServiceTerritoryId"] == world.external("sf", "location", "LOC-1")
    assert await world.write_counts("saludya") == {}  # nothing was sent back to SaludYa
    await _no_conflicts_or_dead_letters(world)
    await _nothing_written_on_resync(world)


async def test_a_specialty_change_in_saludya_reaches_both_crms(synced: World) -> None:
    """SaludYa's own users change the specialty: Salesforce gets the new work type in place, Zoho (whose
    service cannot change in place) replaces its appointment; SaludYa itself is sent nothing."""
    world = synced
    appt = world.dataset.appointments[0]
    new_service = next(s for s in world.dataset.services if s.key != appt.service)
    sy_id, old_zoho = await world.link(appt.key, "saludya"), await world.link(appt.key, "zoho")
    await world.edit("saludya", sy_id, {"specialty": _specialty(world, new_service.key)})
    result = await world.resync_within(15)
    assert result.exit_code == 0, (result.document, [d.reason for d in await world.dead_letters()])
    counts = result.document["connectors"]
    assert counts["sf"]["updated"] == 1 and (counts["zoho"]["created"], counts["zoho"]["cancelled"]) == (1, 1)
    sf = await world.record("sf", await world.link(appt.key, "sf"))
    assert sf["WorkTypeId"] == world.external("sf", "service", new_service.key)
    new_zoho = await world.link(appt.key, "zoho")
    assert new_zoho != old_zoho
    assert (await world.record("zoho", new_zoho))["Service_Name"]["id"] == world.external(
        "zoho", "service", new_service.key)
    assert (await world.record("zoho", old_zoho))["Status"] == "Cancelled"
    assert await world.write_counts("saludya") == {}
    await _no_conflicts_or_dead_letters(world)
    await _nothing_written_on_resync(world)


async def test_a_service_change_elsewhere_is_never_written_to_saludya(synced: World) -> None:
    """A new work type in Salesforce reaches Zoho (a replace there), while SaludYa, which only its own
    users may change, gets no request at all: no PUT, no re-read before one, no conflict."""
    world = synced
    appt = world.dataset.appointments[1]
    new_service = next(s for s in world.dataset.services if s.key != appt.service)
    sf_id, sy_id = await world.link(appt.key, "sf"), await world.link(appt.key, "saludya")
    before = await world.record("saludya", sy_id)
    sy_requests = await world.control("saludya", "GET", "/_sandbox/requests")
    await world.edit("sf", sf_id, {"WorkTypeId": world.external("sf", "service", new_service.key)})
    result = await world.resync_within(15)
    assert result.exit_code == 0, (result.document, [d.reason for d in await world.dead_letters()])
    new_zoho = await world.link(appt.key, "zoho")
    assert (await world.record("zoho", new_zoho))["Service_Name"]["id"] == world.external(
        "zoho", "service", new_service.key)
    after = await world.record("saludya", sy_id)
    assert after["specialty"] == before["specialty"] == _specialty(world, appt.service)
    assert after["updated_at"] == before["updated_at"]
    assert await world.write_counts("saludya") == {}
    single = "/api/appointments/{id}"
    got = {r["route"]: r["count"] for r in (await world.control("saludya", "GET", "/_sandbox/requests"))["requests"]
           if r["method"] == "GET"}
    was = {r["route"]: r["count"] for r in sy_requests["requests"] if r["method"] == "GET"}
    assert got.get(single, 0) == was.get(single, 0), "no pre-write re-read of a record syncd will not write"
    assert result.document["connectors"]["saludya"]["conflicts"] == 0
    await _no_conflicts_or_dead_letters(world)
    await _nothing_written_on_resync(world)


async def test_a_crm_booking_created_in_saludya_keeps_saludyas_own_specialty(tmp_path: Path, ledger_url: str) -> None:
    """A Zoho booking is created in SaludYa, which sets the doctor's own specialty (never syncd's service).
    That specialty is SaludYa's value, not a change: nothing flows back to the CRMs, nothing oscillates."""
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=4,
                             connector_extra={"saludya": {"default_location": "LOC-1"}})
    try:
        for name in MEMBERS:
            await world.seed(name, appointments=False)
        await world.import_crosswalk()
        appt = world.dataset.appointments[0]
        doctor = next(d for d in (await world.control("saludya", "GET", "/_sandbox/records"))["doctors"]
                      if d["id"] == world.external("saludya", "practitioner", appt.practitioner))
        other = next(s for s in world.dataset.services if s.name != doctor["specialty"])
        start = (appt.start + timedelta(days=2)).replace(hour=14, minute=0)
        booking = {
            "Appointment_Name": "Check", "Appointment_For": {"module": "Contacts", "id": world.external(
                "zoho", "patient", appt.patient).split(":", 1)[1]},
            "Service_Name": {"id": world.external("zoho", "service", other.key)},
            "Owner": {"id": world.external("zoho", "practitioner", appt.practitioner)},
            "Appointment_Start_Time": start.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "Location": "Business Address", "Status": "Scheduled",
        }
        await world.control("zoho", "POST", "/_sandbox/records", {"records": [booking]})
        first = await world.resync_within(15)
        assert first.exit_code == 0, (first.document, [d.reason for d in await world.dead_letters()])
        assert first.document["connectors"]["saludya"]["created"] == 1
        assert first.document["connectors"]["sf"]["created"] == 1
        [sy] = await _live(world, "saludya")
        assert sy["specialty"] == doctor["specialty"] != other.name
        [sf] = await _live(world, "sf")
        assert sf["WorkTypeId"] == world.external("sf", "service", other.key)
        assert sf["ServiceTerritoryId"] == world.external("sf", "location", "LOC-1")
        await _no_conflicts_or_dead_letters(world)
        await _nothing_written_on_resync(world)
        # a later change SaludYa can hold still flows both ways
        await world.edit("saludya", sy["id"], {"reason": "Control de rutina"})
        moved = await world.resync_within(15)
        assert moved.exit_code == 0, moved.document
        [zoho] = await _live(world, "zoho")
        assert zoho["Appointment_Name"] == "Control de rutina"
        assert zoho["Service_Name"]["id"] == world.external("zoho", "service", other.key)
        await _nothing_written_on_resync(world)
    finally:
        await world.stop()


async def test_salesforce_needs_saludyas_default_location_and_says_how_to_set_it(
    tmp_path: Path, ledger_url: str
) -> None:
    """Without ``default_location`` a SaludYa booking has no location and Salesforce requires a Facility:
    syncd sends nothing and dead-letters each one, naming the missing location and the config key. With
    the key set, ``deadletters retry`` creates every booking with that Facility."""
    members = {"saludya": "saludya", "sf": "salesforce_health"}
    world = await _world(tmp_path, ledger_url, members, n=2, default_location=None)
    try:
        result = await world.resync_within(15)
        assert result.exit_code == 1, result.document
        letters = await world.dead_letters("sf")
        assert len(letters) == 2, [dl.reason for dl in letters]
        for letter in letters:
            assert letter.kind == "missing_field"
            assert "needs location" in letter.reason and "saludya stores no location" in letter.reason
            assert "connectors.saludya.default_location" in letter.reason
            assert "syncd deadletters retry" in letter.reason
        assert await world.write_counts("sf") == {}  # caught before sending anything
        assert not await _live(world, "sf")

        text = world.config_path.read_text(encoding="utf-8")
        text = text.replace("[connectors.saludya]\n", '[connectors.saludya]\ndefault_location = "LOC-1"\n')
        world.config_path.write_text(text, encoding="utf-8")
        world.config = load_config(str(world.config_path))
        code, results = await retry_dead_letters(world.config, None)
        assert code == 0, (results, [dl.reason for dl in await world.dead_letters()])
        assert [r["result"] for r in results] == ["done", "done"]
        facility = world.external("sf", "location", "LOC-1")
        created = await _live(world, "sf")
        assert sorted(r["Syncd_Id__c"] for r in created) == sorted(a.key for a in world.dataset.appointments)
        assert all(r["ServiceTerritoryId"] == facility for r in created)
        assert await world.dead_letters() == []
        await _nothing_written_on_resync(world)
    finally:
        await world.stop()


async def test_a_service_change_on_an_appointment_cancelled_meanwhile_is_kept_out_of_zoho(synced: World) -> None:
    """Salesforce gets a new work type while SaludYa cancels the appointment: one pass carries the
    cancellation everywhere; Zoho, which can change a service only by a replace and replaces nothing for
    an appointment that is over, keeps its service, and nothing is dead-lettered or left to oscillate."""
    world = synced
    appt = world.dataset.appointments[2]
    new_service = next(s for s in world.dataset.services if s.key != appt.service)
    sf_id, sy_id, zoho_id = (await world.link(appt.key, "sf"), await world.link(appt.key, "saludya"),
                             await world.link(appt.key, "zoho"))
    await world.edit("sf", sf_id, {"WorkTypeId": world.external("sf", "service", new_service.key)})
    await world.edit("saludya", sy_id, {"status": "cancelled", "cancellation_reason": "Paciente canceló"})
    result = await world.resync_within(15)
    assert result.exit_code == 0, (result.document, [d.reason for d in await world.dead_letters()],
                                   [c.reason for c in await world.conflicts()])
    zoho = await world.record("zoho", zoho_id)
    assert zoho["Status"] == "Cancelled"
    assert zoho["Service_Name"]["id"] == world.external("zoho", "service", appt.service)
    assert await world.link(appt.key, "zoho") == zoho_id  # no replace for an appointment that is over
    assert (await world.record("sf", sf_id))["StatusCategory"] == "Canceled"
    await _no_conflicts_or_dead_letters(world)
    await _nothing_written_on_resync(world)
