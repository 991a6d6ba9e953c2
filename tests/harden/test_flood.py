"""A burst of 10,000 webhook deliveries against a real ``syncd run`` (subprocess, real ledger, sandboxes)
whose engine is held back by a slow vendor: intake stays bounded (docs/reference.md §5). Every 202 is
in the inbox and is processed afterwards; every other answer is 503 with ``Retry-After``; ``/readyz``
says intake is full while it is; the daemon's memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from connectors.salesforce_health.webhook import sign
from syncd.config import load_config
from syncd.ledger.store import Ledger
from tests.daemon_support import WEBHOOK_SECRET, DaemonProcess, eventually, free_port
from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
SF_READ = "/services/data/v*/composite/sobjects/ServiceAppointment"
DELIVERIES = 10_000
CONCURRENCY = 200
BACKLOG = 300
PENDING = 64


async def _world(tmp_path: Path, ledger_url: str, port: int) -> World:
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=3,
                             connector_extra={"zoho": {"poll_interval": 0}, "sf": {"poll_interval": 0}})
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        first = await world.resync()
        assert first.exit_code == 0, first.document
        text = world.config_path.read_text(encoding="utf-8")
        text += (f'\n[server]\nhost = "127.0.0.1"\nport = {port}\nmax_inbox_backlog = {BACKLOG}\n'
                 f"max_pending_deliveries = {PENDING}\n")
        world.config_path.write_text(text, encoding="utf-8")
        world.config = load_config(str(world.config_path))
    except BaseException:
        await world.stop()
        raise
    return world


def _delivery(seq: int, sf_ids: list[str]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ids": [sf_ids[seq % len(sf_ids)]], "seq": seq}, separators=(",", ":")).encode()
    stamp = str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-Syncd-Timestamp": stamp,
                  "X-Syncd-Signature": "v1=" + sign(WEBHOOK_SECRET, stamp, body)}


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _inbox(ledger: Ledger) -> tuple[int, int]:
    async with ledger.engine.connect() as conn:
        total = (await conn.execute(sa.text("SELECT count(*) FROM inbox WHERE connector = 'sf'"))).scalar_one()
        pending = (await conn.execute(sa.text(
            "SELECT count(*) FROM inbox WHERE connector = 'sf' AND processed_at IS NULL"))).scalar_one()
    return int(total), int(pending)


async def test_a_flood_is_absorbed_with_bounded_intake_and_no_lost_202(tmp_path: Path, ledger_url: str) -> None:
    port = free_port()
    world = await _world(tmp_path, ledger_url, port)
    daemon = DaemonProcess(world.config_path, port, tmp_path)
    try:
        sf_ids = [r["Id"] for r in await world.records("sf")]
        # the engine's re-reads take 6 s each: the inbox fills faster than it drains
        await world.fault("sf", "GET", SF_READ, {"type": "delay", "seconds": 6}, times=1000)
        daemon.start()
        await daemon.ready()
        assert daemon.proc is not None
        answers: Counter[int] = Counter()
        codes: Counter[str] = Counter()
        missing_retry_after = 0
        queue: asyncio.Queue[int] = asyncio.Queue()
        for seq in range(DELIVERIES):
            queue.put_nowait(seq)
        ready_seen: list[tuple[int, list[str]]] = []

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal missing_retry_after
            while True:
                try:
                    seq = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body, headers = _delivery(seq, sf_ids)
                async with session.post(f"{daemon.url}/webhooks/sf", data=body, headers=headers) as response:
                    answers[response.status] += 1
                    document = await response.json(content_type=None)
                    if response.status == 503:
                        codes[document.get("error")] += 1
                        if not response.headers.get("Retry-After", "").isdigit():
                            missing_retry_after += 1
                    elif response.status == 202:
                        assert document == {"accepted": 1}, document
                if seq == DELIVERIES // 2:
                    async with session.get(f"{daemon.url}/readyz") as ready:
                        ready_seen.append((ready.status, (await ready.json()).get("failed", [])))

        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
            await asyncio.gather(*(worker(s) for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started
        accepted = answers[202]
        assert set(answers) <= {202, 503} and sum(answers.values()) == DELIVERIES, answers
        assert answers[503] > 0 and accepted >= BACKLOG, (answers, elapsed)
        assert missing_retry_after == 0 and set(codes) == {"intake_full"}, codes
        assert ready_seen and ready_seen[0][0] == 503, ready_seen
        assert any(f.startswith("intake:") for f in ready_seen[0][1]), ready_seen
        peak_mb = _peak_rss_kb(daemon.proc.pid) / 1024
        assert peak_mb < 400, f"daemon peak RSS {peak_mb:.0f} MB"

        # every 202 is a row of the inbox (nothing answered 202 was lost) ...
        ledger = await world.ledger()
        total, _ = await _inbox(ledger)
        assert total == accepted, (total, answers)
        # ... and the daemon processes every one of them once the vendor answers again
        await world.control("sf", "DELETE", "/_sandbox/faults")
        await eventually(lambda: _inbox(ledger), lambda t: t[1] == 0, timeout=90, what="the inbox drained")
        assert (await _inbox(ledger))[0] == accepted
        _status, body = await eventually(lambda: daemon.get("/readyz"), lambda r: r[0] == 200, timeout=15,
                                        what="/readyz back to 200")
        assert body == {"status": "ready"}
        print(f"flood: {DELIVERIES} deliveries in {elapsed:.1f}s: {dict(answers)}, peak RSS {peak_mb:.0f} MB")
    finally:
        try:
            await daemon.stop()
        finally:
            await world.stop()
