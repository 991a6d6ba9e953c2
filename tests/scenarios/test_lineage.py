"""Lineage and ``syncd explain`` over the real Zoho and Dentally sandboxes, on SQLite and PostgreSQL.

An appointment is created in Zoho and synced to Dentally; its notes are edited in Zoho; a GET/PUT race
on Dentally (another user moves it right before syncd's pre-write re-read) makes syncd re-read,
re-merge and retry; then a patient change in Zoho is carried out the Dentally way (a replace). After
each step ``syncd explain --json`` must name the right source, rule and outcomes, and no output may
carry a seeded patient's name, e-mail, phone or notes. Pruning and the exit codes 1 and 2 as well.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from syncd import lineage
from syncd.cli import main
from syncd.ledger.models import LineageEntry
from syncd.ledger.store import Ledger
from tests.daemon_support import DaemonProcess, eventually, free_port, with_server
from tests.scenarios.harness import World, synced_pair

MEMBERS = {"zoho": "zoho_crm", "dent": "dentally"}
OUR_NOTE = "Ring the bell at the side door"


def _ms_z(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
async def world(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Zoho holds 2 appointments; a first resync has created them in Dentally."""
    async with synced_pair(tmp_path, ledger_url, MEMBERS, source="zoho", n=2) as w:
        yield w


async def _cli(world: World, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, [*args, "--config", str(world.config_path)])


