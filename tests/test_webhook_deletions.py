"""A deletion is acted on only once the vendor's own read confirms it, and a confirmed one is synced like any
other change (docs/vendors/dentally.md §2, docs/vendors/zoho_crm.md §2), on SQLite and PostgreSQL.

Dentally: a signed ``appointment.deleted`` is posted to a running ``syncd run`` (a subprocess that never
polls, so the webhook is the only way it learns anything). Zoho: a ``delete`` callback goes through the
real webhook route (:func:`syncd.server.start_server`) and the inbox drain. In both, a deletion of a live
record cancels nothing anywhere and later edits still sync; a real deletion still cancels in the others.
A write that finds its target deleted (a vendor answer, then a re-read) syncs that deletion instead of
opening a conflict.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.dentally.webhook import sign
from syncd.engine.core import Engine
from syncd.passes import drain_inbox
from syncd.runtime import open_runtime
from syncd.server import ServerState, start_server
from tests.daemon_support import DaemonProcess, eventually, free_port, with_server
from tests.scenarios.harness import World, make_world

SECRET = "sandbox-webhook-secret"
ZOHO_CHANNEL = "1000000068001"


async def _synced(tmp_path: Path, ledger_url: str, source: str, members: dict[str, str], *,
                  polls: dict[str, float] | None = None) -> World:
    """``source`` holds two appointments, the other member none; a first resync creates them there."""
    extra = {name: {"poll_interval": p} for name, p in (polls or {}).items()}
    world = await make_world(tmp_path, ledger_url, members, n_appointments=2, connector_extra=extra)
    try:
        await world.seed(source)
        for name in members:
            if name != source:
                await world.seed(name, appointments=False)
        await world.import_crosswalk(appointments_for=[source])
        first = await world.resync_within(15)
        assert first.exit_code == 0, first.document
    except BaseException:
        await world.stop()
        raise
    return world


async def _status(world: World, canonical_id: str) -> str:
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            row = (await tx.appointments([canonical_id]))[canonical_id]
    finally:
        await ledger.close()
    assert row.snapshot is not None
    return str(row.snapshot["status"])


async def _inbox_pending(world: World) -> int:
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            return len(await tx.inbox_pending(limit=1000))
    finally:
        await ledger.close()


def _dentally_event(event: str, record_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": str(uuid.uuid4()), "event": event, "created_at": "2026-11-22T10:15:03Z",
                       "data": {"id": int(record_id), "uuid": str(uuid.uuid4())}}).encode()
    stamp = str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-Syncd-Timestamp": stamp,
                  "X-Syncd-Signature": "v1=" + sign(SECRET, stamp, body)}


# -- Dentally, through a running daemon ------------------------------------------------------------


@pytest.fixture
async def dentally_daemon(tmp_path: Path, ledger_url: str) -> AsyncIterator[tuple[World, DaemonProcess]]:
    members = {"dentally": "dentally", "sf": "salesforce_health"}
    world = await _synced(tmp_path, ledger_url, "dentally", members, polls={"dentally": 0, "sf": 0})
    with_server(world, free_port())
    # the daemon logs at info: the test reads its webhook_deletion_refuted / _confirmed lines
    world.config_path.write_text(world.config_path.read_text().replace('level = "warning"', 'level = "info"'))
    daemon = DaemonProcess(world.config_path, world.config.server.port, tmp_path)
    try:
        daemon.start()
        await daemon.ready()
        yield world, daemon
    finally:
        try:
            await daemon.stop()
        finally:
            await world.stop()


async def _deliver(world: World, daemon: DaemonProcess, event: str, record_id: str) -> None:
    body, headers = _dentally_event(event, record_id)
    assert await daemon.post_webhook("dentally", body, headers) == (202, {"accepted": 1})
    await eventually(lambda: _inbox_pending(world), lambda n: n == 0, timeout=15, what="the inbox drained")


async def test_signed_dentally_deletion_of_a_live_record_cancels_nothing(
    dentally_daemon: tuple[World, DaemonProcess],
) -> None:
    world, daemon = dentally_daemon
    appt = world.dataset.appointments[0]
    dentally_id, sf_id = await world.link(appt.key, "dentally"), await world.link(appt.key, "sf")
    sf_before = await world.record("sf", sf_id)
    writes = {name: await world.write_counts(name) for name in world.types}

    # the appointment is still Confirmed in Dentally: its GET answers 200, so the event is an update
    await _deliver(world, daemon, "appointment.deleted", dentally_id)
    assert (await world.record("sf", sf_id))["StatusCategory"] == sf_before["StatusCategory"] != "Canceled"
    assert await _status(world, appt.key) not in ("cancelled", "entered-in-error")
    assert not [lk for lk in await world.links(appt.key, include_retired=True) if lk.retired]
    assert {name: await world.write_counts(name) for name in world.types} == writes
    assert '"webhook_deletion_refuted"' in daemon.log_text()

    # and it is not terminal: a later edit in Dentally still reaches Salesforce
    await world.edit("dentally", dentally_id, {"notes": "Running ten minutes late"})
    await _deliver(world, daemon, "appointment.updated", dentally_id)

    async def comments() -> Any:
        return (await world.record("sf", sf_id)).get("Comments")

    await eventually(comments, lambda c: c == "Running ten minutes late", timeout=15, what="the edit in sf")

    # a real deletion (GET 404) still cancels it in Salesforce
    await world.control("dentally", "POST", "/_sandbox/records", {"delete": [int(dentally_id)]})
    await _deliver(world, daemon, "appointment.deleted", dentally_id)

    async def category() -> Any:
        return (await world.record("sf", sf_id)).get("StatusCategory")

    await eventually(category, lambda c: c == "Canceled", timeout=15, what="the deletion to cancel it in sf")
    assert await _status(world, appt.key) == "cancelled"
    other = world.dataset.appointments[1]
    assert (await world.record("sf", await world.link(other.key, "sf")))["StatusCategory"] != "Canceled"


# -- Zoho, through the webhook route and the inbox drain -------------------------------------------


def _zoho_callback(ids: list[str], operation: str) -> bytes:
    return json.dumps({"server_time": int(time.time() * 1000), "query_params": {}, "module": "Appointments__s",
                       "resource_uri": "https://www.zohoapis.com/crm/v7/Appointments__s", "ids": ids,
                       "affected_fields": [], "operation": operation, "channel_id": int(ZOHO_CHANNEL),
                       "token": SECRET}).encode()


async def test_zoho_delete_callback_for_a_live_record_cancels_nothing(tmp_path: Path, ledger_url: str) -> None:
    import aiohttp

    members = {"zoho": "zoho_crm", "sf": "salesforce_health"}
    world = await _synced(tmp_path, ledger_url, "zoho", members)
    try:
        appt, other = world.dataset.appointments
        zoho_id, sf_id = await world.link(appt.key, "zoho"), await world.link(appt.key, "sf")
        writes = {name: await world.write_counts(name) for name in world.types}
        async with open_runtime(world.config) as rt:
            await rt.ledger.state_store("zoho").set("watch_channel_id", ZOHO_CHANNEL)
            server = await start_server(world.config, rt.ledger, rt.connectors, ServerState(scheduler_running=True),
                                        port=0, shutdown_timeout=2.0)
            engine = Engine(world.config, rt.ledger, rt.connectors, holder="test")

            async def callback(ids: list[str], operation: str) -> None:
                async with aiohttp.ClientSession() as session, session.post(
                        f"{server.url}/webhooks/zoho", data=_zoho_callback(ids, operation),
                        headers={"Content-Type": "application/json"}) as resp:
                    assert resp.status == 202, await resp.text()
                assert await drain_inbox(engine) == 1

            try:
                # a forged or stale "delete": the batch read still returns the record, so it is an update
                await callback([zoho_id], "delete")
                assert (await world.record("sf", sf_id))["StatusCategory"] != "Canceled"
                assert await _status(world, appt.key) not in ("cancelled", "entered-in-error")
                assert {name: await world.write_counts(name) for name in world.types} == writes

                await world.edit("zoho", zoho_id, {"Additional_Information": "Bring the referral"})
                await callback([zoho_id], "update")
                assert (await world.record("sf", sf_id))["Comments"] == "Bring the referral"

                # really deleted in Zoho (gone from the batch read): cancelled in Salesforce, the other kept
                await world.control("zoho", "POST", "/_sandbox/records", {"delete": [zoho_id]})
                await callback([zoho_id, await world.link(other.key, "zoho")], "delete")
                assert (await world.record("sf", sf_id))["StatusCategory"] == "Canceled"
                assert (await world.record("sf", await world.link(other.key, "sf")))["StatusCategory"] != "Canceled"
            finally:
                await server.stop()
    finally:
        await world.stop()


# -- a write that meets a deleted target ------------------------------------------------------------


async def test_a_write_that_finds_its_target_deleted_syncs_the_deletion(tmp_path: Path, ledger_url: str) -> None:
    """Salesforce's record is deleted while Zoho's notes change: the write to Salesforce meets ENTITY_IS_DELETED,
    the re-read confirms it (null, then GET 404), and that deletion cancels the appointment in Zoho -- a
    deleted record takes no more changes, so there is nothing for a clinic to decide."""
    members = {"zoho": "zoho_crm", "sf": "salesforce_health"}
    world = await _synced(tmp_path, ledger_url, "zoho", members)
    try:
        appt, other = world.dataset.appointments
        zoho_id, sf_id = await world.link(appt.key, "zoho"), await world.link(appt.key, "sf")
        await world.control("sf", "POST", "/_sandbox/records", {"delete": [sf_id]})
        await world.edit("zoho", zoho_id, {"Additional_Information": "Bring the referral"})
        result = await world.resync_within(15)
        assert result.exit_code == 0, (result.document, [c.reason for c in await world.conflicts()])
        assert await world.conflicts() == [] and await world.dead_letters() == []
        assert (await world.record("zoho", zoho_id))["Status"] == "Cancelled"
        assert await _status(world, appt.key) == "cancelled"
        sf_links = [lk for lk in await world.links(appt.key, include_retired=True) if lk.connector == "sf"]
        assert [lk.retired for lk in sf_links] == [True]
        assert (await world.record("zoho", await world.link(other.key, "zoho")))["Status"] == "Scheduled"
        again = await world.resync_within(15)
        assert again.exit_code == 0 and all(
            c["created"] == c["updated"] == c["cancelled"] == 0 for c in again.document["connectors"].values())
    finally:
        await world.stop()
