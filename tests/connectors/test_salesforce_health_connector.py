"""Salesforce Health Cloud connector: webhook vectors, mapping properties, wire faults, call economy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.salesforce_health import PACKAGE as SALESFORCE_HEALTH_PACKAGE
from connectors.salesforce_health.connector import SalesforceHealthConnector
from connectors.salesforce_health.mapfuncs import appointment_to_row, record_to_appointment
from syncd.config import ConnectorConfig
from syncd.connector import MemoryStateStore, WriteKind, WriteRequest
from syncd.errors import AuthFailure, Conflict, MappingError, RateLimited, Rejected, Retriable, WebhookError
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kits.salesforce_health import (
    CHANNEL,
    FACILITY,
    KIT,
    PATIENT,
    PRACTITIONER,
    WORK_TYPE,
    control,
)

create_connector = SALESFORCE_HEALTH_PACKAGE.create_connector
load_vendor_mapping = SALESFORCE_HEALTH_PACKAGE.load_mapping

BASE = "https://clinic.my.salesforce.com"
API = f"{BASE}/services/data/v65.0"
TOKEN_URL = "https://login.example.org/services/oauth2/token"
SA_ID = "08pxx0000004KGGAA2"
MAPPING = load_vendor_mapping()


def config(base_url: str = BASE, *, secret: str | None = "sandbox-webhook-secret") -> ConnectorConfig:
    return ConnectorConfig(
        name="sf", type="salesforce_health", base_url=base_url, timezone="Europe/Madrid",
        webhook_secret=Secret(secret) if secret else None, max_requests_per_second=1000.0,
        auth={
            "token_url": Secret(TOKEN_URL), "client_id": Secret("c"), "client_secret": Secret("s"),
            "refresh_token": Secret("r1"), "api_version": Secret("65.0"),
        },
    )


def fast(conn: Any, attempts: int = 2) -> SalesforceHealthConnector:
    assert isinstance(conn, SalesforceHealthConnector)
    conn.client.http.backoff_base = 0.001
    conn.client.http.backoff_max = 0.01
    conn.client.http.max_attempts = attempts
    return conn


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "attributes": {"type": "ServiceAppointment"}, "Id": SA_ID, "AppointmentNumber": "SA-0042",
        "Status": "Scheduled", "StatusCategory": "Scheduled",
        "SchedStartTime": "2026-12-10T09:00:00.000+0000", "SchedEndTime": "2026-12-10T09:30:00.000+0000",
        "ParentRecordId": "001xx000003GYimAAG", "WorkTypeId": "08qxx0000004C97AAE",
        "ServiceTerritoryId": "0Hhxx0000004C1aCAE", "EngagementChannelTypeId": "0eFxx0000000001EAA",
        "Description": None, "Comments": "Follow-up", "CancellationReason": None,
        "LastModifiedDate": "2026-11-22T10:15:03.000+0000", "SystemModstamp": "2026-11-22T10:15:03.000+0000",
        "Syncd_Id__c": "apt_01JD5K8Q2M",
    }
    base.update(over)
    return base


TOKEN_ANSWER = {"access_token": "00Dxx!tok", "instance_url": BASE, "token_type": "Bearer", "issued_at": "1"}
RESOURCES = {"totalSize": 1, "done": True, "records": [
    {"ServiceAppointmentId": SA_ID, "ServiceResourceId": "0Hnxx0000004C1aCAE"}]}
COMPOSITE = re.compile(re.escape(f"{API}/composite/sobjects/ServiceAppointment") + r"\?.*")
QUERY = re.compile(re.escape(f"{API}/query") + r"\?.*")
CONNECT = f"{API}/connect/health/appointment-management/appointment"


@pytest.fixture
async def wire() -> AsyncIterator[tuple[aioresponses, SalesforceHealthConnector]]:
    with aioresponses() as m:
        m.post(TOKEN_URL, payload=TOKEN_ANSWER, repeat=True)
        conn = fast(create_connector(config(), state=MemoryStateStore()))
        try:
            yield m, conn
        finally:
            await conn.close()


# -- webhooks -------------------------------------------------------------------------------------
VECTOR_BODY = b'{"ids":["08pxx0000004KGGAA2"]}'
VECTOR_SIG = "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"
VECTOR_NOW = datetime.fromtimestamp(1795345200, tz=UTC)


async def webhook(headers: dict[str, str], body: bytes = VECTOR_BODY, *, now: datetime = VECTOR_NOW,
                  secret: str | None = "sandbox-webhook-secret") -> Any:
    conn = create_connector(config(secret=secret))
    try:
        return await conn.parse_webhook(headers, body, now=now)
    finally:
        await conn.close()


async def test_webhook_worked_example_vector() -> None:
    assert len(VECTOR_BODY) == 30
    delivery = await webhook({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG})
    assert [e.external_id for e in delivery.events] == [SA_ID]
    assert all(e.record is None and not e.deleted for e in delivery.events)
    assert delivery.dedup_key is None and delivery.signed_timestamp == "1795345200"


async def test_webhook_rotation_and_case_insensitive_headers() -> None:
    delivery = await webhook({"x-syncd-timestamp": "1795345200", "x-syncd-signature": f"v1=00ff, {VECTOR_SIG}"},
                             now=VECTOR_NOW + timedelta(seconds=299))
    assert len(delivery.events) == 1


@pytest.mark.parametrize(
    ("headers", "secret", "now", "code"),
    [
        ({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG}, "other-secret", VECTOR_NOW,
         "signature_invalid"),
        ({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG}, "sandbox-webhook-secret",
         VECTOR_NOW + timedelta(seconds=301), "timestamp_out_of_range"),
        ({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG}, "sandbox-webhook-secret",
         VECTOR_NOW - timedelta(seconds=301), "timestamp_out_of_range"),
        ({"X-Syncd-Signature": VECTOR_SIG}, "sandbox-webhook-secret", VECTOR_NOW, "signature_missing"),
        ({"X-Syncd-Timestamp": "1795345200"}, "sandbox-webhook-secret", VECTOR_NOW, "signature_missing"),
        ({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG[3:]}, "sandbox-webhook-secret",
         VECTOR_NOW, "signature_invalid"),
    ],
)
async def test_webhook_refusals_are_401(headers: dict[str, str], secret: str, now: datetime, code: str) -> None:
    with pytest.raises(WebhookError) as err:
        await webhook(headers, now=now, secret=secret)
    assert err.value.status == 401 and err.value.code == code


async def test_webhook_malformed_body_is_400_only_after_the_signature() -> None:
    body = b'{"id":"nope"}'
    ts = "1795345200"
    import hashlib
    import hmac

    sig = hmac.new(b"sandbox-webhook-secret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    with pytest.raises(WebhookError) as err:
        await webhook({"X-Syncd-Timestamp": ts, "X-Syncd-Signature": f"v1={sig}"}, body)
    assert err.value.status == 400
    with pytest.raises(WebhookError) as err:  # a bad signature answers 401 first
        await webhook({"X-Syncd-Timestamp": ts, "X-Syncd-Signature": "v1=00"}, body)
    assert err.value.status == 401


async def test_webhook_disabled_without_secret() -> None:
    with pytest.raises(WebhookError) as err:
        await webhook({"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature": VECTOR_SIG}, secret=None)
    assert err.value.status == 404 and err.value.code == "webhooks_disabled"


# -- mapping --------------------------------------------------------------------------------------
ids = st.from_regex(r"[A-Za-z0-9]{18}", fullmatch=True)
text = st.one_of(st.none(), st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and s != ""))
HOLDABLE = [s for s in Status if s not in (Status.WAITLIST, Status.CHECKED_IN)]


@st.composite
def appointments(draw: st.DrawFn) -> Appointment:
    status = draw(st.sampled_from(HOLDABLE))
    start: datetime | None = None
    end: datetime | None = None
    if status is not Status.PROPOSED:
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**8)))
        end = start + timedelta(seconds=draw(st.integers(1, 10**5)))
    reason = None
    if status is Status.CANCELLED:
        reason = draw(st.text(min_size=1, max_size=30).filter(
            lambda s: s.strip() == s and s != "" and s.casefold() != "entered in error"))
    elif status is Status.ENTERED_IN_ERROR:
        reason = "Entered in error"
    native = {Status.BOOKED: "Scheduled", Status.ARRIVED: "In Progress"}.get(status, MAPPING.to_native(status))
    channel = draw(st.one_of(st.none(), ids))
    return Appointment(
        status=status, start=start, end=end, patient=draw(st.one_of(st.none(), ids)),
        practitioner=draw(st.one_of(st.none(), ids)), location=draw(st.one_of(st.none(), ids)),
        service_type=draw(st.one_of(st.none(), ids)), description=draw(text), notes=draw(text),
        cancellation_reason=reason, native_status=native, extra={"channel_id": channel} if channel else {},
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appointments())
def test_canonical_vendor_canonical_is_identity(appt: Appointment) -> None:
    vendor_row = appointment_to_row(MAPPING, appt)
    back = record_to_appointment(MAPPING, vendor_row, [appt.practitioner] if appt.practitioner else [])
    assert back == appt


@pytest.mark.parametrize("status", [Status.WAITLIST])
def test_unmappable_canonical_status_raises(status: Status) -> None:
    with pytest.raises(MappingError):
        appointment_to_row(MAPPING, Appointment(status=status, start=None, end=None))


@pytest.mark.parametrize(
    "over",
    [
        {"StatusCategory": "Teleported"},
        {"SchedEndTime": None},
        {"SchedStartTime": "10/12/2026 09:00"},
        {"SchedEndTime": "2026-12-10T08:00:00.000+0000"},
    ],
)
def test_unmappable_vendor_rows_raise(over: dict[str, Any]) -> None:
    with pytest.raises(MappingError):
        record_to_appointment(MAPPING, row(**over))


def test_status_rules_of_part_9() -> None:
    def status(**over: Any) -> Status:
        return record_to_appointment(MAPPING, row(**over)).status

    assert status(StatusCategory="None", Status="None", SchedStartTime=None, SchedEndTime=None) is Status.PROPOSED
    assert status(StatusCategory="None", Status="None") is Status.PENDING
    assert status(StatusCategory="Dispatched", Status="Dispatched") is Status.BOOKED
    assert status(StatusCategory="Canceled", Status="Canceled", CancellationReason="ENTERED IN ERROR") is (
        Status.ENTERED_IN_ERROR)
    assert status(StatusCategory="Canceled", Status="Void", CancellationReason="Patient request") is Status.CANCELLED
    assert record_to_appointment(MAPPING, row(Status="Dispatched", StatusCategory="Dispatched")).native_status == (
        "Dispatched")


# -- wire faults (aioresponses) ---------------------------------------------------------------------
async def test_read_batches_composite_and_practitioner(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.get(COMPOSITE, payload=[row(), None])
    m.get(QUERY, payload=RESOURCES)
    m.get(re.compile(re.escape(f"{API}/sobjects/ServiceAppointment/08pxx0000004KGHAA2") + r".*"), status=404,
          payload=[{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
    got = await conn.read([SA_ID, "08pxx0000004KGHAA2", "not-an-id"])
    rec = got[SA_ID]
    assert rec.appointment is not None and rec.appointment.practitioner == "0Hnxx0000004C1aCAE"
    assert rec.appointment.extra == {"channel_id": "0eFxx0000000001EAA"}
    assert rec.syncd_id == "apt_01JD5K8Q2M" and rec.version and rec.version.startswith("2026-11-22T10:15:03")
    assert got["08pxx0000004KGHAA2"].deleted and got["not-an-id"].deleted
    assert conn.client.http.calls == {"token": 1, "read": 1, "read_resources": 1, "read_one": 1}


async def test_unmappable_record_is_returned_with_error(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.get(COMPOSITE, payload=[row(StatusCategory="Teleported")])
    m.get(QUERY, payload=RESOURCES)
    rec = (await conn.read([SA_ID]))[SA_ID]
    assert isinstance(rec.error, MappingError) and rec.appointment is None and not rec.deleted


async def test_connect_timeout_is_retriable(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.get(COMPOSITE, exception=aiohttp.ServerTimeoutError("connect timed out"), repeat=True)
    with pytest.raises(Retriable):
        await conn.read([SA_ID])
    assert conn.client.http.calls["read"] == 2


async def test_read_timeout_is_retriable(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.get(COMPOSITE, exception=TimeoutError(), repeat=True)
    with pytest.raises(Retriable):
        await conn.read([SA_ID])


async def test_malformed_json_then_success(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.get(COMPOSITE, body=b"[{not json", status=200, content_type="application/json")
    m.get(COMPOSITE, payload=[row()])
    m.get(QUERY, payload=RESOURCES)
    got = await conn.read([SA_ID])
    assert got[SA_ID].appointment is not None and conn.client.http.retried == 1


@pytest.mark.parametrize(("status", "kind"), [(502, Retriable), (400, Rejected)])
async def test_html_error_page(wire: tuple[aioresponses, SalesforceHealthConnector], status: int, kind: type) -> None:
    m, conn = wire
    m.get(COMPOSITE, body=b"<html><body>Bad gateway</body></html>", status=status, content_type="text/html",
          repeat=True)
    with pytest.raises(kind):
        await conn.read([SA_ID])


async def test_create_success_that_is_a_failure(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.post(CONNECT, payload={"id": None, "isSuccess": False, "status": "scheduled", "error": [
        {"errorCode": "MISSING_REQUIRED_FIELD", "message": "channelId is required for this visit type"}]})
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_1", KIT.new_appointment())])
    assert isinstance(out.error, Rejected) and out.error.code == "MISSING_REQUIRED_FIELD"
    assert "channelId is required" in str(out.error)
    assert conn.client.http.calls["create"] == 1


async def test_row_lock_is_retried(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.post(CONNECT, payload={"id": None, "isSuccess": False, "status": "scheduled", "error": [
        {"errorCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record"}]})
    m.post(CONNECT, status=201, payload={"id": SA_ID, "isSuccess": True, "status": "scheduled", "error": []})
    m.patch(f"{API}/sobjects/ServiceAppointment/{SA_ID}", status=204)
    m.get(re.compile(re.escape(f"{API}/sobjects/ServiceAppointment/{SA_ID}") + r"\?.*"), payload=row())
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_1", KIT.new_appointment())])
    assert out.ok, out.error
    assert conn.client.http.calls["create"] == 2


async def test_ehr_rejection_and_state_lock(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.post(CONNECT, payload={"id": SA_ID, "isSuccess": False, "status": "rejected", "error": [
        {"errorCode": "SLOT_UNAVAILABLE", "message": "The slot is no longer available"}]})
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_1", KIT.new_appointment())])
    assert isinstance(out.error, Rejected) and out.error.code == "SLOT_UNAVAILABLE"


async def test_total_requests_limit_waits_900s(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    conn.client.http.max_rate_limit_wait = 10
    m.get(COMPOSITE, status=403, payload=[{"message": "TotalRequests Limit exceeded.",
                                           "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    with pytest.raises(RateLimited) as err:
        await conn.read([SA_ID])
    assert err.value.wait == 900


async def test_error_messages_are_masked(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.post(CONNECT, payload={"id": None, "isSuccess": False, "status": "scheduled", "error": [
        {"errorCode": "INVALID_REFERENCE", "message": "no patient ana.garcia@example.org +34 600 000 123"}]})
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_1", KIT.new_appointment())])
    assert out.error is not None
    assert "example.org" not in str(out.error) and "600 000" not in str(out.error)


async def test_lost_create_searches_before_repeating(wire: tuple[aioresponses, SalesforceHealthConnector]) -> None:
    m, conn = wire
    m.post(CONNECT, exception=aiohttp.ServerDisconnectedError())
    m.get(QUERY, payload={"totalSize": 1, "done": True, "records": [{"Id": SA_ID}]})
    m.get(COMPOSITE, payload=[row()])
    m.get(QUERY, payload=RESOURCES)
    m.get(re.compile(re.escape(f"{API}/sobjects/ServiceAppointment/{SA_ID}") + r"\?.*"), payload=row())
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_01JD5K8Q2M", KIT.new_appointment())])
    assert out.ok and out.record is not None and out.record.external_id == SA_ID
    assert conn.client.http.calls["create"] == 1


async def test_waitlist_update_is_a_mapping_error_without_write(
    wire: tuple[aioresponses, SalesforceHealthConnector],
) -> None:
    m, conn = wire
    m.get(COMPOSITE, payload=[row()])
    m.get(QUERY, payload=RESOURCES)
    current = record_to_appointment(MAPPING, row(), ["0Hnxx0000004C1aCAE"])
    desired = current.with_changes(status=Status.WAITLIST)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_1", desired, external_id=SA_ID,
                                           changed=frozenset({"status"}))])
    assert isinstance(out.error, MappingError)
    assert "update" not in conn.client.http.calls and "update_fields" not in conn.client.http.calls


async def test_capabilities_and_maintain_need_no_network() -> None:
    conn = create_connector(config())
    try:
        caps = conn.capabilities
        assert caps.batch_read_size == 200 and caps.batch_write_size == 1 and caps.webhooks
        assert caps.patient_change
        assert caps.replace_reason is None
        status = await conn.maintain("https://syncd.example.org")
        assert status["subscription"] == "not needed"
        assert conn.needs_replace(KIT.new_appointment(), KIT.new_appointment().with_changes(patient="x")) is None
    finally:
        await conn.close()


# -- against the sandbox ---------------------------------------------------------------------------
@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox("salesforce_health", port=0)
    try:
        yield rs
    finally:
        await rs.stop()


@pytest.fixture
async def conn(sandbox: RunningSandbox) -> AsyncIterator[SalesforceHealthConnector]:
    c = fast(create_connector(KIT.connector_config(sandbox.url), state=MemoryStateStore()), attempts=3)
    try:
        yield c
    finally:
        await c.close()


async def counts(sb: RunningSandbox) -> dict[str, int]:
    rows = (await control(sb, "GET", "/_sandbox/requests"))["requests"]
    out: dict[str, int] = {}
    for r in rows:
        key = f"{r['method']} {r['route']}"
        out[key] = out.get(key, 0) + r["count"]
    return out


async def test_reading_n_records_costs_two_calls_per_200(sandbox: RunningSandbox,
                                                         conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 450)
    before = await counts(sandbox)
    got = await conn.read(ids)
    assert all(not r.deleted and r.appointment is not None for r in got.values())
    after = await counts(sandbox)
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert diff == {"GET /services/data/v65.0/composite/sobjects/ServiceAppointment": 3,
                    "GET /services/data/v65.0/query": 3, "POST /services/oauth2/token": 1}


async def test_incremental_poll_without_change_costs_two_calls(sandbox: RunningSandbox,
                                                               conn: SalesforceHealthConnector) -> None:
    await KIT.seed(sandbox, 3)
    cursor = None
    async for page in conn.changes(None):
        cursor = page.cursor
    assert cursor is not None
    state = json.loads(cursor)
    assert state["u"] == state["d"] and "win" not in state
    before = sum((await counts(sandbox)).values())
    pages = [p async for p in conn.changes(cursor)]
    assert sum((await counts(sandbox)).values()) - before == 2
    assert len(pages) == 1 and not pages[0].records
    # a pass in the minute the cursor names: end (now truncated) <= cursor, no call at all
    again = pages[0].cursor
    assert again is not None
    covered = datetime.fromisoformat(json.loads(again)["u"].replace("Z", "+00:00"))
    conn.now = lambda: covered + timedelta(seconds=30)
    before = sum((await counts(sandbox)).values())
    [page] = [p async for p in conn.changes(again)]
    assert page.cursor == again and not page.records
    assert sum((await counts(sandbox)).values()) == before


async def test_window_pass_resumes_from_a_page_cursor(sandbox: RunningSandbox,
                                                      conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 250)
    pages = [p async for p in conn.changes(None)]
    assert [len(p.records) for p in pages] == [200, 50]
    first = pages[0].cursor
    assert first is not None and "win" in json.loads(first)
    rest = [p async for p in conn.changes(first)]
    assert [r.external_id for p in rest for r in p.records] == [r.external_id for r in pages[1].records]
    assert {r.external_id for p in pages for r in p.records} == set(ids)


async def test_old_cursor_runs_the_window(sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 2)
    old = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:00Z")
    pages = [p async for p in conn.changes(json.dumps({"u": old, "d": old}))]
    assert set(ids) <= {r.external_id for p in pages for r in p.records}
    assert not any("/updated" in k or "/deleted" in k for k in await counts(sandbox))


async def test_replication_date_refusal_runs_the_window(sandbox: RunningSandbox,
                                                        conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 2)
    old = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:00Z")  # deleted/ keeps 15 days
    pages = [p async for p in conn.changes(json.dumps({"u": old, "d": old}))]
    assert set(ids) <= {r.external_id for p in pages for r in p.records}


async def test_rotated_refresh_token_is_stored(sandbox: RunningSandbox) -> None:
    await control(sandbox, "POST", "/_sandbox/options", {"rotate_refresh_tokens": True})
    ids = await KIT.seed(sandbox, 1)
    state = MemoryStateStore()
    c = fast(create_connector(KIT.connector_config(sandbox.url), state=state))
    try:
        await c.read(ids)
        stored = json.loads(state.values["salesforce_health.refresh_token"])
        assert stored["token"] and stored["token"] != "sandbox-refresh"
        await KIT.expire_token(sandbox)
        assert not (await c.read(ids))[ids[0]].deleted  # refreshed with the rotated token
    finally:
        await c.close()
    c2 = fast(create_connector(KIT.connector_config(sandbox.url), state=state))
    try:  # a restart uses the stored (rotated) token, the configured one is dead
        assert not (await c2.read(ids))[ids[0]].deleted
    finally:
        await c2.close()


async def test_concurrent_callers_share_one_refresh(sandbox: RunningSandbox,
                                                    conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 1)
    await asyncio.gather(*(conn.read(ids) for _ in range(5)))
    assert (await counts(sandbox))["POST /services/oauth2/token"] == 1


async def test_stale_patch_412_is_a_conflict(sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    await control(sandbox, "POST", "/_sandbox/clock",
                  {"now": (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    await control(sandbox, "POST", "/_sandbox/faults", {
        "match": {"method": "PATCH", "path": "/services/data/*/sobjects/ServiceAppointment/*"}, "times": 1,
        "action": {"type": "mutate_before", "changes": {"Comments": "changed by reception"}}})
    desired = current.appointment.with_changes(description="Bring the referral letter")
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_s", desired, external_id=rid, current=current,
                                           changed=frozenset({"description"}))])
    assert isinstance(out.error, Conflict), out.error
    assert out.record is not None and out.record.appointment is not None
    assert out.record.appointment.notes == "changed by reception"


async def test_cancel_without_reason_uses_default_and_status_patch(sandbox: RunningSandbox,
                                                                   conn: SalesforceHealthConnector) -> None:
    a, b = await KIT.seed(sandbox, 2)
    got = await conn.read([a, b])
    cur_a, cur_b = got[a].appointment, got[b].appointment
    assert cur_a is not None and cur_b is not None
    outs = await conn.write([
        WriteRequest(WriteKind.CANCEL, "apt_a", cur_a.with_changes(status=Status.CANCELLED), external_id=a,
                     current=got[a], changed=frozenset({"status"})),
        WriteRequest(WriteKind.UPDATE, "apt_b", cur_b.with_changes(status=Status.ARRIVED), external_id=b,
                     current=got[b], changed=frozenset({"status"})),
    ])
    assert all(o.ok for o in outs), [o.error for o in outs]
    dump = {r["Id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert dump[a]["Status"] == "Canceled" and dump[a]["CancellationReason"] == "Other"
    assert dump[b]["Status"] == "In Progress"
    assert not any(dump[x].get("_notifications") for x in (a, b))
    assert outs[1].record is not None and outs[1].record.appointment is not None
    assert outs[1].record.appointment.status is Status.ARRIVED


async def test_create_sets_reference_and_non_booked_status(sandbox: RunningSandbox,
                                                           conn: SalesforceHealthConnector) -> None:
    await KIT.seed(sandbox, 1)
    desired = KIT.new_appointment().with_changes(status=Status.PENDING, description="First visit")
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_new_1", desired)])
    assert out.ok, out.error
    assert out.record is not None and out.record.appointment is not None
    got = out.record.appointment
    assert got.status is Status.PENDING and got.description == "First visit" and out.record.syncd_id == "apt_new_1"
    assert (got.patient, got.practitioner, got.location, got.service_type) == (
        PATIENT, PRACTITIONER, FACILITY, WORK_TYPE)
    assert got.extra == {"channel_id": CHANNEL}


async def test_revoked_refresh_is_auth_failure(sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    ids = await KIT.seed(sandbox, 1)
    await conn.read(ids)
    await KIT.revoke(sandbox)
    with pytest.raises(AuthFailure):
        await conn.read(ids)


async def test_callback_result_import_is_used() -> None:
    # aioresponses' CallbackResult lets a wire test inspect what was sent: the PUT keeps every field
    seen: dict[str, Any] = {}

    def capture(url: Any, **kwargs: Any) -> CallbackResult:
        seen.update(json.loads(kwargs["data"]))
        return CallbackResult(payload={"id": SA_ID, "isSuccess": True, "status": "scheduled", "error": []})

    with aioresponses() as m:
        m.post(TOKEN_URL, payload=TOKEN_ANSWER, repeat=True)
        m.get(COMPOSITE, payload=[row()])
        m.get(QUERY, payload=RESOURCES)
        m.put(f"{CONNECT}/{SA_ID}", callback=capture)
        m.get(re.compile(re.escape(f"{API}/sobjects/ServiceAppointment/{SA_ID}") + r"\?.*"), payload=row())
        c = fast(create_connector(config(), state=MemoryStateStore()))
        try:
            current = record_to_appointment(MAPPING, row(), ["0Hnxx0000004C1aCAE"])
            desired = current.with_changes(start=current.start + timedelta(hours=1),  # type: ignore[operator]
                                           end=current.end + timedelta(hours=1))  # type: ignore[operator]
            [out] = await c.write([WriteRequest(WriteKind.UPDATE, "apt_1", desired, external_id=SA_ID,
                                                changed=frozenset({"start", "end"}))])
        finally:
            await c.close()
    assert out.ok, out.error
    assert seen["id"] == SA_ID and seen["startDate"] == "2026-12-10T10:00:00Z"
    assert seen["comment"] == "Follow-up" and seen["channelId"] == "0eFxx0000000001EAA"
    assert seen["workTypeId"] == "08qxx0000004C97AAE" and seen["timeZone"] == "Europe/Madrid"
    assert {"reference": "Facility/0Hhxx0000004C1aCAE"} in seen["participants"]
    assert "sourceSystem" not in seen and "slots" not in seen


async def test_lost_create_does_not_take_a_concurrent_create_for_its_orphan(
        sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    """Two appointments of one patient at one start (say, two practitioners): while the first create
    is still stamping its new record with ``Syncd_Id__c``, the second create's answer is lost. Its
    orphan search (records of that patient and start without a reference) must not count the first
    one's record, or the lost create ends as ambiguous (and its record a duplicate later)."""
    await KIT.seed(sandbox, 1)
    before = {r["Id"] for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    desired = KIT.new_appointment()
    await control(sandbox, "POST", "/_sandbox/faults", {
        "match": {"method": "PATCH", "path": "/services/data/*/sobjects/ServiceAppointment/*"},
        "action": {"type": "delay", "seconds": 1.5}, "times": 1})
    first = asyncio.create_task(conn.write([WriteRequest(WriteKind.CREATE, "apt_first", desired)]))
    post = "POST /services/data/v65.0/connect/health/appointment-management/appointment"
    for _ in range(100):  # until its POST has landed (its reference PATCH is held back then)
        if (await counts(sandbox)).get(post):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    await control(sandbox, "POST", "/_sandbox/faults", {
        "match": {"method": "POST", "path": "/services/data/*/connect/health/appointment-management/appointment"},
        "action": {"type": "drop_after_apply"}, "times": 1})
    [second] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_second", desired)])
    [one] = await first
    assert one.ok and second.ok, (one.error, second.error)
    assert one.record is not None and second.record is not None
    assert (one.record.syncd_id, second.record.syncd_id) == ("apt_first", "apt_second")
    assert one.record.external_id != second.record.external_id
    rows = [r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]
            if r.get("Id") not in before and str(r.get("Id", "")).startswith("08p")]
    assert sorted(r.get("Syncd_Id__c") for r in rows) == ["apt_first", "apt_second"], rows


