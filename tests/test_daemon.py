"""``syncd run`` as operators run it: a real subprocess against real sandboxes and a real ledger.

Each test writes its own config (sandboxes started here on free ports, a free port for
``[server]``), starts ``sys.executable -m syncd run`` and drives it from outside: signed webhooks,
signals, ``/readyz``, a fake ``NOTIFY_SOCKET``, the sandboxes' request counters, and the
``status --json`` / ``resync --json`` commands.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.daemon_support import (
    DaemonProcess,
    TcpProxy,
    cli,
    eventually,
    free_port,
    request_counts,
    sf_webhook,
    with_server,
)
from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
SF_READ = "/services/data/v*/composite/sobjects/ServiceAppointment"
SF_READ_ROUTE = ("GET", "/services/data/v65.0/composite/sobjects/ServiceAppointment")


async def _world(tmp_path: Path, ledger_url: str, *, n: int, polls: dict[str, float],
                 sync_first: bool = True) -> World:
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=n,
                             connector_extra={name: {"poll_interval": p} for name, p in polls.items()})
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        if sync_first:
            first = await world.resync()
            assert first.exit_code == 0, first.document
            assert first.document["connectors"]["sf"]["created"] == n
        with_server(world, free_port())
    except BaseException:
        await world.stop()
        raise
    return world


def _daemon(world: World, tmp_path: Path, **env: str) -> DaemonProcess:
    return DaemonProcess(world.config_path, world.config.server.port, tmp_path, env=env)


async def _cleanup(world: World, *daemons: DaemonProcess) -> None:
    try:
        for daemon in daemons:
            await daemon.stop()
    finally:
        await world.stop()


async def _zoho_has(world: World, zoho_id: str, notes: str) -> bool:
    """Whether the Zoho record's notes are ``notes`` (a bool: record contents never reach test output)."""
    return bool((await world.record("zoho", zoho_id)).get("Additional_Information") == notes)


async def _sf_reads(world: World) -> int:
    """Batch reads Salesforce has answered (or is answering)."""
    return (await request_counts(world, "sf")).get(SF_READ_ROUTE, 0)


async def _pair(world: World) -> tuple[str, str]:
    """(Salesforce id, Zoho id) of one synced appointment."""
    sf = (await world.records("sf"))[0]
    canonical_id = sf["Syncd_Id__c"]
    return sf["Id"], await world.link(canonical_id, "zoho")


# -- webhooks: once only, and durable across kill -9 ------------------------------------------------


@pytest.fixture
async def webhook_world(tmp_path: Path, ledger_url: str) -> AsyncIterator[tuple[World, DaemonProcess]]:
    """Zoho and Salesforce synced by a first resync; a daemon that never polls (webhooks only)."""
    world = await _world(tmp_path, ledger_url, n=2, polls={"zoho": 0, "sf": 0})
    daemon = _daemon(world, tmp_path)
    try:
        yield world, daemon
    finally:
        await _cleanup(world, daemon)


async def test_same_delivery_twice_is_processed_once(webhook_world: tuple[World, DaemonProcess]) -> None:
    world, daemon = webhook_world
    sf_id, zoho_id = await _pair(world)
    daemon.start()
    await daemon.ready()
    await world.edit("sf", sf_id, {"Comments": "moved to the afternoon"})
    zoho_writes = await world.write_requests("zoho")
    body, headers = sf_webhook([sf_id])

    reads = await _sf_reads(world)
    assert await daemon.post_webhook("sf", body, headers) == (202, {"accepted": 1})
    await eventually(lambda: _zoho_has(world, zoho_id, "moved to the afternoon"), bool,
                     timeout=10, what="the change to reach Zoho")
    reads_after = await _sf_reads(world)
    assert reads_after == reads + 1

    # the very same delivery again (a vendor retry): accepted, stored once, never re-read
    assert await daemon.post_webhook("sf", body, headers) == (202, {"accepted": 1})
    await _no_pending_inbox(world)
    await asyncio.sleep(0.5)  # time for a (wrong) second processing to show up
    assert await _sf_reads(world) == reads_after
    assert await world.write_requests("zoho") == zoho_writes + 1
    assert (await world.table_counts())["inbox"] == 1


