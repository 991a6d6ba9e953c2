"""The docs/reference.md §4 and §7 surface of the sync commands, driven as a subprocess like outside scripts do."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
STAT_KEYS = {"read", "changed", "created", "linked", "updated", "cancelled", "unchanged", "retried", "dead_lettered",
             "conflicts", "api_calls"}


async def syncd(world: World, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", *args, "--config", str(world.config_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def world(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    w = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=3)
    try:
        await w.seed("zoho")
        await w.seed("sf", appointments=False)
        yield w
    finally:
        await w.stop()


async def test_resync_json_document_and_exit_codes(world: World, tmp_path: Path):
    appointment = world.dataset.appointments[0]
    affected = sum(a.patient == appointment.patient for a in world.dataset.appointments)
    await world.import_crosswalk(skip=[("sf", "patient", appointment.patient)])
    code, out, _ = await syncd(world, "resync", "--dry-run", "--json")
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["connectors"]["sf"]["created"] == 3 - affected
    assert doc["connectors"]["sf"]["dead_lettered"] == affected and code == 1  # what it would leave behind
    code, out, _ = await syncd(world, "resync", "--json")
    doc = json.loads(out)  # exactly one JSON document on stdout
    assert set(doc) == {"ok", "dry_run", "duration_s", "connectors", "dead_letters", "open_conflicts"}
    assert set(doc["connectors"]) == set(MEMBERS)
    assert all(set(c) == STAT_KEYS for c in doc["connectors"].values())
    assert code == 1 and doc["ok"] is False and doc["dead_letters"] == affected
    assert doc["connectors"]["sf"]["dead_lettered"] == affected and doc["connectors"]["sf"]["api_calls"] > 0
    # deadletters list --json: the docs/reference.md §7 shape, exit 0 whatever it found
    code, out, _ = await syncd(world, "deadletters", "list", "--json")
    letters = json.loads(out)["dead_letters"]
    assert code == 0 and len(letters) == affected
    assert set(letters[0]) == {"id", "connector", "canonical_id", "external_id", "kind", "reason", "attempts",
                               "first_seen", "last_tried"}
    assert "patient" in letters[0]["reason"] and appointment.patient in letters[0]["reason"]
    # fix the crosswalk, retry every letter: done
    row = next(r for r in world.crosswalk["sf"] if r[0] == "patient" and r[1] == appointment.patient)
    csv = tmp_path / "fix.csv"
    csv.write_text(f"kind,key,connector,external_id\npatient,{row[1]},sf,{row[2]}\n")
    assert (await syncd(world, "crosswalk", "import", str(csv)))[0] == 0
    code, out, _ = await syncd(world, "deadletters", "retry", "--all")
    assert code == 0, out
    code, out, _ = await syncd(world, "resync", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["dead_letters"] == 0
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in doc["connectors"].values())
    code, out, _ = await syncd(world, "conflicts", "list", "--json")
    assert code == 0 and json.loads(out) == {"conflicts": []}


async def test_resync_usage_errors_exit_2(world: World):
    code, _, err = await syncd(world, "resync", "--connector", "nope")
    assert code == 2 and "nope" in err
    code, _, err = await syncd(world, "resync", "--id", "zoho-without-colon")
    assert code == 2
    code, _, err = await syncd(world, "resync", "--since", "yesterday")
    assert code == 2


async def test_refused_authentication_exits_3_and_names_the_connector(world: World):
    await world.import_crosswalk()
    await world.control("zoho", "POST", "/_sandbox/options", {"refresh_token": "rotated-elsewhere"})
    code, out, _ = await syncd(world, "resync", "--json")
    doc = json.loads(out)
    assert code == 3 and "zoho" in doc["stopped"] and "authentication" in doc["stopped"]["zoho"]
    # what to fix: the token request, Zoho's code and the config key that holds the refresh token
    assert "/oauth/v2/token" in doc["stopped"]["zoho"] and "invalid_code" in doc["stopped"]["zoho"]
    assert "connectors.zoho.refresh_token" in doc["stopped"]["zoho"]


async def test_a_vendor_wait_over_120_s_stops_that_connector_with_exit_3(world: World):
    await world.import_crosswalk()
    await world.fault("zoho", "GET", "/crm/v7/Appointments__s*", {"type": "rate_limit", "retry_after": 600})
    code, out, _ = await syncd(world, "resync", "--json")
    doc = json.loads(out)
    assert code == 3 and "zoho" in doc["stopped"] and "600" in doc["stopped"]["zoho"]
    # nothing lost: once the vendor lets us in again, the next pass completes the work
    code, out, _ = await syncd(world, "resync", "--json")
    assert code == 0, out
    assert len(await world.records("sf")) == 3


async def test_conflict_listed_and_resolved_by_taking_a_side(world: World):
    await world.import_crosswalk()
    assert (await syncd(world, "resync"))[0] == 0
    zid = (await world.records("zoho"))[0]["id"]
    cid = (await world.record("zoho", zid))["Syncd_Id"]
    sf_id = await world.link(cid, "sf")
    # cancelled in the CRM; then a Salesforce user edits the comment: Zoho keeps a cancelled record
    # unchanged (terminal), so syncd records an open conflict instead of writing (docs/vendors/README.md rule 10)
    await world.edit("zoho", zid, {"Status": "Cancelled", "Cancellation_Reason": "By Customer",
                                   "Cancellation_Note": "Patient request"})
    assert (await syncd(world, "resync"))[0] == 0
    await world.edit("sf", sf_id, {"Comments": "call the patient back"})
    code, out, _ = await syncd(world, "resync", "--json")
    assert code == 1 and json.loads(out)["open_conflicts"] == 1
    code, out, _ = await syncd(world, "conflicts", "list", "--json")
    [conflict] = json.loads(out)["conflicts"]
    assert code == 0
    assert set(conflict) == {"id", "canonical_id", "field", "values", "reason", "opened"}
    assert conflict["canonical_id"] == cid and conflict["field"] == "notes"
    assert "call the patient back" not in out  # free text never shown (PHI)
    # one conflict shows on the one connector it belongs to (the target that could not take the note)
    code, out, _ = await syncd(world, "status", "--json")
    connectors = json.loads(out)["connectors"]
    assert code == 1 and (connectors["zoho"]["open_conflicts"], connectors["sf"]["open_conflicts"]) == (1, 0)
    assert connectors["zoho"]["state"] == "degraded" and "1 open conflict" in connectors["zoho"]["reason"]
    code, out, _ = await syncd(world, "conflicts", "show", str(conflict["id"]))
    assert code == 0 and f"conflict #{conflict['id']} (open) on appointment {cid}, field notes" in out
    assert "belongs to: zoho" in out and f"syncd conflicts resolve {conflict['id']} --take zoho" in out
    assert f"sf {sf_id}" in out and "call the patient back" not in out and "{'" not in out
    # settle it by taking the CRM's version: Salesforce gets the CRM's (empty) note back
    code, out, _ = await syncd(world, "conflicts", "resolve", str(conflict["id"]), "--take", "zoho")
    assert code == 0, out
    assert (await world.record("sf", sf_id))["Comments"] == (await world.record("zoho", zid))["Additional_Information"]
    assert json.loads((await syncd(world, "conflicts", "list", "--json"))[1]) == {"conflicts": []}