async def _explain(world: World, ref: str) -> dict[str, Any]:
    result = await _cli(world, "explain", ref, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def _phi(world: World) -> list[str]:
    """What must never appear: every seeded patient's names, e-mail and phone, every seeded note, ours."""
    out = [OUR_NOTE]
    for p in world.dataset.patients:
        out += [p.given, p.family, p.email, p.phone]
    out += [a.notes for a in world.dataset.appointments if a.notes]
    return [s for s in out if s and len(s) > 3]


def _assert_no_phi(world: World, text: str) -> None:
    leaked = [s for s in _phi(world) if s in text]
    assert not leaked, leaked


def _entries(doc: dict[str, Any], kind: str, connector: str | None = None) -> list[dict[str, Any]]:
    return [h for h in doc["history"] if h["kind"] == kind and (connector is None or h["connector"] == connector)]


async def test_explain_follows_create_edit_race_and_replace(world: World) -> None:
    appt = world.dataset.appointments[0]
    cid = appt.key
    zid, did = await world.link(cid, "zoho"), await world.link(cid, "dent")

    # -- created in Zoho, synced to Dentally
    doc = await _explain(world, f"zoho:{zid}")
    assert doc["canonical_id"] == cid
    assert set(doc) == {"canonical_id", "links", "fields", "history"}
    assert {(lk["connector"], lk["external_id"], lk["retired"]) for lk in doc["links"]} == {
        ("zoho", zid, False), ("dent", did, False)}
    status = doc["fields"]["status"]
    assert (status["value"], status["source"], status["rule"]) == ("booked", "zoho", "created")
    assert doc["fields"]["start"]["value"] == appt.start.strftime("%Y-%m-%dT%H:%M:%SZ")
    patient = doc["fields"]["patient"]
    assert patient["value"] is None and patient["hash"] and patient["source"] == "zoho"
    [create] = [h for h in _entries(doc, "write", "dent")]
    assert create["outcome"] == "ok" and create["detail"].startswith(f"created as {did}")
    assert "echo confirmed" in create["detail"], create
    assert {"status", "start", "patient"} <= set(create["fields"])
    assert _entries(doc, "read", "zoho")[-1]["outcome"] == "created"
    assert set(doc["history"][0]) == {"at", "kind", "connector", "fields", "outcome", "detail"}
    assert [h["at"] for h in doc["history"]] == sorted((h["at"] for h in doc["history"]), reverse=True)

    # -- notes edited in Zoho: one side changed it
    await world.edit("zoho", zid, {"Additional_Information": "Second visit, bring the X-rays"})
    result = await world.resync_within()
    assert result.exit_code == 0, result.document
    doc = await _explain(world, cid)
    notes = doc["fields"]["notes"]
    assert (notes["value"], notes["source"], notes["rule"]) == (None, "zoho", "only_change")
    zoho_modified = _parse((await world.record("zoho", zid))["Modified_Time"]).astimezone(UTC)
    assert notes["changed_at"] == zoho_modified.strftime("%Y-%m-%dT%H:%M:%SZ")
    first_hash = notes["hash"]
    newest_write = _entries(doc, "write", "dent")[0]
    assert newest_write["fields"] == ["notes"] and newest_write["outcome"] == "ok"
    assert _entries(doc, "merge", "zoho")[0]["fields"] == ["notes"]

    # -- a GET/PUT race: another Dentally user moves it an hour right before syncd's pre-write re-read
    dent_before = await world.record("dent", did)
    new_start = _parse(dent_before["start_time"]) + timedelta(hours=1)
    new_end = _parse(dent_before["finish_time"]) + timedelta(hours=1)
    moved = {"start_time": _ms_z(new_start), "finish_time": _ms_z(new_end)}
    await world.edit("zoho", zid, {"Additional_Information": OUR_NOTE})
    await world.fault("dent", "GET", "/v1/appointments/*", {"type": "mutate_before", "id": did, "changes": moved})
    result = await world.resync_within()
    assert result.exit_code == 0, result.document
    assert result.document["connectors"]["dent"]["retried"] >= 1, result.document
    dent_now = await world.record("dent", did)
    assert dent_now["notes"] == OUR_NOTE and _parse(dent_now["start_time"]) == new_start
    settle = await world.resync_within()
    assert settle.exit_code == 0, settle.document
    doc = await _explain(world, f"dent:{did}")
    start = doc["fields"]["start"]
    assert (start["value"], start["source"], start["rule"]) == (new_start.strftime("%Y-%m-%dT%H:%M:%SZ"), "dent",
                                                                "only_change")
    assert doc["fields"]["end"]["source"] == "dent"
    assert doc["fields"]["notes"]["source"] == "zoho" and doc["fields"]["notes"]["hash"] != first_hash
    raced = [h for h in _entries(doc, "write", "dent") if h["outcome"] == "conflict"]
    assert raced and "GET/PUT race" in raced[0]["detail"], doc["history"]
    retried = [h for h in _entries(doc, "write", "dent") if h["outcome"] == "ok" and "retried" in (h["detail"] or "")]
    assert retried and "notes" in retried[0]["fields"], doc["history"]
    [reread] = [h for h in _entries(doc, "read", "dent") if "re-read after a write conflict" in (h["detail"] or "")]
    assert set(reread["fields"]) == {"start", "end"}, reread  # what Dentally changed; the notes are zoho's
    carried = _entries(doc, "write", "zoho")
    assert carried and "start" in carried[0]["fields"] and carried[0]["outcome"] == "ok"
    assert "GET/PUT race on dent" in carried[0]["detail"]

    # -- a patient change in Zoho: Dentally forbids it in place, so syncd replaces the appointment
    other = next(p for p in world.dataset.patients if p.key != appt.patient)
    module, contact = world.external("zoho", "patient", other.key).split(":", 1)
    await world.edit("zoho", zid, {"Appointment_For": {"module": module, "id": contact}})
    result = await world.resync_within()
    assert result.exit_code == 0, result.document
    new_did = await world.link(cid, "dent")
    assert new_did != did
    doc = await _explain(world, f"dent:{did}")  # the retired id still finds it
    assert doc["canonical_id"] == cid
    assert {(lk["external_id"], lk["retired"]) for lk in doc["links"] if lk["connector"] == "dent"} == {
        (did, True), (new_did, False)}
    patient_now = doc["fields"]["patient"]
    assert (patient_now["value"], patient_now["source"], patient_now["rule"]) == (None, "zoho", "only_change")
    assert patient_now["hash"] != patient["hash"]
    [replace] = [h for h in _entries(doc, "write", "dent") if h["outcome"] == "replaced"]
    assert "patient" in replace["fields"]
    assert f"created {new_did}" in replace["detail"] and f"old {did} retired" in replace["detail"]

    # -- no patient data anywhere in explain's output, JSON or human
    human = await _cli(world, "explain", cid)
    assert human.exit_code == 0, human.stderr
    assert human.stdout.startswith(f"appointment {cid}") and "replaced" in human.stdout
    _assert_no_phi(world, human.stdout + json.dumps(doc))
    for other_appt in world.dataset.appointments:
        _assert_no_phi(world, json.dumps(await _explain(world, other_appt.key)))


async def test_explain_exit_codes_and_pruning(world: World) -> None:
    cid = world.dataset.appointments[0].key
    for ref in ("A-unknown", "zoho:0000000", "dent:999999"):
        result = await _cli(world, "explain", ref, "--json")
        assert result.exit_code == 1, (ref, result.stdout)
        assert json.loads(result.stdout)["error"]["code"] == "not_found"
    for ref in ("nope:1", "has space", "zoho:", "a" * 65, ""):
        result = await _cli(world, "explain", ref, "--json")
        assert result.exit_code == 2, (ref, result.stdout)
        assert json.loads(result.stdout)["error"]["code"] == "usage_error"
    assert (await _cli(world, "explain", "nope:1")).exit_code == 2

    # entries older than history_days go, by resync (and by the daemon's maintenance job, same function)
    ledger = await world.ledger()
    try:
        old = datetime.now(UTC) - timedelta(days=91)
        async with ledger.transaction() as tx:
            await tx.add_lineage([LineageEntry(at=old, canonical_id=cid, kind="write", action="update",
                                               connector="dent", outcome="ok", detail="ancient")])
        before = await lineage.explain(world.config, ledger, cid)
        assert before is not None and any(h["detail"] == "ancient" for h in before["history"])
    finally:
        await ledger.close()
    resynced = await world.resync_within()
    assert resynced.exit_code == 0, resynced.document
    after = await _explain(world, cid)
    assert not any(h["detail"] == "ancient" for h in after["history"])
    assert after["history"] and after["fields"]["status"]["rule"] == "created"  # recent entries stay


async def test_prune_is_bounded_and_by_age(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    async with ledger.transaction() as tx:
        await tx.add_lineage([LineageEntry(at=now - timedelta(days=100 + i), canonical_id="A-1", kind="read",
                                           action="read", outcome="changed") for i in range(5)]
                             + [LineageEntry(at=now - timedelta(days=10), canonical_id="A-1", kind="read",
                                             action="read", outcome="recent")])
    async with ledger.transaction() as tx:
        assert await tx.prune_lineage(now - timedelta(days=90), limit=3) == 3
    assert await lineage.prune(ledger, 90, now=now) == 2
    assert await lineage.prune(ledger, 90, now=now) == 0
    async with ledger.transaction(readonly=True) as tx:
        left = await tx.lineage_of("A-1")
    assert [e.outcome for e in left] == ["recent"]
    assert await lineage.prune(ledger, 5, now=now) == 1


async def test_the_daemon_prunes_old_lineage_at_start(tmp_path: Path) -> None:
    """``syncd run``'s maintenance job (first run at start) deletes lineage older than history_days and
    keeps the rest; a real daemon process, SQLite ledger."""
    async with synced_pair(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, source="zoho",
                           n=1) as world:
        text = world.config_path.read_text(encoding="utf-8")
        world.config_path.write_text(text.replace("[ledger]\n", "[ledger]\nhistory_days = 30\n", 1), encoding="utf-8")
        with_server(world, free_port())
        assert world.config.ledger.history_days == 30
        cid = world.dataset.appointments[0].key
        ledger = await world.ledger()
        try:
            async with ledger.transaction() as tx:
                await tx.add_lineage([LineageEntry(at=datetime.now(UTC) - timedelta(days=31), canonical_id=cid,
                                                   kind="write", action="update", connector="dent", outcome="ok",
                                                   detail="a month old")])
        finally:
            await ledger.close()

        async def details() -> list[str | None]:
            opened = await world.ledger()
            try:
                async with opened.transaction(readonly=True) as tx:
                    return [e.detail for e in await tx.lineage_of(cid)]
            finally:
                await opened.close()

        assert "a month old" in await details()
        daemon = DaemonProcess(world.config_path, world.config.server.port, tmp_path)
        daemon.start()
        try:
            await daemon.ready()
            left = await eventually(details, lambda d: "a month old" not in d, timeout=15, what="the prune")
            assert left  # the recent entries stay
        finally:
            await daemon.stop()
