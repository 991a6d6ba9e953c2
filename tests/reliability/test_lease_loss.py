"""A daemon that loses its lease stops writing at once and exits 3 (docs/reference.md, README "Replicas").

Daemon A is frozen (SIGSTOP, sent by the Dentally sandbox the moment A's create reaches it, the request
left unapplied) for longer than the lease's lifetime; daemon B starts to take the lease over; A is
then resumed (SIGCONT) and must send no vendor write: its create is refused unsent, it says
``lease_lost`` and exits 3. B (once A is gone) creates the appointment: exactly one copy in Dentally.
Runs on SQLite (the ``syncd-run`` lease) and on PostgreSQL (the replicas' poll leases).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess, eventually, request_counts
from tests.reliability.harness import daemon_replica, polled_world, stop_daemons
from tests.scenarios.convergence_support import ADAPTERS
from tests.test_server import SF_ID, Env, env, sf_body, signed  # noqa: F401 (env: the server fixture)

LEASE = 6.0
MEMBERS = {"zoho": "zoho_crm", "dentally": "dentally"}
CREATE = ("POST", "/v1/appointments")


@pytest.mark.timeout(150)
async def test_paused_daemon_that_lost_its_lease_writes_nothing(tmp_path: Path, ledger_url: str) -> None:
    world, base = await polled_world(tmp_path, ledger_url, MEMBERS, {"zoho": 1}, n_appointments=2)
    daemons: list[DaemonProcess] = []
    try:
        env = {"SYNCD_LEASE_SECONDS": str(LEASE)}
        daemons.extend(daemon_replica(tmp_path, base, name, env) for name in ("a", "b"))
        a, b = daemons
        a.start()
        await a.ready(timeout=30)
        dentally = ADAPTERS["dentally"]

        async def copies() -> int:
            return sum(1 for r in await world.records("dentally") if dentally.is_appointment(r))

        await eventually(copies, lambda n: n == 1, timeout=30, what="the first appointment in Dentally")
        assert a.proc is not None
        await world.fault("dentally", *CREATE, {"type": "signal_before_apply", "pid": a.proc.pid,
                                                "signal": int(signal.SIGSTOP)})
        zoho = ADAPTERS["zoho_crm"]
        await world.control("zoho", "POST", "/_sandbox/records",
                            {"records": [zoho.new_record(world.dataset, world.dataset.appointments[1].key)]})

        async def fired() -> int:
            return int((await world.control("dentally", "GET", "/_sandbox/faults"))["fired"].get(
                "signal_before_apply", 0))

        await eventually(fired, lambda n: n == 1, timeout=30, what="A frozen at its Dentally create")
        posts_when_frozen = (await request_counts(world, "dentally")).get(CREATE, 0)
        await asyncio.sleep(LEASE + 1)  # past the lease's lifetime
        b.start()  # on SQLite B may wait for a transaction A was frozen in; it takes the lease when free
        await asyncio.sleep(2)
        a.signal(signal.SIGCONT)
        code = await a.wait(30)
        assert code == 3, a.log_text()[-3000:]
        lines = [json.loads(line) for line in a.log_text().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "lease_lost" for e in lines), a.log_text()[-3000:]
        # A sent no create after it woke up: none it logged, and at most B's one (B takes A's claim over
        # the moment A is gone) besides the frozen one
        lost_at = next(e["timestamp"] for e in lines if e.get("event") == "lease_lost")
        assert not [e for e in lines if e.get("timestamp", "") > lost_at and e.get("connector") == "dentally"
                    and e.get("event") in ("created", "write")], a.log_text()[-3000:]
        assert (await request_counts(world, "dentally")).get(CREATE, 0) <= posts_when_frozen + 1
        await b.ready(timeout=40)
        await eventually(copies, lambda n: n == 2, timeout=60, what="B creating the second appointment once")
        await asyncio.sleep(3)
        assert await copies() == 2
    finally:
        await stop_daemons(daemons, world)


async def test_webhooks_and_readyz_answer_503_once_the_lease_is_lost(env: Env) -> None:  # noqa: F811
    body = sf_body(SF_ID)
    assert (await env.post("sf", body, signed(body)))[0] == 202
    env.state.lease_lost = "another holder (run:elsewhere:1) took the lease"
    status, text = await env.post("sf", body, signed(body))
    assert status == 503 and json.loads(text)["error"] == "lease_lost", text
    status, text = await env.get("/readyz")
    assert status == 503 and "lease lost: another holder" in text, text
