"""End-to-end scenarios between Zoho CRM and Salesforce Health Cloud, on SQLite and PostgreSQL.

Each test drives syncd only through ``resync`` (the public pass) and changes vendor data only through
the sandboxes, the way another user would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.crosswalk import import_rows, parse_csv
from syncd.ledger.store import Ledger
from syncd.repairs import retry_dead_letters
from tests.scenarios.harness import World, pair_world, synced_pair, zoho_time

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}


async def _world(tmp_path: Path, ledger_url: str, **kw) -> World:
    return await pair_world(tmp_path, ledger_url, MEMBERS, source="zoho", n=kw.pop("n", 4), **kw)


@pytest.fixture
async def synced(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Zoho holds 4 appointments, Salesforce none; a first resync has created them in Salesforce."""
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho") as world:
        yield world


async def test_echo_suppression_second_resync_only_reads(synced: World):
    before = {name: await synced.write_requests(name) for name in MEMBERS}
    again = await synced.resync()
    assert again.exit_code == 0
    for name, counts in again.document["connectors"].items():
        assert counts["created"] == counts["updated"] == counts["cancelled"] == 0, (name, counts)
        assert counts["read"] == 4 and counts["unchanged"] == 4
    assert {name: await synced.write_requests(name) for name in MEMBERS} == before


async def test_reschedule_in_crm_reaches_the_other_system(synced: World):
    zid = (await synced.records("zoho"))[0]["id"]
    rec = await synced.record("zoho", zid)
    start = datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=1)
    await synced.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                    "Appointment_End_Time": zoho_time(start + timedelta(minutes=rec["Duration"]))})
    result = await synced.resync()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["sf"]["updated"] == 1
    sf_id = await synced.link(rec["Syncd_Id"], "sf")
    sf = await synced.record("sf", sf_id)
    assert datetime.fromisoformat(sf["SchedStartTime"].replace("+0000", "+00:00")) == start.astimezone(UTC)


async def test_cancellation_in_one_system_cancels_in_the_other(synced: World):
    zid = (await synced.records("zoho"))[1]["id"]
    cid = (await synced.record("zoho", zid))["Syncd_Id"]
    sf_id = await synced.link(cid, "sf")
    await synced.edit("sf", sf_id, {"Status": "Canceled", "CancellationReason": "Patient request"})
    result = await synced.resync()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["zoho"]["cancelled"] == 1
    assert (await synced.record("zoho", zid))["Status"] == "Cancelled"


async def test_terminal_status_is_not_reverted_by_a_lagging_system(synced: World):
    zid = (await synced.records("zoho"))[2]["id"]
    cid = (await synced.record("zoho", zid))["Syncd_Id"]
    sf_id = await synced.link(cid, "sf")
    await synced.edit("sf", sf_id, {"Status": "Canceled", "CancellationReason": "Patient request"})
    assert (await synced.resync()).exit_code == 0
    # the CRM user edits the (already cancelled) record's notes from a stale screen: status stays cancelled
    await synced.edit("sf", sf_id, {"Status": "Scheduled"})
    result = await synced.resync()
    assert (await synced.record("zoho", zid))["Status"] == "Cancelled"
    assert result.exit_code in (0, 1)


async def test_get_put_race_is_resolved_by_reread_without_clobbering(synced: World):
    zid = (await synced.records("zoho"))[0]["id"]
    rec = await synced.record("zoho", zid)
    cid = rec["Syncd_Id"]
    sf_id = await synced.link(cid, "sf")
    start = datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=2)
    await synced.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                    "Appointment_End_Time": zoho_time(start + timedelta(minutes=rec["Duration"]))})
    # another Salesforce user edits the comment just before our write lands
    await synced.fault("sf", "PUT", "/services/data/*/connect/health/appointment-management/appointment/*",
                       {"type": "mutate_before", "changes": {"Comments": "Changed by reception"}})
    await synced.fault("sf", "GET", "/services/data/*/composite/sobjects/ServiceAppointment",
                       {"type": "mutate_before", "id": sf_id, "changes": {"Comments": "Changed by reception"}})
    result = await synced.resync()
    assert result.exit_code == 0, result.document
    sf = await synced.record("sf", sf_id)
    assert sf["Comments"] == "Changed by reception"  # their change kept
    assert datetime.fromisoformat(sf["SchedStartTime"].replace("+0000", "+00:00")) == start.astimezone(UTC)
    # and it reached the CRM too
    assert (await synced.record("zoho", zid))["Additional_Information"] == "Changed by reception"


