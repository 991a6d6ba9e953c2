"""GET/PUT races on every vendor as a write target, and concurrent edits of one field on two sides.

A race: syncd carries a notes change from the source to the target while another user of the target
moves the appointment by an hour just before syncd's write lands (a ``mutate_before`` fault on the
target's update route). Neither change may be lost: after the passes, both systems hold our notes and
their time. Concurrent edits of the same field are settled by ``owners``, else by the most recent
modified time, and leave an audit entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.scenarios.harness import World, make_world, zoho_time

BOGOTA = ZoneInfo("America/Bogota")


def _ms_z(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _sf_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass(frozen=True)
class VendorView:
    """How a test reads and edits one vendor's appointment fields (raw sandbox shape)."""

    notes: str
    description: str | None
    start: Callable[[dict[str, Any]], datetime]
    end: Callable[[dict[str, Any]], datetime]
    moved: Callable[[dict[str, Any], timedelta], dict[str, Any]]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))


def _saludya_start(rec: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(f"{rec['date']}T{rec['time']}").replace(tzinfo=BOGOTA).astimezone(UTC)


def _saludya_moved(rec: dict[str, Any], by: timedelta) -> dict[str, Any]:
    local = (_saludya_start(rec) + by).astimezone(BOGOTA)
    return {"date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M")}


VIEWS: dict[str, VendorView] = {
    "zoho_crm": VendorView(
        "Additional_Information", None, lambda r: _parse(r["Appointment_Start_Time"]),
        lambda r: _parse(r["Appointment_End_Time"]),
        lambda r, by: {"Appointment_Start_Time": zoho_time(_parse(r["Appointment_Start_Time"]) + by),
                       "Appointment_End_Time": zoho_time(_parse(r["Appointment_End_Time"]) + by)}),
    "salesforce_health": VendorView(
        "Comments", "Description", lambda r: _parse(r["SchedStartTime"]), lambda r: _parse(r["SchedEndTime"]),
        lambda r, by: {"SchedStartTime": _sf_time(_parse(r["SchedStartTime"]) + by),
                       "SchedEndTime": _sf_time(_parse(r["SchedEndTime"]) + by)}),
    "dentally": VendorView(
        "notes", None, lambda r: _parse(r["start_time"]), lambda r: _parse(r["finish_time"]),
        lambda r, by: {"start_time": _ms_z(_parse(r["start_time"]) + by),
                       "finish_time": _ms_z(_parse(r["finish_time"]) + by)}),
    "onlive": VendorView(
        "comment", "description", lambda r: _parse(r["startAt"]), lambda r: _parse(r["endAt"]),
        lambda r, by: {"startAt": _ms_z(_parse(r["startAt"]) + by), "endAt": _ms_z(_parse(r["endAt"]) + by)}),
    "saludya": VendorView(
        "notes", "reason", _saludya_start,
        lambda r: _saludya_start(r) + timedelta(minutes=int(r["duration_minutes"])), _saludya_moved),
}

@dataclass(frozen=True)
class Race:
    partner: str
    partner_type: str
    target_type: str
    method: str
    route: str
    detected: bool = False
    """The vendor itself refuses the stale write (so syncd re-reads and retries)."""
    field: str = "notes"
    """The canonical field of our change: ``notes``, or ``description`` where notes go by a full-body PUT."""


RACES: dict[str, Race] = {
    "zoho": Race("sf", "salesforce_health", "zoho_crm", "PUT", "/crm/v7/Appointments__s"),
    # Salesforce: notes travel in the full-body Connect PUT (no version input: its window is the vendor's);
    # the description goes by the sObject PATCH with If-Unmodified-Since, where Salesforce detects the race
    "sf": Race("onlive", "onlive", "salesforce_health", "PATCH", "/services/data/*/sobjects/ServiceAppointment/*",
               detected=True, field="description"),
    "dent": Race("zoho", "zoho_crm", "dentally", "PUT", "/v1/appointments/*"),
    "onlive": Race("zoho", "zoho_crm", "onlive", "PUT", "/api/v2/appointments/*"),
    "saludya": Race("zoho", "zoho_crm", "saludya", "PUT", "/api/appointments/*"),
}


async def _problems(world: World) -> list[str]:
    """Open dead letters and conflicts, for assertion messages."""
    return [f"dead letter {dl.connector} {dl.kind}: {dl.reason} {dl.payload}" for dl in await world.dead_letters()] + [
        f"conflict {c.field}: {c.reason} {c.values}" for c in await world.conflicts()]


def _text(rec: dict[str, Any], field: str) -> str | None:
    """A text field without syncd's trailing SaludYa marker line (``[syncd:<id>]``)."""
    value = rec.get(field)
    if isinstance(value, str):
        return re.sub(r"\n?\[syncd(-replaced)?:[A-Za-z0-9_-]{1,64}\]$", "", value)
    return value


async def _external_of(world: World, name: str, cid: str) -> str:
    return await world.link(cid, name)


