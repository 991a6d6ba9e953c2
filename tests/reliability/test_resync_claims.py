"""``resync`` after a crash: work claimed by another live process is left to it and said so (the
holder and the count, exit 1); claims of a process proven dead (this host, pid gone) are taken over."""

from __future__ import annotations

import asyncio
from pathlib import Path

from syncd.engine.holders import holder_name
from tests.scenarios.convergence_support import ADAPTERS
from tests.scenarios.harness import World, synced_pair

MEMBERS = {"zoho": "zoho_crm", "dentally": "dentally"}
NOTE = "Ring the bell twice"


async def _edit_first(world: World) -> tuple[str, str]:
    """Another user changes the notes of the first Zoho appointment: (canonical id, Dentally id)."""
    zoho = ADAPTERS["zoho_crm"]
    rec = next(r for r in await world.records("zoho") if zoho.is_appointment(r))
    await world.edit("zoho", zoho.external_id(rec), zoho.notes(NOTE))
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            cid = (await tx.links_for("zoho", [zoho.external_id(rec)]))[zoho.external_id(rec)].canonical_id
    finally:
        await ledger.close()
    return cid, await world.link(cid, "dentally")


async def _claim(world: World, cid: str, holder: str) -> None:
    ledger = await world.ledger()
    try:
        async with ledger.transaction() as tx:
            assert await tx.claim([cid], holder, ttl=600) == {cid}
    finally:
        await ledger.close()


async def _dentally_notes(world: World, external_id: str) -> str | None:
    return ADAPTERS["dentally"].view(await world.record("dentally", external_id)).notes


async def test_resync_names_a_live_holder_and_exits_1(tmp_path: Path, ledger_url: str) -> None:
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho", n=2) as world:
        cid, ext = await _edit_first(world)
        holder = "run:another-host:4242"  # another host: cannot be proven dead
        await _claim(world, cid, holder)
        result = await world.resync_within(30)
        assert result.exit_code == 1, result.document
        assert result.document["claimed_elsewhere"] == {holder: 1}
        assert result.document["ok"] is False
        assert await _dentally_notes(world, ext) != NOTE  # left to the holder
        # a second pass says the same: the skipped work is never reported done
        again = await world.resync_within(30)
        assert again.exit_code == 1 and again.document["claimed_elsewhere"] == {holder: 1}
        ledger = await world.ledger()
        try:
            async with ledger.transaction() as tx:
                await tx.release([cid], holder)  # the holder finished (or its claim expired)
        finally:
            await ledger.close()
        done = await world.resync_within(30)
        assert done.exit_code == 0, done.document
        assert "claimed_elsewhere" not in done.document
        assert await _dentally_notes(world, ext) == NOTE


async def test_resync_takes_over_the_claims_of_a_dead_process(tmp_path: Path, ledger_url: str) -> None:
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho", n=2) as world:
        cid, ext = await _edit_first(world)
        gone = await asyncio.create_subprocess_exec("true")  # a process of this host that has exited
        await gone.wait()
        dead = holder_name("resync").rsplit(":", 1)[0] + f":{gone.pid}"
        await _claim(world, cid, dead)
        result = await world.resync_within(30)
        assert result.exit_code == 0, result.document
        assert "claimed_elsewhere" not in result.document
        assert await _dentally_notes(world, ext) == NOTE
