"""Two ``syncd run`` replicas on one PostgreSQL ledger split the connectors' poll leases; one killed with
SIGKILL hands its leases over and the survivor finishes the work, exactly once in every vendor; a
replica that joins later gets its share; a clean stop gives every lease back (docs/operations.md
"Replicas", README "Replicas")."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.ledger.store import Ledger
from tests.daemon_support import DaemonProcess, cli, eventually
from tests.reliability.harness import daemon_replica, polled_world, stop_daemons
from tests.scenarios.convergence_support import ADAPTERS
from tests.scenarios.harness import World

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)]

LEASE = 4.0
MEMBERS = {"zoho": "zoho_crm", "dentally": "dentally", "sf": "salesforce_health"}
INITIAL = 2


async def _status(world: World) -> dict[str, Any]:
    code, out, err = await cli(world.config_path, "status", "--json")
    assert code in (0, 1), err
    document: dict[str, Any] = json.loads(out)
    return document


async def _pollers(world: World) -> dict[str, str]:
    """connector -> the holder of its poll lease, as ``syncd status --json`` shows it."""
    leases = (await _status(world))["daemon"]["leases"]
    return {row["name"].removeprefix("poll:"): row["holder"] for row in leases if row["name"].startswith("poll:")}


def _pid_of(holder: str) -> int:
    return int(holder.rsplit(":", 1)[-1])


async def _copies(world: World) -> dict[str, list[str]]:
    """Per vendor, the notes of every appointment it holds (one entry per record)."""
    out: dict[str, list[str]] = {}
    for name, vendor in MEMBERS.items():
        adapter = ADAPTERS[vendor]
        out[name] = sorted(str(adapter.view(r).notes) for r in await world.records(name) if adapter.is_appointment(r))
    return out


@pytest.mark.timeout(240)
async def test_replicas_split_the_poll_leases_and_a_survivor_finishes_a_killed_ones_work(
    tmp_path: Path, ledger_url: str
) -> None:
    world, base = await polled_world(tmp_path, ledger_url, MEMBERS, {"zoho": INITIAL}, n_appointments=INITIAL + 6)
    daemons: list[DaemonProcess] = []
    try:

        def replica(name: str) -> DaemonProcess:
            daemons.append(daemon_replica(tmp_path, base, name, {"SYNCD_LEASE_SECONDS": str(LEASE)}))
            return daemons[-1]

        a, b = replica("a"), replica("b")
        a.start()
        b.start()
        await a.ready(timeout=30)
        await b.ready(timeout=30)
        assert a.proc is not None and b.proc is not None
        b_pid = b.proc.pid
        pids = {a.proc.pid, b_pid}

        def split(pollers: dict[str, str]) -> bool:
            return set(pollers) == set(MEMBERS) and {_pid_of(h) for h in pollers.values()} == pids

        pollers = await eventually(lambda: _pollers(world), split, timeout=30, what="the poll leases split", interval=1)
        _code, text, _ = await cli(world.config_path, "status")
        for name, holder in pollers.items():
            assert f"lease: poll:{name} held by {holder} until " in text, text

        def initial_done(copies: dict[str, list[str]]) -> bool:
            return all(len(notes) == INITIAL for notes in copies.values())

        await eventually(
            lambda: _copies(world), initial_done, timeout=60, what="the first sync everywhere", interval=0.5
        )
        # A dies with SIGKILL; then a new appointment in every vendor, A's included
        a_polled = sorted(n for n, h in pollers.items() if _pid_of(h) == a.proc.pid)
        await a.kill9()
        for n, (name, vendor) in enumerate(MEMBERS.items()):
            adapter = ADAPTERS[vendor]
            record = adapter.new_record(world.dataset, world.dataset.appointments[INITIAL + n].key)
            record.update(adapter.notes(f"Replica test {n}"))
            await world.control(name, "POST", "/_sandbox/records", {"records": [record]})

        def only_b(pollers: dict[str, str]) -> bool:
            return set(pollers) == set(MEMBERS) and {_pid_of(h) for h in pollers.values()} == {b_pid}

        await eventually(
            lambda: _pollers(world), only_b, timeout=30, what=f"B taking over A's leases {a_polled}", interval=1
        )
        total = INITIAL + len(MEMBERS)

        def all_done(copies: dict[str, list[str]]) -> bool:
            return all(len(notes) >= total for notes in copies.values())

        await eventually(
            lambda: _copies(world), all_done, timeout=60, what="the survivor syncing every change", interval=0.5
        )
        copies = await _copies(world)
        for name, notes in copies.items():  # exactly once in every vendor
            assert len(notes) == total, (name, notes)
            for n in range(len(MEMBERS)):
                assert notes.count(f"Replica test {n}") == 1, (name, notes)
        # a replica that joins gets its share: B gives back what is over it
        c = replica("c")
        c.start()
        await c.ready(timeout=30)
        assert c.proc is not None
        pids = {b_pid, c.proc.pid}
        await eventually(
            lambda: _pollers(world), split, timeout=30, what="B sharing the poll leases with C", interval=1
        )
        # a clean stop gives the leases back at once
        await c.stop()
        leases = (await _status(world))["daemon"]["leases"]
        assert not [row for row in leases if _pid_of(row["holder"]) == c.proc.pid], leases
        assert await _copies(world) == copies
    finally:
        await stop_daemons(daemons, world)


@pytest.mark.timeout(120)
async def test_a_lease_held_by_a_replica_on_another_host_is_taken_only_once_it_expires(
    tmp_path: Path, ledger_url: str
) -> None:
    """A replica of another host that stopped renewing (its process cannot be checked from here) keeps
    its poll lease until the lease expires; then this host's replica takes it and polls that connector."""
    members = {"zoho": "zoho_crm", "dentally": "dentally"}
    world, base = await polled_world(tmp_path, ledger_url, members, {"zoho": 1}, n_appointments=2)
    daemons: list[DaemonProcess] = []
    try:
        ledger = await Ledger.open(world.config.ledger.url)
        try:
            await ledger.upgrade()
            async with ledger.transaction() as tx:  # the other host's replica, gone quiet just now
                for name in ("poll:zoho", "replica:elsewhere"):
                    assert await tx.lease_acquire(name, "run:elsewhere.example:1", 3 * LEASE)
            expires = time.monotonic() + 3 * LEASE
        finally:
            await ledger.close()
        here = daemon_replica(tmp_path, base, "here", {"SYNCD_LEASE_SECONDS": str(LEASE)})
        daemons.append(here)
        here.start()
        await here.ready(timeout=30)
        pollers = await _pollers(world)
        assert pollers["zoho"] == "run:elsewhere.example:1", pollers
        # nothing of zoho's reaches Dentally meanwhile
        assert not [r for r in await world.records("dentally") if ADAPTERS["dentally"].is_appointment(r)]

        def taken(pollers: dict[str, str]) -> bool:
            return pollers.get("zoho", "").startswith("run:") and "elsewhere" not in pollers["zoho"]

        await eventually(lambda: _pollers(world), taken, timeout=40, what="the expired lease taken", interval=1)
        assert time.monotonic() >= expires, "taken before the other host's lease expired"

        async def copies() -> int:
            return sum(1 for r in await world.records("dentally") if ADAPTERS["dentally"].is_appointment(r))

        await eventually(copies, lambda n: n == 1, timeout=30, what="zoho polled by this host's replica")
    finally:
        await stop_daemons(daemons, world)
