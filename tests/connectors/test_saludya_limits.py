"""SaludYa's scan budget and write priority (docs/vendors/saludya.md §2 "Budget" and "Guard", §7), enforced
by the HTTP client's limiter, over the SaludYa sandbox (which enforces its quotas and sends X-RateLimit-*).

- Guard: once an answer shows 20 or fewer calls left, scan passes wait until X-RateLimit-Reset (held back
  where the pass may not wait that long); writes go on until the vendor's own 429.
- Budget: scans may use 600 of the 1,000 daily calls: past its budget a scan is held back, writes go on.
- Queue: a write waiting for the rate limit leaves before a scan page that queued first.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from connectors.saludya import PACKAGE as SALUDYA_PACKAGE
from connectors.saludya.connector import SaludYaConnector, ScanState
from syncd.config import ConnectorConfig
from syncd.connector import ChangePage, MemoryStateStore, VendorRecord, WriteKind, WriteRequest
from syncd.errors import HeldBack, RateLimited
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kits.saludya import KIT, TIMEZONE, control

load_vendor_mapping = SALUDYA_PACKAGE.load_mapping

LIST = ("GET", "/api/appointments")


def _connector(sb: RunningSandbox, *, rps: float = 500.0, max_wait: float | None = 30.0,
               **options: object) -> SaludYaConnector:
    config = ConnectorConfig(name="saludya", type="saludya", base_url=sb.url, poll_interval=300.0,
                             timezone=TIMEZONE, max_requests_per_second=rps, auth={"api_key": Secret("sandbox-key")})
    mapping = load_vendor_mapping()
    if options:
        mapping = dataclasses.replace(mapping, options={**mapping.options, **options})
    return SaludYaConnector(config, mapping, state=MemoryStateStore(), max_rate_limit_wait=max_wait)


async def _count(sb: RunningSandbox, method: str, route: str) -> int:
    rows = (await control(sb, "GET", "/_sandbox/requests"))["requests"]
    return sum(r["count"] for r in rows if r["method"] == method and r["route"] == route)


def _note(record: VendorRecord, text: str) -> WriteRequest:
    assert record.appointment is not None
    return WriteRequest(WriteKind.UPDATE, "apt_limits", record.appointment.with_changes(notes=text),
                        external_id=record.external_id, current=record, changed=frozenset({"notes"}))


@pytest.fixture
async def quota_sandbox() -> AsyncIterator[RunningSandbox]:
    """Quotas on, 24 calls per 15 minutes, the sandbox clock one minute into a window far ahead (so that
    the reset is far away and the test never straddles a window edge)."""
    sb = await start_sandbox("saludya", port=0, timezone=TIMEZONE, per_15min=24, per_hour=300, per_day=1000)
    try:
        await control(sb, "POST", "/_sandbox/clock", {"now": f"{datetime.now(UTC).year + 1}-01-10T10:01:00Z"})
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def open_sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox("saludya", port=0, timezone=TIMEZONE, rate_limits=False)
    try:
        yield sb
    finally:
        await sb.stop()


async def test_scans_stop_at_20_calls_left_and_writes_go_on_until_the_429(quota_sandbox: RunningSandbox) -> None:
    sb = quota_sandbox
    [rid] = await KIT.seed(sb, 1)
    conn = _connector(sb)
    try:
        for _ in range(4):  # 24 per window: the fourth answer shows 20 left
            record = (await conn.read([rid]))[rid]
        assert conn.http.quota is not None and conn.http.quota.remaining == 20
        with pytest.raises(HeldBack) as held:
            [page async for page in conn.changes(None)]
        assert held.value.code == "QUOTA_RESERVED" and held.value.wait > 30
        assert await _count(sb, *LIST) == 0  # no scan page was sent
        written = 0
        with pytest.raises(RateLimited) as limited:
            for n in range(20):
                [outcome] = await conn.write([_note(record, f"call {n}")])
                assert outcome.ok, outcome.error
                record = outcome.record or record
                written += 1
        assert not isinstance(limited.value, HeldBack) and limited.value.code == "RATE_LIMIT_EXCEEDED"
        assert written == 10  # the 20 calls left: a re-read and a PUT each, then SaludYa's 429
        assert await _count(sb, "PUT", "/api/appointments/{id}") == 10
    finally:
        await conn.close()


async def test_past_the_daily_scan_budget_scans_are_held_back_and_writes_go_on(open_sandbox: RunningSandbox) -> None:
    sb = open_sandbox
    ids = await KIT.seed(sb, 250)  # three list pages
    conn = _connector(sb, daily_call_budget=2)
    try:
        pages: list[ChangePage] = []
        with pytest.raises(HeldBack) as held:
            async for page in conn.changes(None):
                pages.append(page)
        assert held.value.code == "BUDGET_SPENT" and 0 < held.value.wait <= 86_400
        assert len(pages) == 2 and await _count(sb, *LIST) == 2
        # the pass resumes from its cursor on a later day; today it sends nothing
        with pytest.raises(HeldBack):
            [page async for page in conn.changes(pages[-1].cursor)]
        assert await _count(sb, *LIST) == 2
        record = (await conn.read([ids[0]]))[ids[0]]
        [outcome] = await conn.write([_note(record, "still written")])
        assert outcome.ok and outcome.sent
    finally:
        await conn.close()


async def test_a_write_leaves_the_request_queue_before_a_scan_page_queued_first(open_sandbox: RunningSandbox) -> None:
    """One request per second: a scan pass is waiting for its second page when a write arrives; the
    write's re-read and PUT go first, the scan's pages after."""
    sb = open_sandbox
    ids = await KIT.seed(sb, 250)
    conn = _connector(sb, rps=1.0)
    try:
        record = (await conn.read([ids[0]]))[ids[0]]
        first_page = asyncio.Event()

        async def scan() -> int:
            pages = 0
            async for _page in conn.changes(None):
                pages += 1
                first_page.set()
            return pages

        scanning = asyncio.create_task(scan())
        await asyncio.wait_for(first_page.wait(), 30)
        await asyncio.sleep(0.05)  # the scan's next page is queued now
        assert conn.http.limiter.waiting == 1
        [outcome] = await asyncio.wait_for(conn.write([_note(record, "urgent")]), 30)
        assert outcome.ok and outcome.sent
        assert await _count(sb, *LIST) == 1  # the write went before the page that queued first
        assert await asyncio.wait_for(scanning, 30) == 3
        assert await _count(sb, *LIST) == 3
    finally:
        await conn.close()


def test_the_scan_budget_is_reported_once_a_day() -> None:
    """Budget: while the planned scans exceed 600 calls a day even at k = 8, ``saludya scan budget
    exceeded`` is logged once that day, not on every full pass."""
    conn = _connector_offline()
    state = ScanState(pages={"hot": 20, "near": 100, "full": 600})
    today = datetime.now(UTC).date()
    with capture_logs() as logs:
        conn._budget(state, today)
        conn._budget(state, today)
    assert state.k == 8
    assert [e["event"] for e in logs].count("saludya scan budget exceeded") == 1


def _connector_offline() -> SaludYaConnector:
    config = ConnectorConfig(name="saludya", type="saludya", base_url="http://127.0.0.1:9", poll_interval=300.0,
                             timezone=TIMEZONE, max_requests_per_second=1.0, auth={"api_key": Secret("k")})
    return SaludYaConnector(config, load_vendor_mapping(), state=MemoryStateStore())
