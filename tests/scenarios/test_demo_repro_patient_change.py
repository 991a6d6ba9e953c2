"""Reproduction found by ``syncd demo`` (scenario 4): a patient change made in the CRM must reach
Dentally as a replace flow (create new, cancel old "Booked in error", link the new one),
docs/vendors/dentally.md §4 and docs/reference.md §6.

Observed: the engine sends the patient change to Dentally as a plain PUT, which Dentally refuses
(422 ``can not change patients``), and the record is dead-lettered as ``rejected``. Cause, in
``Engine._execute_locked`` / ``_build_request``: the crosswalk ``lookup`` is built from the *merged*
record's references only, so translating the *base* (the believed current record, which still names
the old patient) fails, ``request.current.appointment`` is None, and ``connector.needs_replace`` is
never asked.
"""

from __future__ import annotations

from pathlib import Path

from syncd.ledger.store import Ledger
from tests.scenarios.harness import make_world


async def test_patient_change_in_crm_is_a_replace_in_dentally(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    world = await make_world(tmp_path, url, {"zoho": "zoho_crm", "dentally": "dentally"}, n_appointments=2)
    try:
        await world.seed_holding("dentally")
        first = await world.resync()
        assert first.exit_code == 0, first.document
        old_id = next(r for r in world.crosswalk["dentally"] if r[0] == "appointment")[2]
        ledger = await Ledger.open(url)
        try:
            async with ledger.transaction(readonly=True) as tx:
                cid = (await tx.links_for("dentally", [old_id]))[old_id].canonical_id
        finally:
            await ledger.close()
        zoho_id = await world.link(cid, "zoho")
        current = (await world.record("zoho", zoho_id))["Appointment_For"]["id"]
        other = next(r for r in world.crosswalk["zoho"] if r[0] == "patient" and not r[2].endswith(current))
        await world.edit("zoho", zoho_id, {"Appointment_For": {"module": "Contacts", "id": other[2].split(":")[1],
                                                               "name": "-"}})
        result = await world.resync()
        assert result.document["dead_letters"] == 0, result.document
        new_id = await world.link(cid, "dentally")
        assert new_id != old_id
        old = await world.record("dentally", old_id)
        assert old["state"] == "Cancelled" and old["cancellation_reason_id"] == 1
        dentally_patient = next(r[2] for r in world.crosswalk["dentally"] if r[0] == "patient" and r[1] == other[1])
        assert str((await world.record("dentally", new_id))["patient_id"]) == dentally_patient
    finally:
        await world.stop()
