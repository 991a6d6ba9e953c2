"""Onboarding links, never duplicates (``docs/reference.md §6``; issue 15 items 1 and 2).

A ledger new to a group meets vendors that already hold the same appointments: typed by hand into both
systems (no syncd reference), or made by syncd before the ledger was rebuilt (carrying its reference).
Over the real sandboxes and a real ledger (SQLite and PostgreSQL), one resync links every pair, creates
only what is missing, writes nothing to a linked pair that already agrees, and its dry run predicts it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from syncd.crosswalk import export_csv, import_rows, parse_csv
from syncd.ledger.store import Ledger, ledger_location
from tests.scenarios.harness import World, make_world
from tests.scenarios.onboarding_support import seed_hand_typed, slots, wipe_ledger

PAIRS = {
    "sf-dentally": {"sf": "salesforce_health", "dentally": "dentally"},
    "zoho-onlive": {"zoho": "zoho_crm", "onlive": "onlive"},
}
BOTH = range(0, 6)  # typed into both systems
ONLY_FIRST = (6, 7)
ONLY_SECOND = (8, 9)


@pytest.fixture(params=sorted(PAIRS))
async def typed_twice(request: pytest.FixtureRequest, tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Both systems of a group pre-filled by hand with the same six appointments, two more only in
    the first system and two only in the second; the crosswalk holds reference rows only."""
    members = PAIRS[request.param]
    world = await make_world(tmp_path, ledger_url, members, n_appointments=10)
    try:
        first, second = list(members)
        for name in members:
            await world.seed(name, appointments=False)
        await seed_hand_typed(world, first, [*BOTH, *ONLY_FIRST])
        await seed_hand_typed(world, second, [*BOTH, *ONLY_SECOND])
        await world.import_crosswalk()
        yield world
    finally:
        await world.stop()


async def _each_booking_once(world: World, total: int) -> None:
    for name in world.types:
        held = await slots(world, name)
        assert sum(held.values()) == total, (name, held)
        assert set(held.values()) == {1}, (name, [s for s, n in held.items() if n > 1])


async def test_hand_typed_pairs_are_linked_and_only_the_missing_ones_created(typed_twice: World):
    world = typed_twice
    first, second = list(world.types)
    before = {name: await world.write_counts(name) for name in world.types}
    dry = await world.resync(dry_run=True)
    assert dry.exit_code == 0, dry.document
    predicted = dry.document["connectors"]
    # the first system's records are read first: the second links six and gets the first's two;
    # the first gets the second's two
    assert (predicted[second]["linked"], predicted[second]["created"]) == (len(BOTH), len(ONLY_FIRST)), predicted
    assert (predicted[first]["linked"], predicted[first]["created"]) == (0, len(ONLY_SECOND)), predicted
    assert all(c["updated"] == c["cancelled"] == 0 for c in predicted.values()), predicted
    assert {name: await world.write_counts(name) for name in world.types} == before  # a dry run writes nothing

    real = await world.resync()
    assert real.exit_code == 0, real.document
    done = real.document["connectors"]
    for name in world.types:
        for key in ("linked", "created", "updated", "cancelled"):
            assert done[name][key] == predicted[name][key], (name, key, done, predicted)
    await _each_booking_once(world, 10)

    again = await world.resync()
    assert again.exit_code == 0, again.document
    assert all(c["created"] == c["linked"] == c["updated"] == c["cancelled"] == 0
               for c in again.document["connectors"].values()), again.document
    await _each_booking_once(world, 10)


async def test_a_linked_pair_that_differs_is_merged_by_owners(tmp_path: Path, ledger_url: str):
    """Linked records cause writes only where their fields differ, and then ``owners`` decides."""
    members = {"sf": "salesforce_health", "dentally": "dentally"}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2, owners={"notes": "dentally"})
    try:
        for name in members:
            await world.seed(name, appointments=False)
        [sf_id, _] = await seed_hand_typed(world, "sf", [0, 1])
        [dentally_id, _] = await seed_hand_typed(world, "dentally", [0, 1])
        await world.import_crosswalk()
        # reception wrote a note in Salesforce after Dentally's; the group's owner of notes is Dentally
        await world.edit("dentally", dentally_id, {"notes": "Dentally's note"})
        await world.edit("sf", sf_id, {"Comments": "Reception's later note"})
        result = await world.resync()
        assert result.exit_code == 0, result.document
        counts = result.document["connectors"]
        assert counts["dentally"]["linked"] == 2 and counts["sf"]["created"] == counts["dentally"]["created"] == 0
        assert counts["sf"]["updated"] == 1 and counts["dentally"]["updated"] == 0, counts
        assert (await world.record("sf", sf_id))["Comments"] == "Dentally's note"
        assert (await world.record("dentally", dentally_id))["notes"] == "Dentally's note"
        await _each_booking_once(world, 2)
    finally:
        await world.stop()


