"""Part 7 (rate limits) of each vendor's rules, where it was documented and not yet tested: Salesforce
pauses polling above 90 % of its daily allocation, Zoho keeps at most 5 calls in flight and waits 60 s
doubling to 15 min after a 429 without Retry-After. Over the sandboxes where they enforce the limit.

(SaludYa's budget, guard and write priority: test_saludya_limits.py; Dentally's hourly 403 and Onlive's
429 with Retry-After: their connector tests.)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from connectors import create_connector
from connectors.salesforce_health.connector import SalesforceHealthConnector
from connectors.zoho_crm import PACKAGE as ZOHO_CRM_PACKAGE
from connectors.zoho_crm.client import RateLimitPolicy
from connectors.zoho_crm.connector import ZohoCrmConnector
from syncd.connector import ChangePage, Connector, MemoryStateStore, WriteKind, WriteRequest
from syncd.sandboxkit import RunningSandbox, start_sandbox
from tests.connectors.kit import control, request_counts
from tests.connectors.kits.salesforce_health import KIT as SF
from tests.connectors.kits.zoho_crm import KIT as ZOHO

load_zoho_mapping = ZOHO_CRM_PACKAGE.load_mapping


@pytest.fixture
async def sf_sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox("salesforce_health", port=0, daily_limit=100)
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def zoho_sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox("zoho_crm", port=0, concurrency=5)
    try:
        yield sb
    finally:
        await sb.stop()


async def _drain(conn: Connector, cursor: str | None) -> list[ChangePage]:
    return [page async for page in conn.changes(cursor)]


def _replication(counts: dict[tuple[str, str], int]) -> int:
    return sum(n for (method, route), n in counts.items() if method == "GET" and route.endswith(("/updated/",
                                                                                                 "/deleted/")))


async def test_salesforce_pauses_polling_above_90_percent_of_its_daily_calls(sf_sandbox: RunningSandbox) -> None:
    """docs/vendors/salesforce_health.md §7: past 90 % of the allocation (Sforce-Limit-Info), incremental
    polls make no call and say so once per pass; reads and writes go on."""
    sb = sf_sandbox
    [rid] = await SF.seed(sb, 1)
    conn = create_connector(SF.connector_config(sb.url), state=MemoryStateStore())
    assert isinstance(conn, SalesforceHealthConnector)
    try:
        pages = await _drain(conn, None)
        cursor = pages[-1].cursor
        assert cursor is not None
        polled = _replication(await request_counts(sb))
        assert polled == 0  # the first pass is a window reconciliation
        await _drain(conn, cursor)
        polled = _replication(await request_counts(sb))
        assert polled == 2  # below the line: updated/ and deleted/
        while conn.client.usage_ratio <= 0.9:
            record = (await conn.read([rid]))[rid]
        with capture_logs() as logs:
            paused = await _drain(conn, cursor)
        assert [p.cursor for p in paused] == [cursor] and not paused[0].records
        assert _replication(await request_counts(sb)) == polled  # no poll call above the line
        assert [e["event"] for e in logs].count("polling_paused") == 1
        assert record.appointment is not None
        [outcome] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_usage", record.appointment.with_changes(
            notes="written while polling is paused"), external_id=rid, current=record, changed=frozenset({"notes"}))])
        assert outcome.ok and outcome.sent, outcome.error
    finally:
        await conn.close()


async def _concurrent_reads(conn: Connector, sb: RunningSandbox, ids: list[str]) -> int:
    await control(sb, "POST", "/_sandbox/faults", {"match": {"method": "GET", "path": "/crm/v7/Appointments__s"},
                                                   "times": len(ids), "action": {"type": "delay", "seconds": 0.3}})
    got = await asyncio.wait_for(asyncio.gather(*(conn.read([i]) for i in ids)), 60)
    assert all(got[n][i].appointment is not None for n, i in enumerate(ids))
    return int(conn.http.retried)


async def test_zoho_keeps_at_most_5_calls_in_flight(zoho_sandbox: RunningSandbox) -> None:
    """docs/vendors/zoho_crm.md §7: the connector keeps at most 5 calls in flight besides its rate, so a
    burst of twelve slow reads meets no "concurrency limit exceeded"; the sandbox does answer it once
    the connector is allowed twelve."""
    sb = zoho_sandbox
    ids = await ZOHO.seed(sb, 12)
    conn = create_connector(ZOHO.connector_config(sb.url), state=MemoryStateStore())
    try:
        await conn.read([ids[0]])  # the token first, outside the burst
        assert await _concurrent_reads(conn, sb, ids) == 0
    finally:
        await conn.close()
    mapping = load_zoho_mapping()
    wide = ZohoCrmConnector(ZOHO.connector_config(sb.url), dataclasses.replace(
        mapping, options={**mapping.options, "max_in_flight": 12}), state=MemoryStateStore())
    try:
        await wide.read([ids[0]])
        assert await _concurrent_reads(wide, sb, ids) > 0  # 429 concurrency limit, waited out and retried
    finally:
        await wide.close()


def test_zoho_waits_60_s_doubling_to_15_min_after_a_429_without_retry_after() -> None:
    """docs/vendors/zoho_crm.md §7: no documented wait: Retry-After when present, else 60 s doubling up to
    15 min, back to 60 s after an answer that is not a 429."""
    policy = RateLimitPolicy(60.0, 900.0)
    assert [policy.wait(None) for _ in range(6)] == [60.0, 120.0, 240.0, 480.0, 900.0, 900.0]
    policy.ok()
    assert policy.wait(None) == 60.0
    assert policy.wait(7.0) == 7.0
