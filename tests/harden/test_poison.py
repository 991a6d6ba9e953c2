"""Poison records (issue 18 item 7): a record whose write fails every time is dead-lettered after a
bounded number of attempts and never blocks the other records of its target."""

from __future__ import annotations

from pathlib import Path

from tests.scenarios.harness import World, synced_pair

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
CONNECT_PUT = "/services/data/*/connect/health/appointment-management/appointment/{id}"


async def _edit_all(world: World, note: str) -> dict[str, str]:
    """Edit every Zoho appointment's notes; Zoho id -> the Salesforce id it is linked to."""
    pairs: dict[str, str] = {}
    sf_by_canonical = {r["Syncd_Id__c"]: r["Id"] for r in await world.records("sf")}
    for canonical_id, sf_id in sf_by_canonical.items():
        [zoho_link] = [link for link in await world.links(canonical_id) if link.connector == "zoho"]
        await world.edit("zoho", zoho_link.external_id, {"Additional_Information": f"{note} {canonical_id}"})
        pairs[zoho_link.external_id] = sf_id
    return pairs


async def _notes(world: World) -> dict[str, str]:
    return {r["Id"]: str(r.get("Comments")) for r in await world.records("sf")}


async def test_a_record_refused_every_time_is_dead_lettered_and_the_others_sync(tmp_path: Path, ledger_url: str):
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho", n=4) as world:
        pairs = await _edit_all(world, "changed")
        poison = sorted(pairs.values())[0]
        await world.fault("sf", "PUT", CONNECT_PUT.format(id=poison), {"type": "status", "status": 400, "body": [
            {"errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "refused"}]}, times=1000)
        attempts = []
        for _ in range(3):
            result = await world.resync_within(30)
            assert result.exit_code == 1, result.document
            letters = await world.dead_letters("sf")
            assert len(letters) == 1 and letters[0].external_id == poison, letters
            attempts.append(letters[0].attempts)
            notes = await _notes(world)
            assert all(notes[sf].startswith("changed") for sf in pairs.values() if sf != poison), notes
            assert not notes[poison].startswith("changed")
        # one dead letter, updated (not duplicated) on each pass; never retried blindly within a pass
        assert attempts == sorted(attempts) and attempts[0] >= 1, attempts
        assert (await world.write_counts("sf")).get("PUT", 0) <= 3 + 3, await world.write_counts("sf")


async def test_a_record_whose_writes_always_fail_transiently_does_not_block_the_others(
    tmp_path: Path, ledger_url: str
):
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho", n=4) as world:
        pairs = await _edit_all(world, "again")
        poison = sorted(pairs.values())[0]
        await world.fault("sf", "PUT", CONNECT_PUT.format(id=poison), {"type": "status", "status": 503},
                          times=100_000)
        for _ in range(3):
            await world.resync_within(60)
        notes = await _notes(world)
        others = {sf: notes[sf] for sf in pairs.values() if sf != poison}
        assert all(n.startswith("again") for n in others.values()), others