async def test_lost_create_response_is_not_duplicated(tmp_path: Path, ledger_url: str):
    world = await _world(tmp_path, ledger_url, n=2)
    try:
        await world.import_crosswalk()
        await world.fault("sf", "POST", "/services/data/*/connect/health/appointment-management/appointment",
                          {"type": "drop_after_apply"})
        result = await world.resync()
        assert result.exit_code == 0, result.document
        assert len(await world.records("sf")) == 2
        assert (await world.resync()).document["connectors"]["sf"]["created"] == 0
        assert len(await world.records("sf")) == 2
    finally:
        await world.stop()


async def test_missing_crosswalk_entry_dead_letters_then_import_and_retry_completes(tmp_path: Path, ledger_url: str):
    world = await _world(tmp_path, ledger_url, n=3)
    try:
        appointment = world.dataset.appointments[0]
        affected = [a for a in world.dataset.appointments if a.patient == appointment.patient]
        await world.import_crosswalk(skip=[("sf", "patient", appointment.patient)])
        result = await world.resync()
        assert result.exit_code == 1, result.document
        assert result.document["dead_letters"] == len(affected)
        assert result.document["connectors"]["sf"]["created"] == 3 - len(affected)
        ledger = await Ledger.open(world.config.ledger.url)
        try:
            async with ledger.transaction(readonly=True) as tx:
                letters = await tx.dead_letters()
            assert len(letters) == len(affected)
            for letter in letters:
                assert letter.kind == "missing_reference"
                assert "patient" in letter.reason and appointment.patient in letter.reason and "sf" in letter.reason
            # the operator imports the missing row, then retries
            row = next(r for r in world.crosswalk["sf"] if r[0] == "patient" and r[1] == appointment.patient)
            rows, problems = parse_csv(f"kind,key,connector,external_id\npatient,{row[1]},sf,{row[2]}\n",
                                       world.config.connectors)
            assert not problems
            report = await import_rows(ledger, rows, world.config)
            assert not report.problems
        finally:
            await ledger.close()
        code, results = await retry_dead_letters(world.config, None)
        assert code == 0, results
        assert len(await world.records("sf")) == 3
        final = await world.resync()
        assert final.exit_code == 0 and final.document["dead_letters"] == 0
    finally:
        await world.stop()


async def test_dry_run_changes_nothing_anywhere(tmp_path: Path, ledger_url: str):
    world = await _world(tmp_path, ledger_url, n=3)
    try:
        await world.import_crosswalk()
        before = await world.table_counts()
        result = await world.resync(dry_run=True)
        assert result.document["dry_run"] is True
        assert result.document["connectors"]["sf"]["created"] == 3
        assert await world.write_requests("sf") == 0
        assert await world.write_requests("zoho") == 0
        assert await world.table_counts() == before
        assert len(await world.records("sf")) == 0
    finally:
        await world.stop()


async def test_deletion_in_one_system_cancels_in_the_other(synced: World):
    zid = (await synced.records("zoho"))[3]["id"]
    cid = (await synced.record("zoho", zid))["Syncd_Id"]
    sf_id = await synced.link(cid, "sf")
    await synced.control("sf", "POST", "/_sandbox/records", {"delete": [sf_id]})
    result = await synced.resync()
    assert result.document["connectors"]["zoho"]["cancelled"] == 1, result.document
    assert (await synced.record("zoho", zid))["Status"] == "Cancelled"


async def test_concurrent_edits_settled_by_owners(tmp_path: Path, ledger_url: str):
    world = await _world(tmp_path, ledger_url, n=1, owners={"notes": "zoho"})
    try:
        await world.import_crosswalk()
        assert (await world.resync()).exit_code == 0
        zid = (await world.records("zoho"))[0]["id"]
        cid = (await world.record("zoho", zid))["Syncd_Id"]
        sf_id = await world.link(cid, "sf")
        await world.edit("sf", sf_id, {"Comments": "from salesforce"})
        await world.edit("zoho", zid, {"Additional_Information": "from zoho"})
        await world.resync()
        await world.resync()
        assert (await world.record("sf", sf_id))["Comments"] == "from zoho"
        assert (await world.record("zoho", zid))["Additional_Information"] == "from zoho"
    finally:
        await world.stop()
