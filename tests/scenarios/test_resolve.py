"""``syncd conflicts resolve ID --take NAME`` cannot fail silently (issue 15, item 6).

Over the Zoho and Salesforce sandboxes and a real ledger (SQLite and PostgreSQL): the issue's own case,
a notes edit in Salesforce against a Zoho appointment that is Cancelled, refused with the choice that
works and nothing written; that choice resolved and not reopened by the next pass; a dry run that
writes nothing anywhere; and a member that changed since the last pass.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.ledger.models import ConflictRow
from syncd.repairs import resolve_conflict
from tests.scenarios.harness import World, make_world, pair_world, parse_sf_time
from tests.scenarios.test_cli_contract import syncd

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
NOTE = "call the patient back about the x-ray"


@dataclass
class Case:
    world: World
    canonical_id: str
    zoho_id: str
    sf_id: str
    conflict: ConflictRow


@pytest.fixture
async def case(tmp_path: Path, ledger_url: str) -> AsyncIterator[Case]:
    """The issue's case: cancelled in Zoho, then a Salesforce user edits the comment; Zoho cannot take an
    edit of a Cancelled record, so the next pass leaves an open conflict on ``notes``."""
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=3)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        assert (await world.resync_within(20)).exit_code == 0
        zoho_id = str((await world.records("zoho"))[0]["id"])
        cid = str((await world.record("zoho", zoho_id))["Syncd_Id"])
        sf_id = await world.link(cid, "sf")
        await world.edit("zoho", zoho_id, {"Status": "Cancelled", "Cancellation_Reason": "By Customer",
                                           "Cancellation_Note": "Patient request"})
        assert (await world.resync_within(20)).exit_code == 0
        await world.edit("sf", sf_id, {"Comments": NOTE})
        result = await world.resync_within(20)
        assert result.exit_code == 1 and result.document["open_conflicts"] == 1, result.document
        [conflict] = await world.conflicts()
        assert conflict.canonical_id == cid and conflict.field == "notes"
        yield Case(world, cid, zoho_id, sf_id, conflict)
    finally:
        await world.stop()


async def _all_requests(world: World) -> dict[str, list[dict[str, Any]]]:
    return {name: (await world.control(name, "GET", "/_sandbox/requests"))["requests"] for name in MEMBERS}


async def _ledger_state(world: World) -> tuple[dict[str, int], list[Any], list[Any]]:
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            snapshots = sorted((cid, row.fingerprint) for cid, row in
                               (await tx.appointments([c.canonical_id for c in await tx.conflicts()])).items())
            links = sorted((lk.connector, lk.external_id, lk.version, lk.fingerprint) for lk in await tx.all_links())
    finally:
        await ledger.close()
    return await world.table_counts(), snapshots, links


async def test_notes_against_a_cancelled_zoho_record_is_refused_with_the_choice_that_works(case: Case) -> None:
    """The issue's example: --take sf would write notes to a Cancelled Zoho record, which Zoho refuses.
    Exit 1, nothing written anywhere, the conflict stays open and the answer names --take zoho; the next
    pass opens no second conflict."""
    world = case.world
    writes = {name: await world.write_requests(name) for name in MEMBERS}
    ledger_before = await _ledger_state(world)
    result = await resolve_conflict(world.config, case.conflict.id or 0, "sf")
    assert result.exit_code == 1, result.message
    assert "zoho holds the appointment Cancelled, which takes no change to notes" in result.message
    assert "--take zoho" in result.message and "nothing was written" in result.message
    assert NOTE not in result.message and NOTE not in json.dumps(result.document)
    assert result.document["refused"] is True and result.document["alternatives"] == ["zoho"]
    assert {name: await world.write_requests(name) for name in MEMBERS} == writes
    assert await _ledger_state(world) == ledger_before
    [still] = await world.conflicts()
    assert still.id == case.conflict.id
    # the next pass leaves that one conflict open, and opens no other
    again = await world.resync_within(20)
    assert again.exit_code == 1
    assert [c.id for c in await world.conflicts()] == [case.conflict.id]


async def test_the_working_choice_resolves_and_the_next_pass_does_not_reopen_it(case: Case) -> None:
    """--take zoho writes Zoho's note to Salesforce and closes the conflict; then resync leaves no conflict,
    both systems hold the same note, and a further pass writes nothing."""
    world = case.world
    result = await resolve_conflict(world.config, case.conflict.id or 0, "zoho")
    assert result.exit_code == 0, result.message
    assert f"sf {case.sf_id}: update notes" in result.message
    assert f"conflict {case.conflict.id} resolved: took zoho" in result.message
    assert await world.conflicts() == []
    after = await world.resync_within(20)
    assert after.exit_code == 0, after.document
    assert await world.conflicts() == []
    zoho = await world.record("zoho", case.zoho_id)
    sf = await world.record("sf", case.sf_id)
    assert zoho["Status"] == "Cancelled" and sf["StatusCategory"] == "Canceled"
    assert sf["Comments"] == zoho["Additional_Information"] != NOTE
    writes = {name: await world.write_requests(name) for name in MEMBERS}
    settled = await world.resync_within(20)
    assert settled.exit_code == 0 and {name: await world.write_requests(name) for name in MEMBERS} == writes
    audit = await world.audit(case.canonical_id)
    assert any(entry.action == "resolved" and entry.connector == "zoho" for entry in audit)


async def test_dry_run_shows_the_writes_and_changes_nothing(case: Case) -> None:
    """--dry-run names each system's record, the fields and their values (free text only as length and
    digest), and no request reaches a vendor's write routes; the ledger is unchanged and the conflict open."""
    world = case.world
    requests_before = await _all_requests(world)
    ledger_before = await _ledger_state(world)
    result = await resolve_conflict(world.config, case.conflict.id or 0, "zoho", dry_run=True)
    assert result.exit_code == 0, result.message
    assert f"sf {case.sf_id}: update notes len={len(NOTE)} sha256:" in result.message
    assert f"zoho {case.zoho_id}: nothing to write" in result.message
    assert "dry run: nothing was written" in result.message
    assert NOTE not in result.message
    [sf_plan] = [t for t in result.document["targets"] if t["connector"] == "sf"]
    assert sf_plan["op"] == "update" and sf_plan["fields"] == ["notes"]
    assert sf_plan["from"]["notes"].startswith(f"len={len(NOTE)} ")
    requests_after = await _all_requests(world)
    for name in MEMBERS:
        writes_before = [r for r in requests_before[name] if r["method"] != "GET" and "oauth" not in r["route"]]
        writes_after = [r for r in requests_after[name] if r["method"] != "GET" and "oauth" not in r["route"]]
        assert writes_after == writes_before, name
    assert await _ledger_state(world) == ledger_before
    assert [c.id for c in await world.conflicts()] == [case.conflict.id]
    assert (await world.record("sf", case.sf_id))["Comments"] == NOTE
    # the refused choice in a dry run: the same refusal, exit 1, still nothing written
    refused = await resolve_conflict(world.config, case.conflict.id or 0, "sf", dry_run=True)
    assert refused.exit_code == 1 and "--take zoho" in refused.message
    assert await _ledger_state(world) == ledger_before


