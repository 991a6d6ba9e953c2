"""Zoho CRM connector: webhook verification, mapping round trips, wire behaviour and call economy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import create_connector
from connectors.zoho_crm import PACKAGE as ZOHO_CRM_PACKAGE
from connectors.zoho_crm.client import mask
from connectors.zoho_crm.connector import STATE_CHANNEL, ZohoCrmConnector
from connectors.zoho_crm.mapfuncs import ZohoMapper, utc_to_zoho_time, zoho_time_to_utc
from syncd.config import ConnectorConfig
from syncd.connector import MemoryStateStore, VendorRecord, WriteKind, WriteRequest
from syncd.errors import (
    AuthFailure,
    Conflict,
    Deferred,
    MappingError,
    NotWritable,
    RateLimited,
    Rejected,
    Retriable,
    WebhookError,
)
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kit import control, request_counts
from tests.connectors.kits.zoho_crm import KIT

load_vendor_mapping = ZOHO_CRM_PACKAGE.load_mapping

BASE = "http://zoho.test"
TOKEN_URL = f"{BASE}/oauth/v2/token"
MODULE_URL = re.compile(r"^http://zoho\.test/crm/v7/Appointments__s(\?.*)?$")
SEARCH_URL = re.compile(r"^http://zoho\.test/crm/v7/Appointments__s/search\?.*$")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

# docs/vendors/zoho_crm.md §2 (a): the worked callback, with its channel and token
EXAMPLE_SECRET = "wh-7Rk2pQ9xLm4Zt"
EXAMPLE_CHANNEL = "1000000068001"
EXAMPLE_CALLBACK = (
    b'{"server_time":1795345203123,"query_params":{},"module":"Appointments__s",'
    b'"resource_uri":"https://www.zohoapis.com/crm/v7/Appointments__s",'
    b'"ids":["5545974000002254155","5545974000002254060"],"affected_fields":[],"operation":"update",'
    b'"channel_id":1000000068001,"token":"wh-7Rk2pQ9xLm4Zt"}'
)
# docs/vendors/zoho_crm.md §3: the worked record
EXAMPLE_RECORD: dict[str, Any] = {
    "id": "5545974000002254155", "Appointment_Name": "Dental check-up",
    "Appointment_For": {"module": "Contacts", "name": "Ana Ruiz", "id": "5545974000000412001"},
    "Service_Name": {"name": "Check-up", "id": "5545974000000520001"},
    "Owner": {"name": "Patricia Boyle", "id": "5545974000000393001", "email": "patricia@clinic.example"},
    "Appointment_Start_Time": "2026-12-01T14:30:00+05:30", "Appointment_End_Time": "2026-12-01T15:00:00+05:30",
    "Duration": 30, "Location": "Business Address", "Address": None, "Status": "Scheduled",
    "Cancellation_Reason": None, "Cancellation_Note": None, "Rescheduled_From": None, "Reschedule_Reason": None,
    "Reschedule_Note": None, "Reschedule_Count": 0, "Job_Sheet_Name": None, "Job_Sheet_Description__s": None,
    "Additional_Information": "Bring X-rays", "Syncd_Id": "apt_01JD5K8Q2M",
    "Created_Time": "2026-11-22T15:45:03+05:30", "Modified_Time": "2026-11-22T15:45:03+05:30",
}

MAPPER = ZohoMapper(load_vendor_mapping())


def config(base_url: str = BASE, *, secret: str | None = EXAMPLE_SECRET, rps: float = 500.0) -> ConnectorConfig:
    return ConnectorConfig(
        name="zoho", type="zoho_crm", base_url=base_url, timezone="UTC",
        webhook_secret=Secret(secret) if secret else None, max_requests_per_second=rps,
        auth={"accounts_url": Secret(base_url), "client_id": Secret("sandbox-client"),
              "client_secret": Secret("sandbox-secret"), "refresh_token": Secret("sandbox-refresh")},
    )


def build(base_url: str = BASE, **kw: Any) -> ZohoCrmConnector:
    conn = create_connector(config(base_url, **kw), state=MemoryStateStore())
    assert isinstance(conn, ZohoCrmConnector)
    conn.client.http.backoff_base = 0.001  # keep wire tests fast
    conn.client.http.backoff_max = 0.01
    conn.search_lag_s = 0.0
    return conn


def token_ok(mocked: aioresponses, times: int = 1) -> None:
    for _ in range(times):
        mocked.post(TOKEN_URL, payload={"access_token": "1000.tok", "api_domain": BASE, "token_type": "Bearer",
                                        "expires_in": 3600})


def record(rid: str = "5545974000002254155", **changes: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(EXAMPLE_RECORD))
    raw["id"] = rid
    raw.update(changes)
    return raw


def calls(mocked: aioresponses, method: str, pattern: str) -> int:
    return sum(len(v) for (m, url), v in mocked.requests.items() if m == method and re.search(pattern, str(url)))


# -- webhooks (Zoho's echoed-token scheme, docs/vendors/zoho_crm.md §2 (a)) ----------------------------------------


async def webhook_connector(secret: str | None = EXAMPLE_SECRET, channel: str | None = EXAMPLE_CHANNEL
                            ) -> ZohoCrmConnector:
    conn = build(secret=secret)
    if channel:
        await conn.state.set(STATE_CHANNEL, channel)
    return conn


async def test_webhook_worked_example_is_accepted() -> None:
    conn = await webhook_connector()
    delivery = await conn.parse_webhook({"Content-Type": "application/json"}, EXAMPLE_CALLBACK, now=NOW)
    assert [e.external_id for e in delivery.events] == ["5545974000002254155", "5545974000002254060"]
    assert not any(e.deleted for e in delivery.events) and all(e.record is None for e in delivery.events)
    assert delivery.dedup_key is None and delivery.signed_timestamp == "1795345203123"
    await conn.close()


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"token": "wh-wrong"}, 401, "token_mismatch"),
        ({"token": None}, 401, "token_missing"),
        ({"channel_id": 42}, 401, "channel_mismatch"),
        ({"module": "Contacts"}, 401, "module_mismatch"),
        ({"ids": "5545974000002254155"}, 400, "malformed_body"),
        ({"operation": "explode"}, 400, "malformed_body"),
    ],
)
async def test_webhook_refusals(change: dict[str, Any], status: int, code: str) -> None:
    conn = await webhook_connector()
    body = json.loads(EXAMPLE_CALLBACK)
    body.update(change)
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook({}, json.dumps(body).encode(), now=NOW)
    assert (info.value.status, info.value.code) == (status, code)
    await conn.close()


async def test_webhook_wrong_secret_and_unknown_channel() -> None:
    conn = await webhook_connector(secret="another-secret")
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook({}, EXAMPLE_CALLBACK, now=NOW)
    assert info.value.status == 401
    await conn.close()
    conn = await webhook_connector(channel=None)  # never subscribed: no channel is ours
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook({}, EXAMPLE_CALLBACK, now=NOW)
    assert info.value.status == 401
    await conn.close()


async def test_webhook_non_json_is_400_before_the_token_check() -> None:
    conn = await webhook_connector(secret="another-secret")
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook({}, b"<html>not json</html>", now=NOW)
    assert info.value.status == 400
    await conn.close()


async def test_webhook_disabled_without_secret_is_404() -> None:
    conn = await webhook_connector(secret=None)
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook({}, EXAMPLE_CALLBACK, now=NOW)
    assert info.value.status == 404
    await conn.close()


async def test_webhook_has_no_timestamp_window_and_ignores_generic_headers() -> None:
    # Zoho's scheme is the echoed token: the generic X-Syncd-* HMAC scheme (and its ±300 s window) does
    # not apply, so an old server_time with the right token passes and generic headers alone never do.
    conn = await webhook_connector()
    old = json.loads(EXAMPLE_CALLBACK)
    old["server_time"] = 1_000_000_000_000
    delivery = await conn.parse_webhook({}, json.dumps(old).encode(), now=NOW)
    assert len(delivery.events) == 2
    generic_body = b'{"ids":["08pxx0000004KGGAA2"]}'
    headers = {"X-Syncd-Timestamp": "1795345200",
               "X-Syncd-Signature": "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"}
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook(headers, generic_body, now=datetime.fromtimestamp(1795345200, UTC))
    assert info.value.status == 401
    await conn.close()


async def test_webhook_delete_marks_ids_deleted() -> None:
    conn = await webhook_connector()
    body = json.loads(EXAMPLE_CALLBACK)
    body["operation"] = "delete"
    delivery = await conn.parse_webhook({}, json.dumps(body).encode(), now=NOW)
    assert all(e.deleted for e in delivery.events)
    await conn.close()


# -- mapping ----------------------------------------------------------------------------------------


def test_worked_record_maps_to_canonical() -> None:
    appt = MAPPER.to_appointment(EXAMPLE_RECORD)
    assert appt.status is Status.BOOKED and appt.native_status == "Scheduled"
    assert appt.start == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert appt.end == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert appt.patient == "Contacts:5545974000000412001"
    assert appt.practitioner == "5545974000000393001"
    assert appt.service_type == "5545974000000520001"
    assert appt.location == "Business Address"
    assert appt.description == "Dental check-up" and appt.notes == "Bring X-rays"
    assert MAPPER.version(EXAMPLE_RECORD) == "2026-11-22T10:15:03+00:00"
    assert MAPPER.syncd_id(EXAMPLE_RECORD) == "apt_01JD5K8Q2M"


@pytest.mark.parametrize(
    ("native", "note", "who", "status", "reason"),
    [
        ("Overdue", None, None, Status.BOOKED, None),
        ("Completed", None, None, Status.FULFILLED, None),
        ("Cancelled", "no-SHOW", "By Customer", Status.NOSHOW, None),
        ("Cancelled", "Entered in error", "By Team", Status.ENTERED_IN_ERROR, "Entered in error"),
        ("Cancelled", "Customer unavailable", "By Customer", Status.CANCELLED, "Customer unavailable"),
        ("Cancelled", None, "By Team", Status.CANCELLED, "By Team"),
    ],
)
def test_status_table_in(native: str, note: str | None, who: str | None, status: Status, reason: str | None) -> None:
    appt = MAPPER.to_appointment(record(Status=native, Cancellation_Note=note, Cancellation_Reason=who))
    assert appt.status is status and appt.native_status == native and appt.cancellation_reason == reason


def test_unmappable_record_becomes_an_error_record() -> None:
    conn = build()
    rec = conn._record(record(Status="Dormant"))
    assert rec.appointment is None and isinstance(rec.error, MappingError) and rec.version
    rec = conn._record(record(Appointment_Start_Time="2026-12-01 14:30"))
    assert isinstance(rec.error, MappingError)


def test_cancellation_reason_and_fixed_notes_out() -> None:
    base = MAPPER.to_appointment(EXAMPLE_RECORD)
    by_patient = MAPPER.cancellation(base.with_changes(status=Status.CANCELLED, cancellation_reason="Patient sick"))
    assert by_patient == {"Status": "Cancelled", "Cancellation_Reason": "By Customer",
                          "Cancellation_Note": "Patient sick"}
    default = MAPPER.cancellation(base.with_changes(status=Status.CANCELLED))
    assert default["Cancellation_Reason"] == "By Team" and default["Cancellation_Note"] == "Cancelled by syncd"
    assert MAPPER.cancellation(base.with_changes(status=Status.NOSHOW))["Cancellation_Note"] == "No-show"
    replaced = MAPPER.cancellation(
        base.with_changes(status=Status.CANCELLED, cancellation_reason="[syncd] replaced by appointment"), new_id="9")
    assert replaced["Cancellation_Note"] == "[syncd] replaced by appointment 9"
    assert replaced["Cancellation_Reason"] == "By Team"


def test_times_written_in_utc_with_offset() -> None:
    assert utc_to_zoho_time(datetime(2026, 12, 1, 10, 0, 0, 999, tzinfo=UTC)) == "2026-12-01T10:00:00+00:00"
    assert zoho_time_to_utc("2026-12-01T15:30:00+05:30") == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), min_size=1, max_size=40)
_ids = st.from_regex(r"[1-9][0-9]{6,18}", fullmatch=True)


@st.composite
def holdable(draw: st.DrawFn) -> Appointment:
    """Canonical appointments made only of values Zoho can hold (docs/vendors/zoho_crm.md §9)."""
    status = draw(st.sampled_from([Status.BOOKED, Status.FULFILLED, Status.CANCELLED, Status.NOSHOW,
                                   Status.ENTERED_IN_ERROR]))
    start = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                              timezones=st.just(UTC))).replace(microsecond=0)
    minutes = draw(st.integers(min_value=5, max_value=480))
    reason: str | None = None
    if status is Status.CANCELLED:
        reason = draw(_text.filter(lambda t: t.strip().lower() not in ("no-show", "entered in error")
                                   and not t.startswith("[syncd] replaced by appointment")))
    elif status is Status.ENTERED_IN_ERROR:
        reason = "Entered in error"
    return Appointment(
        status=status,
        start=start,
        end=start + timedelta(minutes=minutes),
        patient=f"{draw(st.sampled_from(['Contacts', 'Leads', 'Accounts']))}:{draw(_ids)}",
        practitioner=draw(_ids),
        location="Business Address",
        service_type=draw(_ids),
        description=draw(_text),
        notes=draw(st.none() | _text),
        cancellation_reason=reason,
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appt=holdable())
def test_canonical_to_zoho_to_canonical_is_identity(appt: Appointment) -> None:
    assert appt.start is not None and appt.end is not None
    minutes = int((appt.end - appt.start).total_seconds() // 60)
    raw = MAPPER.vendor_record(appt, "apt_prop", external_id="5545974000000000001", modified=NOW,
                               duration_min=minutes)
    back = MAPPER.to_appointment(raw)
    assert back.diff(appt) == []
    assert MAPPER.syncd_id(raw) == "apt_prop"


@settings(max_examples=50, deadline=None)
@given(appt=holdable(), bad=st.sampled_from(["waitlist", "patient", "location", "client_address", "reserved_note",
                                             "no_times"]))
def test_unmappable_values_raise_mapping_error(appt: Appointment, bad: str) -> None:
    with pytest.raises(MappingError):
        if bad == "waitlist":
            MAPPER.status_write("Scheduled", None, appt.with_changes(status=Status.WAITLIST,
                                                                     cancellation_reason=None), auto_complete=False)
        elif bad == "patient":
            MAPPER.create_body(appt.with_changes(status=Status.BOOKED, cancellation_reason=None,
                                                 patient="no-module-here"), "apt_x")
        elif bad == "location":
            MAPPER.field_values("location", appt.with_changes(location="Main street 1"), {})
        elif bad == "client_address":
            MAPPER.create_body(appt.with_changes(status=Status.BOOKED, cancellation_reason=None,
                                                 location="Client Address"), "apt_x")
        elif bad == "reserved_note":
            MAPPER.cancellation(appt.with_changes(status=Status.CANCELLED, cancellation_reason="No-Show"))
        else:
            MAPPER.status_write("Scheduled", None, Appointment(status=Status.PROPOSED, start=None, end=None),
                                auto_complete=False)


def test_needs_replace_and_capabilities() -> None:
    conn = build()
    base = MAPPER.to_appointment(EXAMPLE_RECORD)
    assert base.start is not None and base.end is not None
    earlier = base.with_changes(start=base.start - timedelta(hours=1), end=base.end - timedelta(hours=1))
    later = base.with_changes(start=base.start + timedelta(hours=1), end=base.end + timedelta(hours=1))
    assert conn.needs_replace(base, earlier) is not None
    assert conn.needs_replace(base, later) is None
    assert conn.needs_replace(base, base.with_changes(service_type="5545974000000520002")) is not None
    caps = conn.capabilities
    assert (caps.batch_read_size, caps.batch_write_size) == (100, 100)
    assert caps.subscription and caps.webhooks and caps.patient_change
    assert caps.replace_reason == "[syncd] replaced by appointment"


def test_mask_hides_contact_details() -> None:
    assert mask("mail ana@example.org or +34 600 123 456") == "mail ***@*** or ***"


# -- wire behaviour (aioresponses) ----------------------------------------------------------------


async def test_requests_carry_zoho_oauthtoken_and_accept() -> None:
    conn = build()
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, payload={"data": [record()], "info": {"count": 1, "more_records": False}})
        got = await conn.read(["5545974000002254155"])
        assert got["5545974000002254155"].appointment is not None
        [(_, token_call)] = [(k, v) for k, v in mocked.requests.items() if k[0] == "POST"]
        assert token_call[0].kwargs["data"] == (b"grant_type=refresh_token&client_id=sandbox-client&"
                                                b"client_secret=sandbox-secret&refresh_token=sandbox-refresh")
        [get] = next(v for k, v in mocked.requests.items() if k[0] == "GET")
        assert get.kwargs["headers"]["Authorization"] == "Zoho-oauthtoken 1000.tok"
        assert get.kwargs["headers"]["Accept"] == "application/json"
    await conn.close()


async def test_connect_timeout_is_retried_then_retriable() -> None:
    conn = build()
    with aioresponses() as mocked:
        token_ok(mocked)
        for _ in range(5):
            mocked.get(MODULE_URL, exception=aiohttp.ServerTimeoutError("connect timeout"))
        with pytest.raises(Retriable):
            await conn.read(["5545974000002254155"])
        assert calls(mocked, "GET", "Appointments__s") == 5
    await conn.close()


async def test_read_timeout_then_success() -> None:
    conn = build()
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, exception=TimeoutError())
        mocked.get(MODULE_URL, payload={"data": [record()], "info": {"more_records": False}})
        got = await conn.read(["5545974000002254155"])
        assert not got["5545974000002254155"].deleted
    await conn.close()


async def test_create_timeout_is_searched_not_repeated() -> None:
    conn = build()
    appt = KIT.new_appointment()
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.post(MODULE_URL, exception=TimeoutError())
        mocked.get(SEARCH_URL, payload={"data": [record("5545974000009999999", Syncd_Id="apt_lost")],
                                        "info": {"more_records": False}})
        [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_lost", appt)])
        assert out.ok and out.record is not None and out.record.external_id == "5545974000009999999"
        assert calls(mocked, "POST", "Appointments__s$") == 1
    await conn.close()


async def test_malformed_json_is_retriable() -> None:
    conn = build()
    with aioresponses() as mocked:
        token_ok(mocked)
        for _ in range(5):
            mocked.get(MODULE_URL, status=200, body=b'{"data": [', content_type="application/json")
        with pytest.raises(Retriable):
            await conn.read(["5545974000002254155"])
    await conn.close()


async def test_html_error_pages() -> None:
    conn = build()
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, status=502, body=html, content_type="text/html")
        mocked.get(MODULE_URL, payload={"data": [record()], "info": {"more_records": False}})
        got = await conn.read(["5545974000002254155"])  # retried past the HTML 502
        assert not got["5545974000002254155"].deleted
        mocked.get(MODULE_URL, status=400, body=b"<html>Bad request</html>", content_type="text/html")
        with pytest.raises(Rejected) as info:
            await conn.read(["5545974000002254155"])
        assert "HTML" in str(info.value)
    await conn.close()


async def test_success_that_is_a_failure_maps_each_record() -> None:
    conn = build()
    a, b = record("5545974000000000011"), record("5545974000000000012")
    base_a, base_b = conn._record(a), conn._record(b)
    assert base_a.appointment is not None and base_b.appointment is not None
    reqs = [WriteRequest(WriteKind.UPDATE, f"apt_{i}", rec.appointment.with_changes(notes=f"n{i}"),
                         external_id=rec.external_id, current=rec, changed=frozenset({"notes"}))
            for i, rec in enumerate((base_a, base_b)) if rec.appointment is not None]
    answer = {"data": [
        {"code": "SUCCESS", "details": {"Modified_Time": "2026-11-22T16:10:09+05:30", "id": a["id"]},
         "message": "record updated", "status": "success"},
        {"code": "INVALID_DATA", "details": {"api_name": "Additional_Information"},
         "message": "invalid data for ana@example.org", "status": "error"},
    ]}
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, payload={"data": [a, b], "info": {"more_records": False}})
        mocked.put(MODULE_URL, status=202, payload=answer)
        first, second = await conn.write(reqs)
        assert first.ok and first.record is not None
        assert first.record.version == "2026-11-22T10:40:09+00:00"
        assert first.record.appointment is not None and first.record.appointment.notes == "n0"
        assert isinstance(second.error, Rejected) and second.error.code == "INVALID_DATA"
        assert "ana@example.org" not in str(second.error) and "Additional_Information" in str(second.error)
        [put] = next(v for k, v in mocked.requests.items() if k[0] == "PUT")
        sent = json.loads(put.kwargs["data"])
        assert sent == {"data": [{"id": a["id"], "Additional_Information": "n0"},
                                 {"id": b["id"], "Additional_Information": "n1"}], "trigger": []}
        # all failed: HTTP 400 of the first error, still read per record
        mocked.get(MODULE_URL, payload={"data": [a], "info": {"more_records": False}})
        mocked.put(MODULE_URL, status=400, payload={"data": [answer["data"][1]]})
        [only] = await conn.write(reqs[:1])
        assert isinstance(only.error, Rejected)
    await conn.close()


async def test_rate_limit_without_retry_after_waits_60s() -> None:
    conn = create_connector(config(), state=MemoryStateStore(), max_rate_limit_wait=1.0)
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, status=429, payload={"code": "TOO_MANY_REQUESTS", "details": {},
                                                    "message": "API credits exhausted", "status": "error"})
        with pytest.raises(RateLimited) as info:
            await conn.read(["5545974000002254155"])
        assert info.value.wait == 60.0
    await conn.close()


async def test_invalid_token_refreshes_once_and_bad_refresh_is_auth() -> None:
    conn = build()
    invalid = {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
    with aioresponses() as mocked:
        token_ok(mocked, times=2)
        mocked.get(MODULE_URL, status=401, payload=invalid)
        mocked.get(MODULE_URL, payload={"data": [record()], "info": {"more_records": False}})
        await conn.read(["5545974000002254155"])
        assert calls(mocked, "POST", "oauth") == 2  # the first token, then one refresh
        mocked.get(MODULE_URL, status=401, payload=invalid)
        mocked.post(TOKEN_URL, payload={"error": "invalid_code"})
        with pytest.raises(AuthFailure):
            await conn.read(["5545974000002254155"])
        mocked.get(MODULE_URL, status=401, payload={"code": "OAUTH_SCOPE_MISMATCH", "details": {},
                                                    "message": "invalid oauth scope", "status": "error"})
        with pytest.raises(AuthFailure):
            await conn.read(["5545974000002254155"])
    await conn.close()


async def test_maintain_without_public_url_makes_no_call() -> None:
    conn = build()
    with aioresponses() as mocked:
        status = await conn.maintain(None)
        assert status["subscription"] == "not needed" and not mocked.requests
    await conn.close()


# -- against the sandbox --------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox("zoho_crm", port=0)
    try:
        yield rs
    finally:
        await rs.stop()


@pytest.fixture
async def conn(sandbox: RunningSandbox) -> AsyncIterator[ZohoCrmConnector]:
    c = build(sandbox.url)
    try:
        yield c
    finally:
        await c.close()






def delta(after: dict[tuple[str, str], int], before: dict[tuple[str, str], int], method: str, route: str) -> int:
    return after.get((method, route), 0) - before.get((method, route), 0)


MOD = "/crm/v7/Appointments__s"


async def drain(c: ZohoCrmConnector, cursor: str | None) -> tuple[list[VendorRecord], list[str], str | None]:
    records: list[VendorRecord] = []
    deleted: list[str] = []
    async for page in c.changes(cursor):
        records.extend(page.records)
        deleted.extend(page.deleted_ids)
        cursor = page.cursor or cursor
    return records, deleted, cursor


async def test_call_economy_1000_changed_records(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    """Listing 1,000 changed Zoho records and writing them back costs at most 5 reads and 10 writes.

    docs/vendors/zoho_crm.md makes two more calls mandatory, counted separately here (docs/reference.md §7 "Call
    economy", docs/development.md "Which document wins"): the deletions feed GET of every poll cycle
    (part 2), and the pre-write batch re-read, one batch GET per ≤100-record PUT (part 8).
    """
    _, _, cursor = await drain(conn, None)  # empty org: the first pass sets the cursor
    await control(sandbox, "POST", "/_sandbox/clock",
                  {"now": (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    ids = await KIT.seed(sandbox, 1000)
    before = await request_counts(sandbox)
    records, _, cursor = await drain(conn, cursor)
    listed = {r.external_id: r for r in records}
    assert set(ids) <= set(listed)
    after_list = await request_counts(sandbox)
    assert delta(after_list, before, "GET", MOD) <= 5  # the listing itself
    assert delta(after_list, before, "GET", f"{MOD}/deleted") == 1  # mandatory deletions feed (part 2)
    requests = []
    for rid in ids:
        rec = listed[rid]
        assert rec.appointment is not None
        requests.append(WriteRequest(WriteKind.UPDATE, f"apt_{rid}", rec.appointment.with_changes(notes="synced"),
                                     external_id=rid, current=rec, changed=frozenset({"notes"})))
    outcomes = await conn.write(requests)
    assert all(o.ok for o in outcomes)
    after_write = await request_counts(sandbox)
    assert delta(after_write, after_list, "PUT", MOD) <= 10  # the writes
    assert delta(after_write, after_list, "GET", MOD) == 10  # mandatory pre-write batch re-reads (part 8)
    assert delta(after_write, after_list, "POST", MOD) == 0


async def test_read_batches_of_100(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    ids = await KIT.seed(sandbox, 250)
    before = await request_counts(sandbox)
    got = await conn.read([*ids, "5545974000000000404"])
    assert all(not got[i].deleted for i in ids) and got["5545974000000000404"].deleted
    assert delta(await request_counts(sandbox), before, "GET", MOD) == 3  # ⌈251/100⌉


async def test_incremental_poll_drops_ties_and_idles_cheaply(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    ids = await KIT.seed(sandbox, 3)  # seeded in one call: one shared Modified_Time
    _, _, cursor = await drain(conn, None)
    # the window pass leaves T = its start - 60 s: the first incremental pass sees the seeded records again
    seen, _, cursor = await drain(conn, cursor)
    assert set(ids) <= {r.external_id for r in seen}
    await KIT.vendor_edit(sandbox, ids[0])
    await KIT.vendor_edit(sandbox, ids[1])
    first, _, cursor = await drain(conn, cursor)
    assert {r.external_id for r in first} == {ids[0], ids[1]}
    assert cursor is not None
    state = json.loads(cursor)
    assert state["m"]["t"] is not None
    # the next pass sees only ties (dropped): nothing new, two GETs (modified + deletions)
    before = await request_counts(sandbox)
    again, deleted, cursor2 = await drain(conn, cursor)
    assert again == [] and deleted == []
    after = await request_counts(sandbox)
    assert delta(after, before, "GET", MOD) == 1 and delta(after, before, "GET", f"{MOD}/deleted") == 1
    assert json.loads(cursor2 or "{}")["m"] == state["m"]


async def test_since_lists_everything_changed_since(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    ids = await KIT.seed(sandbox, 2)
    got: list[str] = []
    async for page in conn.changes(None, since=datetime.now(UTC) - timedelta(hours=1)):
        got.extend(r.external_id for r in page.records)
    assert set(ids) <= set(got)


async def test_no_op_update_sends_no_put(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_noop", current.appointment, external_id=rid,
                                           current=current, changed=frozenset({"notes"}))])
    assert out.ok and out.record is not None and out.record.version == current.version
    assert delta(await request_counts(sandbox), before, "PUT", MOD) == 0


async def test_reschedule_later_and_cancel_are_sent_the_zoho_way(sandbox: RunningSandbox,
                                                                  conn: ZohoCrmConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired, changed = KIT.update_of(current.appointment)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_r", desired, external_id=rid, current=current,
                                           changed=changed)])
    assert out.ok, out.error
    dump = {r["id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert dump[rid]["Reschedule_Count"] == 1 and dump[rid]["Reschedule_Reason"] == "By Team"
    assert dump[rid]["_last_trigger"] == []
    fresh = (await conn.read([rid]))[rid]
    assert fresh.appointment is not None and fresh.appointment.start == desired.start
    assert fresh.unexpressible == frozenset({"end"})
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_r", KIT.cancel_of(fresh.appointment),
                                           external_id=rid, current=fresh)])
    assert out.ok, out.error
    dump = {r["id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert dump[rid]["Status"] == "Cancelled" and dump[rid]["Cancellation_Reason"] == "By Customer"
    # a terminal record is never edited: an open conflict (NotWritable, docs/vendors/README.md rule 10), without a PUT
    final = (await conn.read([rid]))[rid]
    assert final.appointment is not None
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_r", final.appointment.with_changes(notes="x"),
                                           external_id=rid, current=final, changed=frozenset({"notes"}))])
    assert isinstance(out.error, NotWritable) and out.record is not None
    assert delta(await request_counts(sandbox), before, "PUT", MOD) == 0


async def test_replace_flow_links_old_to_new(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    old = (await conn.read([rid]))[rid]
    assert old.appointment is not None and old.appointment.start is not None and old.appointment.end is not None
    earlier = old.appointment.with_changes(start=old.appointment.start - timedelta(hours=2),
                                           end=old.appointment.end - timedelta(hours=2))
    assert conn.needs_replace(old.appointment, earlier) is not None
    [created] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_repl", earlier, replaces=rid)])
    assert created.ok and created.record is not None
    reason = conn.capabilities.replace_reason
    cancel = old.appointment.with_changes(status=Status.CANCELLED, cancellation_reason=reason)
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_repl", cancel, external_id=rid, current=old)])
    assert out.ok, out.error
    dump = {r["id"]: r for r in (await control(sandbox, "GET", "/_sandbox/records"))["records"]}
    assert dump[rid]["Cancellation_Note"] == f"[syncd] replaced by appointment {created.record.external_id}"
    found = await conn.find_by_reference("apt_repl", exclude=[rid])
    assert [r.external_id for r in found] == [created.record.external_id]


async def test_auto_completion_preference_means_no_completed_write(sandbox: RunningSandbox,
                                                                  conn: ZohoCrmConnector) -> None:
    await control(sandbox, "POST", "/_sandbox/options", {"mark_as_complete": "auto"})
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_auto",
                                           current.appointment.with_changes(status=Status.FULFILLED),
                                           external_id=rid, current=current, changed=frozenset({"status"}))])
    assert out.ok, out.error
    assert delta(await request_counts(sandbox), before, "PUT", MOD) == 0


async def test_watch_subscription_and_callbacks_end_to_end(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    received: list[bytes] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        got.set()
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post("/webhooks/zoho", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        status = await conn.maintain(f"http://127.0.0.1:{port}")
        assert status["subscription"] == "active" and status["renewed"]
        before = await request_counts(sandbox)
        status2 = await conn.maintain(f"http://127.0.0.1:{port}")
        assert status2["renewed"] is False and await request_counts(sandbox) == before  # nothing to renew yet
        channel = await conn.state.get(STATE_CHANNEL)
        watch = (await control(sandbox, "GET", "/_sandbox/records"))["watch"]
        assert str(watch[0]["channel_id"]) == channel
        ids = await KIT.seed(sandbox, 1)
        await asyncio.wait_for(got.wait(), 5)
        delivery = await conn.parse_webhook({}, received[0], now=datetime.now(UTC))
        assert [e.external_id for e in delivery.events] == ids
    finally:
        await runner.cleanup()


# -- cursor rules on the wire (aioresponses) ------------------------------------------------------------


def _page(ids: range, stamp: str, *, more: bool, token: str | None = None) -> dict[str, Any]:
    return {"data": [record(f"55459740000{i:08d}", Modified_Time=stamp) for i in ids],
            "info": {"per_page": 200, "count": len(ids), "more_records": more, "next_page_token": token}}


async def test_keyset_pages_at_one_instant_switch_to_page_token_past_2000() -> None:
    conn = build()
    stamp = "2026-11-22T15:45:03+05:30"  # 10:15:03Z, the cursor's T: the whole answer sits at T
    cursor = json.dumps({"m": {"t": "2026-11-22T10:15:03+00:00", "ties": []}, "d": {"t": None, "ties": []}})
    with aioresponses() as mocked:
        token_ok(mocked)
        for p in range(10):
            mocked.get(MODULE_URL, payload=_page(range(p * 200, p * 200 + 200), stamp, more=True, token="tok-1"))
        mocked.get(MODULE_URL, payload=_page(range(2000, 2050), stamp, more=False))
        mocked.get(re.compile(r"^http://zoho\.test/crm/v7/Appointments__s/deleted\?.*"), status=304)
        pages = [page async for page in conn.changes(cursor)]
        seen = [r.external_id for page in pages for r in page.records]
        assert len(seen) == 2050 and len(set(seen)) == 2050
        gets = [url for (m, url) in mocked.requests if m == "GET" and "/deleted" not in str(url)]
        assert len(gets) == 11
        assert gets[-1].query.get("page_token") == "tok-1" and "page" not in gets[-1].query
        assert [int(u.query["page"]) for u in gets[:10]] == list(range(1, 11))
        assert all(u.query["per_page"] == "200" and u.query["sort_by"] == "Modified_Time" for u in gets[:10])
        final = json.loads(pages[-1].cursor or "{}")
        assert final["m"]["t"] == "2026-11-22T10:15:03+00:00" and len(final["m"]["ties"]) == 2050
    await conn.close()


async def test_keyset_asks_again_from_the_new_t() -> None:
    conn = build()
    cursor = json.dumps({"m": {"t": "2026-11-22T10:00:00+00:00", "ties": ["5545974000000000001"]},
                         "d": {"t": None, "ties": []}})
    first = {"data": [record("5545974000000000001", Modified_Time="2026-11-22T10:00:00+00:00"),
                      record("5545974000000000002", Modified_Time="2026-11-22T10:00:05+00:00")],
             "info": {"more_records": True}}
    second = {"data": [record("5545974000000000002", Modified_Time="2026-11-22T10:00:05+00:00"),
                       record("5545974000000000003", Modified_Time="2026-11-22T10:00:09+00:00")],
              "info": {"more_records": False}}
    with aioresponses() as mocked:
        token_ok(mocked)
        mocked.get(MODULE_URL, payload=first)
        mocked.get(MODULE_URL, payload=second)
        mocked.get(re.compile(r"^http://zoho\.test/crm/v7/Appointments__s/deleted\?.*"), status=304)
        pages = [page async for page in conn.changes(cursor)]
        seen = [r.external_id for page in pages for r in page.records]
        assert seen == ["5545974000000000002", "5545974000000000003"]  # the tie is dropped both times
        gets = [(url, call) for (m, url), c in mocked.requests.items() if m == "GET" for call in c]
        headers = [call.kwargs["headers"].get("If-Modified-Since") for _, call in gets]
        assert headers[:2] == ["2026-11-22T10:00:00+00:00", "2026-11-22T10:00:05+00:00"]
        assert json.loads(pages[-1].cursor or "{}")["m"] == {"t": "2026-11-22T10:00:09+00:00",
                                                            "ties": ["5545974000000000003"]}
    await conn.close()


async def test_reconciliation_splits_a_chunk_still_full_at_page_10() -> None:
    cfg = ConnectorConfig(
        name="zoho", type="zoho_crm", base_url=BASE, timezone="UTC", window_past_days=0, window_future_days=0,
        max_requests_per_second=500.0,
        auth={"accounts_url": Secret(BASE), "client_id": Secret("c"), "client_secret": Secret("s"),
              "refresh_token": Secret("r")},
    )
    conn = create_connector(cfg, state=MemoryStateStore())
    with aioresponses() as mocked:
        token_ok(mocked)
        for p in range(10):
            mocked.get(SEARCH_URL, payload={"data": [record(f"55459740000000000{p:02d}")],
                                            "info": {"more_records": True}})
        mocked.get(SEARCH_URL, status=204)
        mocked.get(SEARCH_URL, status=204)
        pages = [page async for page in conn.changes(None)]
        assert all(p.cursor is None for p in pages[:-1]) and pages[-1].cursor is not None
        searches = [url for (m, url) in mocked.requests if m == "GET"]
        assert len(searches) == 12
        criteria = [u.query["criteria"] for u in searches]
        assert criteria[0].startswith("(Appointment_Start_Time:between:") and criteria[0].endswith("+00:00)")
        low, high = criteria[0][len("(Appointment_Start_Time:between:"):-1].split(",")
        assert criteria[10] != criteria[0] and criteria[10].startswith(f"(Appointment_Start_Time:between:{low},")
        assert criteria[11].endswith(f",{high})")
        assert sum(len(p.records) for p in pages) == 10
    await conn.close()


async def test_earlier_start_sent_as_update_is_a_conflict(sandbox: RunningSandbox, conn: ZohoCrmConnector) -> None:
    # the engine runs a replace flow for this (needs_replace); sent anyway, Zoho's DEPENDENT_FIELD_UNCHANGED
    # is a conflict carrying the re-read record (docs/vendors/zoho_crm.md §6)
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None and current.appointment.start is not None
    assert current.appointment.end is not None
    earlier = current.appointment.with_changes(start=current.appointment.start - timedelta(hours=1),
                                               end=current.appointment.end - timedelta(hours=1))
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_e", earlier, external_id=rid, current=current,
                                           changed=frozenset({"start", "end"}))])
    assert isinstance(out.error, Conflict) and out.error.code == "DEPENDENT_FIELD_UNCHANGED"
    assert out.record is not None and out.record.version == current.version


async def test_write_to_a_deleted_record_is_a_conflict_with_a_deleted_record(sandbox: RunningSandbox,
                                                                             conn: ZohoCrmConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    await KIT.delete(sandbox, rid)
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_d", KIT.cancel_of(current.appointment),
                                           external_id=rid, current=current)])
    assert isinstance(out.error, Conflict) and out.record is not None and out.record.deleted


async def test_completed_before_the_end_time_is_deferred_not_sent(sandbox: RunningSandbox,
                                                                   conn: ZohoCrmConnector) -> None:
    """Part 6: Completed before Appointment_End_Time would be refused (DEPENDENT_MISMATCH, E4), so the
    connector defers it until the end + 1 s and sends nothing now."""
    [rid] = await KIT.seed(sandbox, 1)
    fresh = (await conn.read([rid]))[rid]
    assert fresh.appointment is not None and fresh.appointment.end is not None
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_done",
                                           fresh.appointment.with_changes(status=Status.FULFILLED),
                                           external_id=rid, current=fresh, changed=frozenset({"status"}))])
    assert isinstance(out.error, Deferred)
    assert out.error.not_before == fresh.appointment.end + timedelta(seconds=1)
    assert delta(await request_counts(sandbox), before, "PUT", MOD) == 0