async def test_an_update_it_already_holds_sends_nothing_and_says_so(sandbox: RunningSandbox,
                                                                    conn: SalesforceHealthConnector) -> None:
    """A queued notes write whose value an earlier write (a cancel's comment) already carried: nothing
    is sent, and the outcome says so (``sent=False``), so the pass does not count a write it never made."""
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    before = await counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_s", current.appointment, external_id=rid,
                                           current=current, changed=frozenset({"notes"}))])
    assert out.ok, out.error
    assert out.sent is False
    after = await counts(sandbox)
    writes = {k: v - before.get(k, 0) for k, v in after.items() if k.split()[0] in ("PATCH", "PUT", "POST")}
    assert not any(writes.values()), writes


def _unstamped(rid: str, desired: Appointment, practitioner: str) -> dict[str, Any]:
    """A ServiceAppointment a Connect create made whose ``Syncd_Id__c`` PATCH never ran."""
    assert desired.start is not None and desired.end is not None
    sf = "%Y-%m-%dT%H:%M:%S.000+0000"
    return {"attributes": {"type": "ServiceAppointment"}, "Id": rid, "Status": "Scheduled",
            "SchedStartTime": desired.start.strftime(sf), "SchedEndTime": desired.end.strftime(sf),
            "ParentRecordId": desired.patient, "WorkTypeId": WORK_TYPE, "ServiceTerritoryId": FACILITY,
            "EngagementChannelTypeId": CHANNEL, "Comments": desired.notes, "Syncd_Id__c": None,
            "_assigned_resources": [practitioner]}


