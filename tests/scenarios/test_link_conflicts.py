"""Several candidates are an open conflict, never a guess (``docs/reference.md §6``,
``docs/vendors/README.md`` rule 10;
issue 15 item 5).

Over the real sandboxes and ledger: two records typed for one appointment, and two records holding one
syncd reference (for every vendor whose reference field allows it; Salesforce's ``Syncd_Id__c`` is
unique, its ambiguous case is the unstamped search, tested with its connector), on the read path and on
the create path. Nothing is linked or created for them until somebody decides, and the next full pass
that no longer finds the ambiguity closes the conflict.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.engine.core import Engine
from syncd.engine.onboard import LINK_FIELD
from syncd.passes import read_changes
from syncd.repairs import resolve_conflict
from syncd.runtime import open_runtime
from tests.scenarios.harness import World, make_world
from tests.scenarios.onboarding_support import hand_typed, seed_hand_typed, slots

REFERENCE = "apt_copied_twice"


def _with_reference(vendor: str, record: dict[str, Any], reference: str) -> dict[str, Any]:
    """``record`` as syncd would have created it: carrying ``reference`` in the vendor's field."""
    out = dict(record)
    if vendor == "zoho_crm":
        out["Syncd_Id"] = reference
    elif vendor == "dentally":
        out["metadata"] = {"syncd_id": reference}
    elif vendor == "onlive":
        out["externalId"] = reference
    elif vendor == "saludya":
        out["notes"] = f"{out.get('notes') or ''}\n[syncd:{reference}]".lstrip("\n")
    else:
        raise AssertionError(vendor)
    return out


def _second_copy(vendor: str, record: dict[str, Any]) -> dict[str, Any]:
    """Another record of the same booking (a second create syncd made before, say): a new id; SaludYa
    refuses two bookings of one doctor at one time, so its copy sits an hour later."""
    out = dict(record)
    new_ids: dict[str, Callable[[], Any]] = {
        "zoho_crm": lambda: "5545974000002199991", "dentally": lambda: 757599991,
        "onlive": lambda: str(uuid.uuid4()), "saludya": lambda: "apt_secondcopy1",
    }
    out["id"] = new_ids[vendor]()
    out.pop("uuid", None)
    if vendor == "saludya":
        hour, minute = (int(p) for p in str(record["time"]).split(":"))
        out["time"] = f"{(hour + 1) % 24:02d}:{minute:02d}"
    return out


TARGETS = {"zoho": "zoho_crm", "dentally": "dentally", "onlive": "onlive", "saludya": "saludya"}


async def _world(tmp_path: Path, ledger_url: str, target: str) -> World:
    members = {"sf": "salesforce_health", target: TARGETS[target]}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2)
    for name in members:
        await world.seed(name, appointments=False)
    return world


async def _copies_holding(world: World, target: str, reference: str) -> list[str]:
    vendor = world.types[target]
    [record] = hand_typed(world, target, [0])
    first = _with_reference(vendor, record, reference)
    second = _second_copy(vendor, first)
    await world.control(target, "POST", "/_sandbox/records", {"records": [first, second]})
    return [str(first["id"]), str(second["id"])]


async def _link_conflicts(world: World) -> list[Any]:
    return [c for c in await world.conflicts() if c.field == LINK_FIELD]


@pytest.mark.parametrize("target", sorted(TARGETS))
async def test_two_records_holding_one_reference_are_an_open_conflict_until_one_is_gone(
    tmp_path: Path, ledger_url: str, target: str
):
    world = await _world(tmp_path, ledger_url, target)
    try:
        await seed_hand_typed(world, "sf", [0])
        copies = await _copies_holding(world, target, REFERENCE)
        await world.import_crosswalk()
        first = await world.resync()
        assert first.exit_code == 1, first.document
        conflicts = await _link_conflicts(world)
        about = {c.canonical_id: c for c in conflicts}
        assert REFERENCE in about, conflicts
        assert about[REFERENCE].values["connector"] == target
        assert sorted(about[REFERENCE].values["records"]) == sorted(copies)
        assert all(c["created"] == c["linked"] == 0 for c in first.document["connectors"].values()), first.document
        assert sum((await slots(world, "sf")).values()) == 1  # nothing copied either way
        assert len([r for r in await world.records(target) if not r.get("_deleted_at")]) == 2

        again = await world.resync()
        assert again.exit_code == 1 and len(await _link_conflicts(world)) == len(conflicts)
        assert all(c["created"] == 0 for c in again.document["connectors"].values()), again.document

        # `conflicts resolve --take` cannot settle which record it is: it says so and what to do instead
        answer = await resolve_conflict(world.config, about[REFERENCE].id or 0, target)
        code, message = answer.exit_code, answer.message
        assert answer.document["refused"] is True
        assert code == 1 and "not a field value" in message and "crosswalk import" in message, message
        assert len(await _link_conflicts(world)) == len(conflicts)

        # staff remove the second copy: the one left is linked, the conflicts close, nothing is created
        await world.control(target, "POST", "/_sandbox/records", {"delete": [copies[1]]})
        settled = await world.resync()
        assert settled.exit_code == 0, (settled.document, await world.conflicts())
        assert await _link_conflicts(world) == []
        counts = settled.document["connectors"]
        assert counts[target]["linked"] == 1 and all(c["created"] == 0 for c in counts.values()), counts
        assert sum((await slots(world, "sf")).values()) == 1
    finally:
        await world.stop()


