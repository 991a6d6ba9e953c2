"""Crosswalk import/export (docs/reference.md §3), on SQLite and PostgreSQL."""

from __future__ import annotations

from syncd.config import Config, ConnectorConfig, LedgerConfig, LogConfig, ServerConfig, SyncGroup
from syncd.crosswalk import export_csv, import_rows, parse_csv
from syncd.ledger.models import Link
from syncd.ledger.store import Ledger


def make_config() -> Config:
    names = ("sf", "dentally", "zoho", "onlive")
    connectors = {n: ConnectorConfig(name=n, type="dentally", base_url="http://127.0.0.1") for n in names}
    groups = (
        SyncGroup("main", ("sf", "dentally", "zoho"), ("sf", "dentally", "zoho"), {}),
        SyncGroup("b", ("onlive", "x"), ("onlive",), {}),
    )
    return Config(LedgerConfig(), ServerConfig(), LogConfig(), connectors, groups)


CONFIG = make_config()
CSV = """kind,key,connector,external_id
patient,P-1001,sf,001xx000003DGb2AAG
patient,P-1001,dentally,4182
practitioner,DR-7,dentally,91
location,LOC-1,sf,131xx
service,SVC-1,dentally,12
appointment,A-55,sf,08pxx0000004KhxAAE
appointment,A-55,dentally,777123
patient,P-2002,onlive,jane.doe@example.org
"""


async def run_import(ledger: Ledger, text: str) -> tuple[list[str], int, int, int]:
    rows, problems = parse_csv(text, CONFIG.connectors)
    report = await import_rows(ledger, rows, CONFIG)
    all_problems = problems + report.problems
    return all_problems, report.added, report.unchanged, (1 if all_problems else 0)


async def test_import_is_idempotent(ledger: Ledger) -> None:
    """Importing the same file twice adds nothing the second time; lookups work both ways."""
    assert await run_import(ledger, CSV) == ([], 8, 0, 0)
    assert await run_import(ledger, CSV) == ([], 0, 8, 0)
    async with ledger.transaction(readonly=True) as tx:
        assert await tx.crosswalk_lookup("patient", ["P-1001", "P-9"], "dentally") == {"P-1001": "4182"}
        assert await tx.crosswalk_reverse("patient", "sf", ["001xx000003DGb2AAG"]) == {"001xx000003DGb2AAG": "P-1001"}
        links = await tx.links_of(["A-55"])
        rows = await tx.appointments(["A-55"])
    assert [(lk.connector, lk.external_id) for lk in links["A-55"]] == [
        ("dentally", "777123"),
        ("sf", "08pxx0000004KhxAAE"),
    ]
    assert rows["A-55"].sync_group == "main" and rows["A-55"].snapshot is None


async def test_contradictions_are_reported_and_not_applied(ledger: Ledger) -> None:
    """Rows contradicting the ledger (or earlier rows) are reported by line, never applied; exit 1."""
    await run_import(ledger, CSV)
    async with ledger.transaction() as tx:
        await tx.upsert_links([Link(canonical_id="A-77", connector="zoho", external_id="Z-OLD")])
        await tx.retire_links("zoho", ["Z-OLD"])
    text = """kind,key,connector,external_id
patient,P-1001,dentally,9999
patient,P-3003,dentally,4182
appointment,A-55,dentally,888
appointment,A-99,sf,08pxx0000004KhxAAE
appointment,A-60,onlive,OL-1
appointment,A-60,zoho,Z-1
patient,P-4004,zoho,55
patient,P-4005,zoho,55
appointment,A-78,zoho,Z-OLD
practitioner,DR-8,dentally,92
bogus,K,sf,1
patient,bad key!,sf,1
patient,P-5,nosuch,1
"""
    problems, added, unchanged, code = await run_import(ledger, text)
    assert code == 1
    assert added == 3  # A-60 onlive, P-4004 zoho, DR-8 dentally
    assert unchanged == 0
    assert sorted(problems) == sorted(
        [
            "line 2: patient P-1001 on dentally: key already maps to another external id (not applied)",
            "line 3: patient P-3003 on dentally: external id already maps to patient P-1001 (not applied)",
            "line 4: appointment A-55 on dentally: appointment already linked to another external id (not applied)",
            "line 5: appointment A-99 on sf: external id already linked to appointment A-55 (not applied)",
            "line 7: appointment A-60 on zoho: connector is not in sync group b of this appointment (not applied)",
            "line 9: patient P-4005 on zoho: external id already maps to patient P-4004 (not applied)",
            "line 10: appointment A-78 on zoho: external id was retired by a replace flow (not applied)",
            "line 12: unknown kind 'bogus' (one of patient, practitioner, location, service, appointment)",
            "line 13: patient key is not a valid canonical key ([A-Za-z0-9_-]{1,64})",
            "line 14: patient P-5: no connector named 'nosuch' in the config",
        ]
    )
    for problem in problems:
        assert "jane.doe" not in problem and "9999" not in problem
    async with ledger.transaction(readonly=True) as tx:
        assert await tx.crosswalk_lookup("patient", ["P-1001"], "dentally") == {"P-1001": "4182"}
        assert await tx.crosswalk_lookup("patient", ["P-3003"], "dentally") == {}
        assert (await tx.links_for("sf", ["08pxx0000004KhxAAE"]))["08pxx0000004KhxAAE"].canonical_id == "A-55"
    # the same file again: the applied rows are now unchanged, the rest still reported
    problems2, added2, unchanged2, code2 = await run_import(ledger, text)
    assert (added2, unchanged2, code2) == (0, 3, 1)
    assert sorted(problems2) == sorted(problems)


async def test_export_writes_every_link_in_force(ledger: Ledger) -> None:
    """Export round-trips the import, includes syncd's own links, and leaves retired ids out."""
    await run_import(ledger, CSV)
    async with ledger.transaction() as tx:
        await tx.upsert_links(
            [
                Link(canonical_id="c-123", connector="zoho", external_id="Z9"),
                Link(canonical_id="A-55", connector="zoho", external_id="Z-RETIRED"),
            ]
        )
        await tx.retire_links("zoho", ["Z-RETIRED"])
    exported = await export_csv(ledger)
    lines = exported.splitlines()
    assert lines[0] == "kind,key,connector,external_id"
    assert "appointment,c-123,zoho,Z9" in lines
    assert not any("Z-RETIRED" in line for line in lines)
    assert set(CSV.splitlines()) <= set(lines)
    # importing the export changes nothing
    assert (await run_import(ledger, exported))[1:] == (0, len(lines) - 1, 0)


def test_header_is_required() -> None:
    rows, problems = parse_csv("a,b\n1,2\n", CONFIG.connectors)
    assert rows == [] and problems == ["line 1: header must be kind,key,connector,external_id"]
