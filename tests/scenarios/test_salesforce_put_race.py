"""The Salesforce Connect PUT race window (docs/vendors/salesforce_health.md §8), over the sandboxes and a
real ledger (SQLite and PostgreSQL).

The Connect PUT has no version input and ignores If-Unmodified-Since, so a window stays open between
syncd's pre-write GET and its PUT. A Zoho reschedule is carried to Salesforce by that PUT while another
Salesforce user changes the appointment inside the window (a ``mutate_before`` fault on the Connect PUT):
their change is not lost (it reaches Zoho on the next read) and nothing is overwritten blindly (the PUT
carries what the pre-write GET showed, never older values from the ledger; a record that went terminal
in the window refuses the PUT, and the refusal is recorded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.harness import World, make_world, parse_sf_time, zoho_time

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
CONNECT_PUT = "/services/data/*/connect/health/appointment-management/appointment/*"
PRE_WRITE_GET = "/services/data/*/composite/sobjects/ServiceAppointment"


@dataclass
class Pair:
    world: World
    zoho_id: str
    sf_id: str
    new_start: datetime


@pytest.fixture
async def pair(tmp_path: Path, ledger_url: str) -> AsyncIterator[Pair]:
    """Two synced appointments; then the first is moved two hours later in Zoho (a change that only the
    Connect PUT can carry to Salesforce)."""
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=2)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        assert (await world.resync_within(20)).exit_code == 0
        zoho_id = str((await world.records("zoho"))[0]["id"])
        rec = await world.record("zoho", zoho_id)
        sf_id = await world.link(str(rec["Syncd_Id"]), "sf")
        start = datetime.fromisoformat(str(rec["Appointment_Start_Time"])) + timedelta(hours=2)
        end = start + timedelta(minutes=rec["Duration"])
        await world.edit("zoho", zoho_id, {"Appointment_Start_Time": zoho_time(start),
                                           "Appointment_End_Time": zoho_time(end)})
        yield Pair(world, zoho_id, sf_id, start.astimezone(UTC))
    finally:
        await world.stop()


async def _put_count(world: World) -> int:
    return sum(n for route, n in (await world.write_counts("sf")).items()
               if route.startswith("PUT ") and "/connect/health/appointment-management/appointment/" in route)


async def test_a_change_in_the_window_survives_the_put_and_reaches_the_other_system(pair: Pair) -> None:
    """Reception adds a description between syncd's GET and its PUT: Salesforce keeps it beside our new
    time, the read-back after the PUT is not taken for syncd's own echo, and Zoho gets the description."""
    world = pair.world
    theirs = "Bring the referral letter"
    await world.fault("sf", "PUT", CONNECT_PUT, {"type": "mutate_before", "changes": {"Description": theirs}})
    first = await world.resync_within(20)
    assert first.exit_code == 0, first.document
    assert await _put_count(world) == 1  # the reschedule went by the Connect PUT, into the window
    sf = await world.record("sf", pair.sf_id)
    assert parse_sf_time(sf["SchedStartTime"]) == pair.new_start  # ours landed
    assert sf["Description"] == theirs  # theirs was not overwritten
    second = await world.resync_within(20)
    assert second.exit_code == 0, second.document
    zoho = await world.record("zoho", pair.zoho_id)
    assert zoho["Appointment_Name"] == theirs  # their change reached the other member
    assert (await world.record("sf", pair.sf_id))["Description"] == theirs
    quiet = await world.resync_within(20)
    assert all(c["updated"] == c["created"] == c["cancelled"] == 0 for c in quiet.document["connectors"].values())


async def test_a_cancellation_in_the_window_is_not_overwritten(pair: Pair) -> None:
    """Reception cancels the appointment between the GET and the PUT: Salesforce refuses the PUT on the
    Canceled record (INVALID_STATE), syncd re-reads and merges, the cancellation reaches Zoho, Salesforce
    stays Canceled at its own time, and the start change it could not take is on record, not dropped."""
    world = pair.world
    cancel: dict[str, Any] = {"Status": "Canceled", "CancellationReason": "Patient called"}
    await world.fault("sf", "PUT", CONNECT_PUT, {"type": "mutate_before", "changes": cancel})
    sf_before = await world.record("sf", pair.sf_id)
    result = await world.resync_within(20)
    sf = await world.record("sf", pair.sf_id)
    assert sf["StatusCategory"] == "Canceled" and sf["CancellationReason"] == "Patient called"
    assert sf["SchedStartTime"] == sf_before["SchedStartTime"]  # the refused PUT changed nothing
    assert result.document["connectors"]["sf"]["retried"] >= 1  # re-read and re-merged after the refusal
    zoho = await world.record("zoho", pair.zoho_id)
    assert zoho["Status"] == "Cancelled"  # their cancellation reached the other member
    letters = await world.dead_letters("sf")
    assert result.exit_code == 1 and [dl.external_id for dl in letters] == [pair.sf_id]
    assert "INVALID_STATE" in letters[0].reason  # the change Salesforce could not take is not lost silently


async def test_the_put_carries_what_the_pre_write_read_shows_never_older_values(pair: Pair) -> None:
    """Reception edits the comment after syncd's last pass, just before its pre-write GET: the GET shows a
    newer version, syncd merges again, and the PUT carries their comment with our time (nothing reverted)."""
    world = pair.world
    theirs = "Changed by reception"
    await world.fault("sf", "GET", PRE_WRITE_GET, {"type": "mutate_before", "id": pair.sf_id,
                                                   "changes": {"Comments": theirs}})
    result = await world.resync_within(20)
    assert result.exit_code == 0, result.document
    sf = await world.record("sf", pair.sf_id)
    assert sf["Comments"] == theirs and parse_sf_time(sf["SchedStartTime"]) == pair.new_start
    assert (await world.resync_within(20)).exit_code == 0
    assert (await world.record("zoho", pair.zoho_id))["Additional_Information"] == theirs