async def test_a_member_changed_since_the_last_pass_is_read_before_anything_is_decided(case: Case) -> None:
    """When a member holds a change syncd has not merged yet, the resolution is refused (nothing written)
    and says to resync first; after that resync the choice is made on what both systems hold."""
    world = case.world
    await world.edit("sf", case.sf_id, {"Description": "moved to the afternoon list"})
    writes = {name: await world.write_requests(name) for name in MEMBERS}
    result = await resolve_conflict(world.config, case.conflict.id or 0, "zoho")
    assert result.exit_code == 1 and "sf changed the appointment since syncd last read it" in result.message
    assert "syncd resync" in result.message
    assert {name: await world.write_requests(name) for name in MEMBERS} == writes
    # that resync merges it (Zoho, Cancelled, cannot take the description either: a conflict of its own)
    assert (await world.resync_within(20)).exit_code == 1
    assert case.conflict.id in [c.id for c in await world.conflicts()]
    result = await resolve_conflict(world.config, case.conflict.id or 0, "zoho")
    assert result.exit_code == 0, result.message
    assert case.conflict.id not in [c.id for c in await world.conflicts()]


async def test_the_cli_refuses_with_exit_1_and_prints_one_json_document(case: Case) -> None:
    """The command line: the refusal on stdout with exit 1; --dry-run --json prints exactly one document."""
    world = case.world
    code, out, _ = await syncd(world, "conflicts", "resolve", str(case.conflict.id), "--take", "sf")
    assert code == 1 and "--take zoho" in out and NOTE not in out
    code, out, _ = await syncd(world, "conflicts", "resolve", str(case.conflict.id), "--take", "zoho",
                               "--dry-run", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["refused"] is False
    assert {t["connector"] for t in doc["targets"]} == set(MEMBERS)
    code, _, err = await syncd(world, "conflicts", "resolve", str(case.conflict.id), "--take", "nope")
    assert code == 2 and "nope" in err
    code, out, _ = await syncd(world, "conflicts", "resolve", "999", "--take", "zoho")
    assert code == 1 and "unknown or already resolved" in out


async def test_a_write_refused_after_all_leaves_the_conflict_open_and_says_so(case: Case) -> None:
    """A vendor that refuses the write at the last moment (here Salesforce's validation rule) does not make
    the resolution "succeed": exit 1, the reason is named, and the conflict stays open for another try."""
    world = case.world
    await world.fault("sf", "PATCH", "/services/data/*/sobjects/ServiceAppointment/*", {
        "type": "status", "status": 400,
        "body": [{"message": "Comments are read-only for this team", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                  "fields": ["Comments"]}]})
    result = await resolve_conflict(world.config, case.conflict.id or 0, "zoho")
    assert result.exit_code == 1 and "not resolved" in result.message, result.message
    assert case.conflict.id in [c.id for c in await world.conflicts()]
    assert (await world.record("sf", case.sf_id))["Comments"] == NOTE
    [letter] = await world.dead_letters("sf")
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in letter.reason
    # once the vendor takes it again, the same choice resolves it
    again = await resolve_conflict(world.config, case.conflict.id or 0, "zoho")
    assert again.exit_code == 0, again.message
    assert await world.conflicts() == []


async def test_a_slot_dentally_cannot_take_once_confirmed_is_refused_and_its_own_slot_resolves(
    tmp_path: Path, ledger_url: str
) -> None:
    """Another vendor's rules through the same path: Dentally takes only state and notes once Confirmed,
    so a new slot from Salesforce is an open conflict on ``start``; --take sf is refused naming Dentally's
    lock, --take dent writes Dentally's slot back to Salesforce, and the next pass leaves no conflict."""
    members = {"sf": "salesforce_health", "dent": "dentally"}
    world = await pair_world(tmp_path, ledger_url, members, source="sf", n=2)
    try:
        await world.import_crosswalk()
        assert (await world.resync_within(20)).exit_code == 0
        sf_id = str((await world.records("sf"))[0]["Id"])
        ledger = await world.ledger()
        try:
            async with ledger.transaction(readonly=True) as tx:
                cid = (await tx.links_for("sf", [sf_id]))[sf_id].canonical_id
        finally:
            await ledger.close()
        dent_id = await world.link(cid, "dent")
        assert (await world.record("dent", dent_id))["state"] == "Confirmed"
        sf = await world.record("sf", sf_id)
        start, end = parse_sf_time(sf["SchedStartTime"]), parse_sf_time(sf["SchedEndTime"])
        moved = {"SchedStartTime": _sf(start + timedelta(hours=1)), "SchedEndTime": _sf(end + timedelta(hours=1))}
        await world.edit("sf", sf_id, moved)
        assert (await world.resync_within(20)).exit_code == 1
        [conflict] = await world.conflicts()
        assert conflict.field == "start" and conflict.canonical_id == cid
        refused = await resolve_conflict(world.config, conflict.id or 0, "sf")
        assert refused.exit_code == 1, refused.message
        lock = "dent holds the appointment Confirmed, in which only the state and the notes can change"
        assert lock in refused.message
        assert "resolve with --take dent" in refused.message
        done = await resolve_conflict(world.config, conflict.id or 0, "dent")
        assert done.exit_code == 0, done.message
        assert parse_sf_time((await world.record("sf", sf_id))["SchedStartTime"]) == start
        after = await world.resync_within(20)
        assert after.exit_code == 0, after.document
        assert await world.conflicts() == []
        dent = await world.record("dent", dent_id)
        assert parse_sf_time(dent["start_time"]) == start
    finally:
        await world.stop()


def _sf(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