async def test_a_linked_pair_that_differs_takes_the_most_recent_change_without_owners(
    tmp_path: Path, ledger_url: str
):
    members = {"sf": "salesforce_health", "dentally": "dentally"}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=1)
    try:
        for name in members:
            await world.seed(name, appointments=False)
        [sf_id] = await seed_hand_typed(world, "sf", [0])
        [dentally_id] = await seed_hand_typed(world, "dentally", [0])
        await world.import_crosswalk()
        await world.edit("sf", sf_id, {"Comments": "older"})
        await world.edit("dentally", dentally_id, {"notes": "newer"})
        result = await world.resync()
        assert result.exit_code == 0, result.document
        assert (await world.record("sf", sf_id))["Comments"] == "newer"
        assert (await world.record("dentally", dentally_id))["notes"] == "newer"
        assert result.document["connectors"]["dentally"]["updated"] == 0
    finally:
        await world.stop()


@pytest.fixture
async def synced(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Zoho, Dentally and Salesforce after a first sync of eight appointments born in Dentally."""
    members = {"zoho": "zoho_crm", "dentally": "dentally", "sf": "salesforce_health"}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=8)
    try:
        await world.seed_holding("dentally")
        first = await world.resync()
        assert first.exit_code == 0, first.document
        assert first.document["connectors"]["zoho"]["created"] == 8
        yield world
    finally:
        await world.stop()


async def _rebuild(world: World, csv_text: str) -> None:
    await wipe_ledger(world.config.ledger.url)
    ledger = await Ledger.open(world.config.ledger.url)
    try:
        await ledger.upgrade()
        rows, problems = parse_csv(csv_text, world.config.connectors)
        assert not problems, problems
        report = await import_rows(ledger, rows, world.config)
        assert not report.problems, report.problems
    finally:
        await ledger.close()


async def test_ledger_rebuilt_from_the_crosswalk_export_creates_nothing(synced: World):
    world = synced
    ledger = await world.ledger()
    try:
        exported = await export_csv(ledger)
    finally:
        await ledger.close()
    assert exported.count("\nappointment,") == 8 * 3
    before = {name: await world.write_counts(name) for name in world.types}
    await _rebuild(world, exported)
    dry = await world.resync(dry_run=True)
    assert all(c["created"] == 0 for c in dry.document["connectors"].values()), dry.document
    result = await world.resync()
    assert result.exit_code == 0, result.document
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0
               for c in result.document["connectors"].values()), result.document
    assert {name: await world.write_counts(name) for name in world.types} == before  # not one write
    await _each_booking_once(world, 8)


async def test_ledger_rebuilt_without_any_appointment_row_links_by_reference(synced: World):
    """No crosswalk appointment rows at all (a moved or restored ledger): the records syncd made carry
    its reference, the source records are matched by slot; nothing is created anywhere."""
    world = synced
    ledger = await world.ledger()
    try:
        exported = await export_csv(ledger)
    finally:
        await ledger.close()
    references_only = "\n".join(line for line in exported.splitlines() if not line.startswith("appointment,"))
    before = {name: await world.write_counts(name) for name in world.types}
    await _rebuild(world, references_only + "\n")
    dry = await world.resync(dry_run=True)
    predicted = dry.document["connectors"]
    assert all(c["created"] == 0 for c in predicted.values()), predicted
    result = await world.resync()
    assert result.exit_code == 0, result.document
    counts = result.document["connectors"]
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in counts.values()), counts
    # every record but the first system's was linked (by its reference, or its slot)
    assert sum(c["linked"] for c in counts.values()) == 8 * 2, counts
    assert {name: c["linked"] for name, c in counts.items()} == {n: c["linked"] for n, c in predicted.items()}
    assert {name: await world.write_counts(name) for name in world.types} == before
    await _each_booking_once(world, 8)


async def _syncd(config: Path, cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "--config", str(config), *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_resync_on_a_missing_ledger_says_it_creates_a_new_one(tmp_path: Path, ledger_url: str):
    """``docs/reference.md §4``: run and resync create the schema on start; they say so plainly, on stderr and in
    ``resync --json``, because a new ledger is also what a wrong directory or config looks like."""
    members = {"sf": "salesforce_health", "dentally": "dentally"}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2)
    try:
        for name in members:
            await world.seed(name)
        code, out, err = await _syncd(world.config_path, tmp_path, "resync", "--json")
        doc = json.loads(out)
        assert doc.get("ledger_created") is True, doc
        assert "NEW, empty ledger" in err and "linked to each other, not copied" in err, err[-2000:]
        where = ledger_location(world.config.ledger.url)
        assert where in err and "ledger_created" in err  # the notice, and the log event
        # no crosswalk imported yet: every record is dead-lettered for its references, nothing is created
        assert code == 1 and all(c["created"] == 0 for c in doc["connectors"].values()), doc
        code, out, err = await _syncd(world.config_path, tmp_path, "resync", "--json")
        assert "ledger_created" not in json.loads(out) and "NEW, empty ledger" not in err
    finally:
        await world.stop()


async def test_a_relative_sqlite_ledger_is_the_one_beside_the_config_from_any_directory(tmp_path: Path):
    members = {"sf": "salesforce_health", "dentally": "dentally"}
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    world = await make_world(etc, "sqlite+aiosqlite:///./state.db", members, n_appointments=3)
    try:
        await world.seed("dentally")
        await world.seed("sf", appointments=False)
        csv = etc / "crosswalk.csv"
        from syncd.sandboxkit.seedgen import crosswalk_csv

        csv.write_text(crosswalk_csv({n: [r for r in rows if r[0] != "appointment"]
                                      for n, rows in world.crosswalk.items()}))
        code, _, err = await _syncd(world.config_path, elsewhere, "crosswalk", "import", str(csv))
        assert code == 0, err[-2000:]
        assert (etc / "state.db").exists() and not (elsewhere / "state.db").exists()
        code, out, err = await _syncd(world.config_path, elsewhere, "resync", "--json")
        assert code == 0, err[-2000:]
        doc = json.loads(out)
        assert "ledger_created" not in doc and doc["connectors"]["sf"]["created"] == 3, doc
        # from yet another directory: the same ledger, nothing created twice
        code, out, err = await _syncd(world.config_path, tmp_path, "resync", "--json")
        assert code == 0 and json.loads(out)["connectors"]["sf"]["created"] == 0, (out, err[-2000:])
        assert not (tmp_path / "state.db").exists()
    finally:
        await world.stop()


async def test_a_rebuilt_ledger_takes_a_replace_flows_old_record_for_no_appointment(synced: World):
    """Replace flows leave the old record behind, cancelled: Zoho's (a start moved earlier) still holds
    the appointment's reference beside the new record. A ledger rebuilt without appointment rows must
    neither link such a cancelled copy (it would cancel the live appointment everywhere) nor copy it."""
    world = synced
    earlier = next(i for i, a in enumerate(world.dataset.appointments) if a.status == "pending")  # editable
    appointment = world.dataset.appointments[earlier]
    dentally_id = world.external("dentally", "appointment", appointment.key)
    cid = await world.canonical_of("dentally", dentally_id)
    old_zoho = await world.link(cid, "zoho")
    record = await world.record("dentally", dentally_id)
    start, finish = (datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("start_time", "finish_time"))
    await world.edit("dentally", dentally_id, {"start_time": (start - timedelta(hours=1)).isoformat(),
                                               "finish_time": (finish - timedelta(hours=1)).isoformat()})
    replaced = await world.resync()
    assert replaced.exit_code == 0, replaced.document
    assert replaced.document["connectors"]["zoho"]["created"] == 1, replaced.document  # Zoho: replace flow
    new_zoho = await world.link(cid, "zoho")
    holding = [r for r in await world.records("zoho") if r.get("Syncd_Id") == cid]
    assert {r["id"]: r["Status"] for r in holding} == {old_zoho: "Cancelled", new_zoho: "Scheduled"}
    live = {name: await slots(world, name) for name in world.types}
    before = {name: await world.write_counts(name) for name in world.types}

    ledger = await world.ledger()
    try:
        exported = await export_csv(ledger)
    finally:
        await ledger.close()
    await _rebuild(world, "\n".join(x for x in exported.splitlines() if not x.startswith("appointment,")) + "\n")
    result = await world.resync()
    assert result.exit_code == 0, (result.document, await world.conflicts())
    counts = result.document["connectors"]
    assert all(c["created"] == c["cancelled"] == c["updated"] == 0 for c in counts.values()), counts
    assert {name: await world.write_counts(name) for name in world.types} == before  # not one write
    assert {name: await slots(world, name) for name in world.types} == live
    assert await world.link(cid, "zoho") == new_zoho and await world.link(cid, "dentally") == dentally_id