async def _no_pending_inbox(world: World) -> None:
    async def probe() -> dict[str, int]:
        ledger = await world.ledger()
        try:
            summaries = await ledger.summaries(list(MEMBERS))
        finally:
            await ledger.close()
        return {name: summary.inbox_pending for name, summary in summaries.items()}

    await eventually(probe, lambda pending: not any(pending.values()), timeout=10, what="an empty inbox",
                     interval=0.2)


async def test_accepted_delivery_survives_kill_9(webhook_world: tuple[World, DaemonProcess]) -> None:
    world, daemon = webhook_world
    sf_id, zoho_id = await _pair(world)
    daemon.start()
    await daemon.ready()
    await world.edit("sf", sf_id, {"Comments": "patient asked for a call"})
    # Salesforce answers the daemon's re-read only after 3 s: it is killed long before that
    await world.fault("sf", "GET", SF_READ, {"type": "delay", "seconds": 3})
    body, headers = sf_webhook([sf_id])
    reads = await _sf_reads(world)

    assert await daemon.post_webhook("sf", body, headers) == (202, {"accepted": 1})
    await eventually(lambda: _sf_reads(world), lambda n: n > reads,
                     timeout=10, what="the daemon to start re-reading the record")
    await daemon.kill9()
    assert not await _zoho_has(world, zoho_id, "patient asked for a call")

    daemon.start()  # the fault fired once: this time the re-read answers at once
    await daemon.ready()
    await eventually(lambda: _zoho_has(world, zoho_id, "patient asked for a call"), bool,
                     timeout=10, what="the change to reach Zoho after the restart")
    await _no_pending_inbox(world)


# -- SIGTERM during a busy sync, readiness and the systemd protocol ------------------------------------


class NotifySocket:
    """A fake systemd ``NOTIFY_SOCKET``: a unix datagram socket read continuously, as systemd does
    (an unread socket fills up after a few datagrams and blocks the sender)."""

    def __init__(self, directory: Path) -> None:
        if len(str(directory / "notify.sock")) > 100:  # sun_path is 108 bytes
            directory = Path(tempfile.mkdtemp(prefix="syncd-notify-"))
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    async def received(self) -> list[str]:
        return list(self.messages)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.path.unlink(missing_ok=True)


