"""Reproduction suspected from ``syncd demo`` (scenario 1, seen twice in about 20 runs): a poll that
reads a Salesforce record *between* the two calls of syncd's own update (sObject PATCH of the text
fields, then the Connect PUT of the times) takes the half-written record for a new change made in
Salesforce, and merges its old start back over the reschedule.

Observed in the demo: the reschedule made in Zoho reached Dentally and Salesforce, then Salesforce was
updated a second time, Zoho's record was *replaced* (its start moved earlier, which Zoho only allows
as create + cancel) and Salesforce ended with the old start. docs/reference.md §6 ("echo suppression",
"no lost update"): a write syncd is making must not be read back as somebody else's change.

Here the PUT is delayed by a sandbox fault so that the Salesforce record is read and reconciled in
between by the same engine, as the daemon's Salesforce poll does by chance.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.engine.core import Engine
from syncd.runtime import open_runtime
from tests.scenarios.harness import make_world, parse_sf_time, zoho_time

CONNECT_PUT = "/services/data/*/connect/health/appointment-management/appointment/*"


async def test_a_read_between_the_two_calls_of_our_update_does_not_revert_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    world = await make_world(tmp_path, url, {"zoho": "zoho_crm", "sf": "salesforce_health"}, n_appointments=1)
    try:
        await world.seed_holding("zoho")
        assert (await world.resync()).exit_code == 0
        rec = (await world.records("zoho"))[0]
        zid, cid = rec["id"], rec["Syncd_Id"]
        sf_id = await world.link(cid, "sf")
        start = datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=2)
        # a reschedule plus a text change: Salesforce takes it as PATCH (text) then PUT (times)
        await world.edit("zoho", zid, {"Appointment_Start_Time": zoho_time(start),
                                       "Appointment_End_Time": zoho_time(start + timedelta(minutes=rec["Duration"])),
                                       "Appointment_Name": "Rebooked check-up"})
        await world.fault("sf", "PUT", CONNECT_PUT, {"type": "delay", "seconds": 1.5})
        # one engine, as in ``syncd run``: the poll of Zoho writes to Salesforce while the poll of
        # Salesforce (another scheduler job) reads it
        async with open_runtime(world.config) as rt:
            engine = Engine(world.config, rt.ledger, rt.connectors, holder="run:test")
            zoho_changed = await rt.connectors["zoho"].read([zid])
            writer = asyncio.create_task(engine.process_page("zoho", list(zoho_changed.values())))
            await asyncio.sleep(0.8)  # the PATCH has landed, the PUT is held back
            half_written = await rt.connectors["sf"].read([sf_id])
            await engine.process_page("sf", list(half_written.values()))
            await writer
        await world.resync()
        sf = await world.record("sf", sf_id)
        assert parse_sf_time(sf["SchedStartTime"]) == start.astimezone(UTC)
        zoho_now = [r for r in await world.records("zoho") if not r.get("_deleted_at")]
        assert [r["id"] for r in zoho_now if r.get("Status") != "Cancelled"] == [zid], "Zoho record was replaced"
        assert datetime.fromisoformat((await world.record("zoho", zid))["Appointment_Start_Time"]) == start
    finally:
        await world.stop()
