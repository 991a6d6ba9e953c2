from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.scenarios.harness import World, make_world


@pytest.fixture
async def zoho_sf(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    world = await make_world(tmp_path, ledger_url, {"zoho": "zoho_crm", "sf": "salesforce_health"}, n_appointments=6)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        yield world
    finally:
        await world.stop()


async def test_new_crm_appointments_are_created_in_the_other_member_once(zoho_sf: World):
    first = await zoho_sf.resync()
    doc = first.document
    assert doc["connectors"]["sf"]["created"] == 6, doc
    assert first.exit_code == 0, doc
    sf = [r for r in await zoho_sf.records("sf")]
    assert len(sf) == 6
    second = await zoho_sf.resync()
    counts = second.document["connectors"]
    assert all(c["created"] == c["updated"] == c["cancelled"] == 0 for c in counts.values()), counts
    assert second.exit_code == 0