@pytest.mark.parametrize("target", [
    "zoho", "sf", "dent", "onlive", "saludya",
])
async def test_get_put_race_keeps_both_changes(tmp_path: Path, ledger_url: str, target: str):
    race = RACES[target]
    partner, partner_type, target_type, detected = race.partner, race.partner_type, race.target_type, race.detected
    # the CRM that is seeded holds the appointments; the other member gets them created by the first pass
    seeded = "zoho" if "zoho" in (target, partner) else partner
    members = {target: target_type, partner: partner_type}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2)
    try:
        await world.seed(seeded)
        other = target if seeded == partner else partner
        await world.seed(other, appointments=False)
        await world.import_crosswalk()
        first = await world.resync_within()
        assert first.exit_code == 0, first.document
        cid = world.dataset.appointments[0].key
        source = partner
        src_view, tgt_view = VIEWS[partner_type], VIEWS[target_type]
        src_id, tgt_id = await _external_of(world, source, cid), await _external_of(world, target, cid)
        tgt_before = await world.record(target, tgt_id)
        theirs = tgt_view.moved(tgt_before, timedelta(hours=1))
        new_start = tgt_view.start(tgt_before) + timedelta(hours=1)
        ours = "Ring the bell at the side door"
        src_field = src_view.notes if race.field == "notes" else src_view.description
        tgt_field = tgt_view.notes if race.field == "notes" else tgt_view.description
        assert src_field is not None and tgt_field is not None
        await world.edit(source, src_id, {src_field: ours})
        if detected:
            # their edit lands a minute after our re-read (the vendor's version has one-second precision)
            await world.set_clock(target, datetime.now(UTC) + timedelta(minutes=1))
        await world.fault(target, race.method, race.route, {"type": "mutate_before", "id": tgt_id, "changes": theirs})
        result = await world.resync_within()
        assert result.exit_code == 0, (result.document, await _problems(world))
        if detected:
            assert result.document["connectors"][target]["retried"] >= 1, result.document
        tgt = await world.record(target, tgt_id)
        assert _text(tgt, tgt_field) == ours  # our change landed
        assert tgt_view.start(tgt) == new_start  # theirs was not clobbered
        settle = await world.resync_within()
        assert settle.exit_code == 0, (settle.document, await _problems(world))
        src, tgt = await world.record(source, src_id), await world.record(target, tgt_id)
        assert _text(src, src_field) == ours and _text(tgt, tgt_field) == ours
        assert src_view.start(src) == new_start and tgt_view.start(tgt) == new_start
        assert src_view.end(src) - src_view.start(src) == tgt_view.end(tgt) - tgt_view.start(tgt)
        quiet = await world.resync_within()
        assert all(c["created"] == c["updated"] == c["cancelled"] == 0
                   for c in quiet.document["connectors"].values()), quiet.document
    finally:
        await world.stop()


async def _dentally_pair(tmp_path: Path, ledger_url: str, **kw: Any) -> World:
    world = await make_world(tmp_path, ledger_url, {"zoho": "zoho_crm", "dent": "dentally"}, n_appointments=1, **kw)
    await world.seed("zoho")
    await world.seed("dent", appointments=False)
    await world.import_crosswalk()
    first = await world.resync_within()
    assert first.exit_code == 0, first.document
    return world


async def test_same_field_edited_on_both_sides_is_settled_by_owners(tmp_path: Path, ledger_url: str):
    world = await _dentally_pair(tmp_path, ledger_url, owners={"notes": "dent"})
    try:
        cid = world.dataset.appointments[0].key
        zid, did = await world.link(cid, "zoho"), await world.link(cid, "dent")
        await world.edit("dent", did, {"notes": "from the practice"})
        await world.edit("zoho", zid, {"Additional_Information": "from the CRM"})  # later, but not the owner
        result = await world.resync_within()
        assert result.exit_code == 0, result.document
        await world.resync_within()
        assert (await world.record("dent", did))["notes"] == "from the practice"
        assert (await world.record("zoho", zid))["Additional_Information"] == "from the practice"
        audit = [a for a in await world.audit(cid) if a.action == "conflict-owner"]
        assert audit and audit[0].connector == "dent" and "notes" in audit[0].fields, audit
    finally:
        await world.stop()


@pytest.mark.parametrize("newest", ["zoho", "dent"])
async def test_same_field_edited_on_both_sides_most_recent_wins(tmp_path: Path, ledger_url: str, newest: str):
    world = await _dentally_pair(tmp_path, ledger_url)
    try:
        cid = world.dataset.appointments[0].key
        zid, did = await world.link(cid, "zoho"), await world.link(cid, "dent")
        # the newest edit is made on a sandbox clock ten minutes ahead
        await world.set_clock(newest, datetime.now(UTC) + timedelta(minutes=10))
        await world.edit("dent", did, {"notes": "from the practice"})
        await world.edit("zoho", zid, {"Additional_Information": "from the CRM"})
        result = await world.resync_within()
        assert result.exit_code == 0, result.document
        await world.resync_within()
        expected = "from the CRM" if newest == "zoho" else "from the practice"
        assert (await world.record("dent", did))["notes"] == expected
        assert (await world.record("zoho", zid))["Additional_Information"] == expected
        audit = [a for a in await world.audit(cid) if a.action == "conflict-most-recent"]
        assert audit and audit[0].connector == newest and "notes" in audit[0].fields, audit
        assert not await world.conflicts()
    finally:
        await world.stop()