async def test_sigterm_during_a_busy_sync_drains_exits_0_and_leaves_nothing_undone(
    tmp_path: Path, ledger_url: str
) -> None:
    n = 8
    world = await _world(tmp_path, ledger_url, n=n, polls={"zoho": 1, "sf": 0}, sync_first=False)
    notify = NotifySocket(tmp_path)
    daemon = _daemon(world, tmp_path, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    try:
        # every Salesforce create takes 1 s: the first poll's writes are still running at SIGTERM
        await world.fault("sf", "POST", "/services/data/v*/connect/health/appointment-management/appointment",
                          {"type": "delay", "seconds": 1}, times=n)
        daemon.start()
        await daemon.ready()
        await eventually(notify.received, lambda m: "READY=1" in m, timeout=5, what="READY=1")
        await eventually(notify.received, lambda m: "WATCHDOG=1" in m, timeout=5, what="WATCHDOG=1")
        await eventually(lambda: request_counts(world, "sf"),
                         lambda c: any(k[0] == "POST" and "appointment-management" in k[1] for k in c),
                         timeout=10, what="the first writes to Salesforce")

        assert len(await world.records("sf")) < n  # writes still in flight
        daemon.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        status, body = await eventually(lambda: daemon.get("/readyz"), lambda r: r[0] != 200, timeout=5,
                                        what="/readyz to leave 200")
        assert status == 503 and "draining" in body["failed"], (status, body)
        assert await daemon.wait(30) == 0, daemon.log_text()[-3000:]
        assert time.monotonic() - stopped_at < 30
        assert "STOPPING=1" in await notify.received()

        created = len(await world.records("sf"))
        code, out, err = await cli(world.config_path, "resync", "--json")
        doc = json.loads(out)
        assert code == 0, (code, err[-2000:])
        counts = doc["connectors"]
        # only what was legitimately still due (never polled before the stop) is written now
        assert counts["sf"]["created"] == n - created, counts
        assert all(c["updated"] == c["cancelled"] == 0 for c in counts.values()), counts
        assert counts["zoho"]["created"] == 0, counts
        assert len(await world.records("sf")) == n  # nothing written twice
        assert doc["dead_letters"] == doc["open_conflicts"] == 0, doc
    finally:
        notify.close()
        await _cleanup(world, daemon)


async def test_a_write_that_outlives_the_30s_drain_is_abandoned_safely(tmp_path: Path, ledger_url: str) -> None:
    """docs/reference.md: on SIGTERM the daemon "finishes or safely abandons in-flight writes within 30 s, and
    exits 0". Here the vendor holds syncd's create for 45 s: the drain gives up after 30 s, the write
    stays queued (its outcome unknown), and the next pass writes it exactly once."""
    world = await _world(tmp_path, ledger_url, n=1, polls={"zoho": 1, "sf": 0}, sync_first=False)
    daemon = _daemon(world, tmp_path)
    try:
        await world.fault("sf", "POST", "/services/data/v*/connect/health/appointment-management/appointment",
                          {"type": "delay", "seconds": 45})
        daemon.start()
        await daemon.ready()
        await eventually(lambda: request_counts(world, "sf"),
                         lambda c: any(k[0] == "POST" and "appointment-management" in k[1] for k in c),
                         timeout=10, what="the create sent to Salesforce")
        daemon.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert await daemon.wait(45) == 0, daemon.log_text()[-3000:]
        assert time.monotonic() - stopped_at < 37  # 30 s of drain, then cancelled within 5 s
        assert "drain_timeout" in daemon.log_text()
        ledger = await world.ledger()
        try:
            async with ledger.transaction(readonly=True) as tx:
                queued = await tx.outbox_pending("sf", states=("pending", "sending"))
        finally:
            await ledger.close()
        assert [(o.op, o.state, o.attempts) for o in queued] == [("create", "sending", 1)], queued  # not lost
        code, out, err = await cli(world.config_path, "resync", "--json")
        doc = json.loads(out)
        assert code == 0, (code, err[-2000:])
        assert doc["connectors"]["sf"]["created"] == 1, doc
        [record] = await world.records("sf")
        assert record["Syncd_Id__c"] == world.dataset.appointments[0].key
        assert doc["dead_letters"] == doc["open_conflicts"] == 0, doc
    finally:
        await _cleanup(world, daemon)


# -- polling, status, one daemon per SQLite ledger --------------------------------------------------


async def test_poll_interval_zero_is_never_polled_and_status_reports_each_connector(
    tmp_path: Path, ledger_url: str
) -> None:
    world = await _world(tmp_path, ledger_url, n=2, polls={"zoho": 1, "sf": 0})
    daemon = _daemon(world, tmp_path)
    try:
        sf_before = await request_counts(world, "sf")
        started = datetime.now(UTC)
        daemon.start()
        await daemon.ready()
        # zoho (poll_interval = 1) is read at start and then every second ...
        await eventually(lambda: _last_success(world, "zoho"), lambda at: at is not None and at >= started,
                         timeout=10, what="a Zoho poll by the daemon")
        code, out, err = await cli(world.config_path, "status", "--json")
        assert code == 0, err[-2000:]
        doc = json.loads(out)
        # ... while sf (poll_interval = 0) is never read on the daemon's own initiative, not even at start
        assert await request_counts(world, "sf") == sf_before
        assert daemon.proc is not None and daemon.proc.poll() is None
        zoho = doc["connectors"]["zoho"]
        assert zoho["last_success_at"] is not None and zoho["cursor"] is not None
        last = datetime.strptime(zoho["last_success_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((last - started).total_seconds()) < 10 and zoho["lag_s"] < 10, zoho
        for name in MEMBERS:
            info = doc["connectors"][name]
            for key in ("last_success_at", "cursor", "lag_s", "inbox_pending", "outbox_pending",
                        "dead_letters", "open_conflicts", "last_error"):
                assert key in info, (name, key)
            assert info["inbox_pending"] == info["outbox_pending"] == 0, (name, info)
            assert info["dead_letters"] == info["open_conflicts"] == 0, (name, info)
        assert doc["connectors"]["sf"]["poll_interval"] == 0
        assert doc["dead_letters"] == doc["open_conflicts"] == 0
    finally:
        await _cleanup(world, daemon)


async def _last_success(world: World, name: str) -> datetime | None:
    ledger = await world.ledger()
    try:
        at = (await ledger.summaries([name]))[name].last_success_at
    finally:
        await ledger.close()
    return None if at is None else at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def test_second_daemon_on_the_same_sqlite_ledger_is_refused(tmp_path: Path) -> None:
    world = await _world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", n=1,
                         polls={"zoho": 0, "sf": 0})
    daemon = _daemon(world, tmp_path)
    try:
        daemon.start()
        await daemon.ready()
        code, _out, err = await cli(world.config_path, "run", timeout=20)
        assert code == 3, err[-2000:]
        assert "another syncd run" in err and "holds this SQLite ledger" in err, err[-2000:]
        assert (await daemon.get("/readyz"))[0] == 200  # the first one is unaffected
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(30) == 0
        # a clean stop hands the ledger back at once (no waiting for the lease to expire)
        ledger = await world.ledger()
        try:
            async with ledger.transaction(readonly=True) as tx:
                assert await tx.lease_holder("syncd-run") is None
        finally:
            await ledger.close()
    finally:
        await _cleanup(world, daemon)


# -- ledger outage: webhooks answer 503, service resumes without a restart ------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
async def test_ledger_outage_answers_503_and_service_resumes_without_restart(
    tmp_path: Path, ledger_url: str
) -> None:
    # the daemon reaches PostgreSQL through a relay this test can cut
    prefix, _, rest = ledger_url.partition("@")
    hostport, _, database = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    world = await _world(tmp_path, f"{prefix}@127.0.0.1:{proxy.port}/{database}", n=1,
                         polls={"zoho": 0, "sf": 0})
    daemon = _daemon(world, tmp_path)
    try:
        sf_id, zoho_id = await _pair(world)
        daemon.start()
        await daemon.ready()
        await world.edit("sf", sf_id, {"Comments": "sent during the outage"})

        await proxy.cut()
        status, body = await daemon.post_webhook("sf", *sf_webhook([sf_id]))
        assert (status, body["error"]) == (503, "ledger_unavailable"), (status, body)
        status, body = await daemon.get("/readyz")
        assert status == 503 and any(f.startswith("ledger") for f in body["failed"]), (status, body)
        assert daemon.proc is not None and daemon.proc.poll() is None

        await proxy.start()  # the vendor retries its delivery: accepted now, by the same process
        await daemon.ready()
        status, body = await daemon.post_webhook("sf", *sf_webhook([sf_id]))
        assert (status, body) == (202, {"accepted": 1})
        await eventually(lambda: _zoho_has(world, zoho_id, "sent during the outage"), bool,
                         timeout=10, what="the change to reach Zoho after the outage")
        assert daemon.starts == 1
    finally:
        await _cleanup(world, daemon)
        await proxy.cut()