async def test_unstamped_search_adopts_and_stamps_the_one_record_a_lost_create_left(
        sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    """Part 9: no record holds the reference, so the create may have landed without its PATCH: the
    record of this patient and start without ``Syncd_Id__c`` is the create's, and is stamped now. A
    record of the same patient and start for another practitioner is not taken for it."""
    from tests.connectors.kits.salesforce_health import PRACTITIONER_2, _sid

    await KIT.seed(sandbox, 1)
    desired = KIT.new_appointment()
    mine, other = _sid("08p", 900_001), _sid("08p", 900_002)
    await control(sandbox, "POST", "/_sandbox/records", {"records": [
        _unstamped(mine, desired, PRACTITIONER), _unstamped(other, desired, PRACTITIONER_2)]})
    assert await conn.find_by_reference("apt_lost_patch") == []  # no desired: the reference search only
    [found] = await conn.find_by_reference("apt_lost_patch", desired=desired)
    assert found.external_id == mine and found.syncd_id == "apt_lost_patch"
    rows = {r["Id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert rows[mine]["Syncd_Id__c"] == "apt_lost_patch" and rows[other]["Syncd_Id__c"] is None
    # found by its reference from now on, without the unstamped search
    assert [r.external_id for r in await conn.find_by_reference("apt_lost_patch")] == [mine]


async def test_two_unstamped_candidates_for_one_lost_create_are_ambiguous_never_a_guess(
        sandbox: RunningSandbox, conn: SalesforceHealthConnector) -> None:
    """``docs/vendors/README.md`` rule 10: several records that could be the lost create (same patient, start and
    practitioner, none stamped) are an open conflict for the engine; neither is stamped."""
    from syncd.errors import AmbiguousReference
    from tests.connectors.kits.salesforce_health import _sid

    await KIT.seed(sandbox, 1)
    desired = KIT.new_appointment()
    ids = sorted([_sid("08p", 900_011), _sid("08p", 900_012)])
    await control(sandbox, "POST", "/_sandbox/records", {"records": [
        _unstamped(rid, desired, PRACTITIONER) for rid in ids]})
    with pytest.raises(AmbiguousReference) as info:
        await conn.find_by_reference("apt_twice", desired=desired)
    assert sorted(info.value.external_ids) == ids
    rows = {r["Id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert all(rows[rid]["Syncd_Id__c"] is None for rid in ids)


@pytest.mark.parametrize("status", [Status.BOOKED, Status.PENDING])
async def test_create_costs_post_one_patch_and_the_read_back(sandbox: RunningSandbox, conn: SalesforceHealthConnector,
                                                            status: Status) -> None:
    """A create is the Connect POST, ONE sObject PATCH (the Syncd_Id__c stamp, with the status a new
    record must take instead of Scheduled) and the GET that learns the version (docs/vendors/salesforce_health.md
    "Rate limits and the calls syncd spends")."""
    await KIT.seed(sandbox, 0)  # the reference data (patient, practitioner, ...)
    await conn.read([])  # the token first, so that only the create's calls are counted
    desired = KIT.new_appointment().with_changes(status=status)
    before = await counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, f"apt_calls_{status.value}", desired)])
    assert out.ok and out.record is not None and out.record.appointment is not None
    assert out.record.appointment.status is status
    assert out.record.syncd_id == f"apt_calls_{status.value}"
    after = await counts(sandbox)
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    calls = {k: v for k, v in diff.items() if "oauth2" not in k}
    assert sorted(calls.items()) == sorted({
        "POST /services/data/v65.0/connect/health/appointment-management/appointment": 1,
        "PATCH /services/data/v65.0/sobjects/ServiceAppointment/{id}": 1,
        "GET /services/data/v65.0/sobjects/ServiceAppointment/{id}": 1,
    }.items()), diff