@pytest.mark.parametrize("target", sorted(TARGETS))
async def test_a_create_that_finds_two_records_holding_its_reference_opens_a_conflict(
    tmp_path: Path, ledger_url: str, target: str
):
    """The create path: a create searched for by its reference first (here into a member the daemon
    never reads, ``poll_interval = 0``; the same path as a create a crash left ``sending``) finds two
    records holding it: an open conflict, the create stays queued, nothing is written."""
    world = await _world(tmp_path, ledger_url, target)
    try:
        [record] = hand_typed(world, "sf", [0])
        record["Syncd_Id__c"] = REFERENCE  # the source record carries the reference (made by syncd)
        await world.control("sf", "POST", "/_sandbox/records", {"records": [record]})
        copies = await _copies_holding(world, target, REFERENCE)
        await world.import_crosswalk()
        writes_before = await world.write_counts(target)
        async with open_runtime(world.config) as rt:
            engine = Engine(world.config, rt.ledger, rt.connectors, never_read=[target])
            await read_changes(engine, "sf", since=None, set_cursor=True)
            async with rt.ledger.transaction(readonly=True) as tx:
                queued = await tx.outbox_open_creates([REFERENCE])
        [conflict] = await _link_conflicts(world)
        assert conflict.canonical_id == REFERENCE and conflict.values["connector"] == target
        assert sorted(conflict.values["records"]) == sorted(copies)
        assert [(q.connector, q.state) for q in queued] == [(target, "pending")]
        assert await world.write_counts(target) == writes_before  # nothing created, nothing stamped
        assert engine.stats.of(target).conflicts == 1 and engine.stats.of(target).created == 0
    finally:
        await world.stop()


async def test_an_appointment_typed_twice_in_one_system_is_not_guessed(tmp_path: Path, ledger_url: str):
    """Salesforce holds appointment 0 twice (typed twice by hand), Dentally once: which Salesforce
    record is Dentally's is an open conflict; neither copy is created in Dentally, Dentally's record
    is not copied to Salesforce. Once the duplicate is cancelled in Salesforce, the next pass links the
    pair and closes the conflict; the cancelled copy is not created anywhere."""
    members = {"sf": "salesforce_health", "dentally": "dentally"}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2)
    try:
        for name in members:
            await world.seed(name, appointments=False)
        [sf_first, sf_other] = await seed_hand_typed(world, "sf", [0, 1])
        [duplicate] = hand_typed(world, "sf", [0])
        duplicate["Id"] = sf_first[:-6] + "DUPAAA"
        await world.control("sf", "POST", "/_sandbox/records", {"records": [duplicate]})
        await seed_hand_typed(world, "dentally", [0, 1])
        await world.import_crosswalk()
        dry = await world.resync(dry_run=True)
        assert dry.exit_code == 1 and dry.document["connectors"]["dentally"]["created"] == 0, dry.document
        first = await world.resync()
        assert first.exit_code == 1, first.document
        counts = first.document["connectors"]
        assert counts["dentally"]["linked"] == 1 and counts["dentally"]["created"] == 0, counts
        assert counts["sf"]["created"] == 0, counts
        conflicts = await _link_conflicts(world)
        assert len(conflicts) == 2 and {c.values["connector"] for c in conflicts} == {"dentally"}
        assert sum((await slots(world, "dentally")).values()) == 2
        assert sum((await slots(world, "sf")).values()) == 3

        sf_ids = [r["Id"] for r in await world.records("sf") if r.get("attributes", {}).get("type")
                  == "ServiceAppointment" and r["Id"] != sf_other]
        await world.edit("sf", sorted(sf_ids)[-1], {"Status": "Canceled", "CancellationReason": "Duplicate"})
        settled = await world.resync()
        assert settled.exit_code == 0, (settled.document, await world.conflicts())
        assert await _link_conflicts(world) == []
        assert all(c["created"] == 0 for c in settled.document["connectors"].values()), settled.document
        assert sum((await slots(world, "dentally")).values()) == 2
    finally:
        await world.stop()
