"""Dentally connector: webhook verification, mapping round trips, wire behaviour and call economy."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import create_connector
from connectors.dentally import PACKAGE as DENTALLY_PACKAGE
from connectors.dentally.client import classify, mask
from connectors.dentally.connector import DentallyConnector
from connectors.dentally.mapfuncs import DentallyMapper, dentally_time_to_utc, utc_to_dentally_time
from syncd.config import ConnectorConfig
from syncd.connector import ChangePage, MemoryStateStore, WriteKind, WriteRequest
from syncd.errors import AuthFailure, Conflict, MappingError, RateLimited, Rejected, Retriable, WebhookError
from syncd.http import Response
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kit import control, request_counts
from tests.connectors.kits.dentally import KIT, TOKEN, USER_AGENT, set_fields

load_vendor_mapping = DENTALLY_PACKAGE.load_mapping

BASE = "http://dentally.test"
LIST_URL = re.compile(r"^http://dentally\.test/v1/appointments\?.*$")
ONE_URL = re.compile(r"^http://dentally\.test/v1/appointments/\d+$")
SECRET = "sandbox-webhook-secret"
NOW = datetime(2026, 11, 22, 10, 15, 30, tzinfo=UTC)

# docs/vendors/dentally.md §3: the worked record
EXAMPLE_RECORD: dict[str, Any] = {
    "id": 757579675, "uuid": "887372ca-aca1-418c-a952-82d152e5cf3a", "start_time": "2026-12-01T09:00:00.000Z",
    "finish_time": "2026-12-01T09:30:00.000Z", "duration": 30, "patient_id": 1013, "practitioner_id": 52,
    "site_id": "b7d4e2a0-5c1f-4d8e-9a3b-1f2e3d4c5b6a", "room_id": None, "reason": "Exam", "state": "Pending",
    "notes": "", "cancellation_reason_id": None, "cancellation_reason": None,
    "metadata": {"syncd_id": "apt_01JD5K8Q2M"},
    "pending_at": "2026-11-22T10:15:03.412Z", "confirmed_at": None, "arrived_at": None, "in_surgery_at": None,
    "completed_at": None, "cancelled_at": None, "did_not_attend_at": None, "created_at": "2026-11-22T10:15:03.412Z",
    "updated_at": "2026-11-22T10:15:03.412Z",
}
# docs/vendors/dentally.md §6: the seed's 422, verbatim
SEED_422 = {"error": {"type": "invalid_request_error", "message": "The appointment could not be processed",
                      "params": {"state": ["The appointment can not be updated as the current status is: Confirmed"],
                                 "patient_id": ["can not change patients"]}}}
# docs/vendors/dentally.md §2 (a): the example delivery
EXAMPLE_DELIVERY = (b'{"id":"0b6f4c1e-6a0e-4c59-9f0a-2d1c7e3b9a10","event":"appointment.updated",'
                    b'"created_at":"2026-11-22T10:15:03Z","data":{"id":757579675,'
                    b'"uuid":"887372ca-aca1-418c-a952-82d152e5cf3a"}}')

MAPPER = DentallyMapper(load_vendor_mapping())


def config(base_url: str = BASE, *, secret: str | None = SECRET, rps: float = 500.0) -> ConnectorConfig:
    return ConnectorConfig(
        name="dentally", type="dentally", base_url=base_url, timezone="Europe/London",
        webhook_secret=Secret(secret) if secret else None, max_requests_per_second=rps,
        auth={"access_token": Secret(TOKEN), "user_agent": Secret(USER_AGENT)},
    )


def build(base_url: str = BASE, **kw: Any) -> DentallyConnector:
    conn = create_connector(config(base_url, **kw), state=MemoryStateStore())
    assert isinstance(conn, DentallyConnector)
    conn.client.http.backoff_base = 0.001  # keep wire tests fast
    conn.client.http.backoff_max = 0.01
    return conn


def record(rid: int = 757579675, **changes: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(EXAMPLE_RECORD))
    raw["id"] = rid
    raw.update(changes)
    return raw


def calls(mocked: aioresponses, method: str, pattern: str) -> list[Any]:
    return [c for (m, url), v in mocked.requests.items() if m == method and re.search(pattern, str(url)) for c in v]


def urls(mocked: aioresponses, method: str, pattern: str) -> list[str]:
    return [str(url) for (m, url), v in mocked.requests.items() if m == method and re.search(pattern, str(url))
            for _ in v]


def signed(body: bytes, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(NOW.timestamp()))
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}", "Content-Type": "application/json"}


async def drain(conn: DentallyConnector, cursor: str | None) -> tuple[list[ChangePage], str | None]:
    pages = [p async for p in conn.changes(cursor)]
    for page in pages:
        cursor = page.cursor if page.cursor is not None else cursor
    return pages, cursor


# -- webhooks (generic scheme, docs/vendors/dentally.md §2 (a) and "Generic webhook signature") ------------------


async def test_generic_worked_example_signature_verifies_then_body_is_not_a_dentally_event() -> None:
    body = b'{"ids":["08pxx0000004KGGAA2"]}'
    assert len(body) == 30
    headers = {"X-Syncd-Timestamp": "1795345200",
               "X-Syncd-Signature": "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"}
    conn = build()
    when = datetime.fromtimestamp(1795345200, UTC)
    with pytest.raises(WebhookError) as info:  # the signature passed: the 400 comes from the body check
        await conn.parse_webhook(headers, body, now=when)
    assert (info.value.status, info.value.code) == (400, "malformed_body")
    with pytest.raises(WebhookError) as stale:
        await conn.parse_webhook(headers, body, now=when + timedelta(seconds=301))
    assert stale.value.status == 401
    await conn.close()


async def test_webhook_example_delivery_is_parsed() -> None:
    conn = build()
    delivery = await conn.parse_webhook(signed(EXAMPLE_DELIVERY), EXAMPLE_DELIVERY, now=NOW)
    assert [(e.external_id, e.deleted, e.record) for e in delivery.events] == [("757579675", False, None)]
    assert delivery.dedup_key == "0b6f4c1e-6a0e-4c59-9f0a-2d1c7e3b9a10"
    assert delivery.signed_timestamp == str(int(NOW.timestamp()))
    await conn.close()


async def test_webhook_deleted_marks_deleted_and_other_events_are_ignored() -> None:
    conn = build()
    deleted = EXAMPLE_DELIVERY.replace(b"appointment.updated", b"appointment.deleted")
    delivery = await conn.parse_webhook(signed(deleted), deleted, now=NOW)
    assert [(e.external_id, e.deleted) for e in delivery.events] == [("757579675", True)]
    payment = EXAMPLE_DELIVERY.replace(b"appointment.updated", b"payment.created")
    ignored = await conn.parse_webhook(signed(payment), payment, now=NOW)
    assert list(ignored.events) == [] and ignored.dedup_key == "0b6f4c1e-6a0e-4c59-9f0a-2d1c7e3b9a10"
    await conn.close()


async def test_webhook_rotation_allows_several_v1_values() -> None:
    conn = build()
    headers = signed(EXAMPLE_DELIVERY)
    headers["X-Syncd-Signature"] = "v1=" + "0" * 64 + ", " + headers["X-Syncd-Signature"]
    delivery = await conn.parse_webhook(headers, EXAMPLE_DELIVERY, now=NOW)
    assert len(delivery.events) == 1
    await conn.close()


@pytest.mark.parametrize(
    ("headers", "body", "now", "status", "code"),
    [
        (signed(EXAMPLE_DELIVERY, secret="wrong-secret"), EXAMPLE_DELIVERY, NOW, 401, "signature_mismatch"),
        (signed(EXAMPLE_DELIVERY), EXAMPLE_DELIVERY, NOW + timedelta(seconds=301), 401, "timestamp_stale"),
        (signed(EXAMPLE_DELIVERY), EXAMPLE_DELIVERY, NOW - timedelta(seconds=301), 401, "timestamp_stale"),
        ({"X-Syncd-Timestamp": str(int(NOW.timestamp()))}, EXAMPLE_DELIVERY, NOW, 401, "signature_missing"),
        ({}, EXAMPLE_DELIVERY, NOW, 401, "signature_missing"),
        (signed(EXAMPLE_DELIVERY), EXAMPLE_DELIVERY + b" ", NOW, 401, "signature_mismatch"),
        (signed(b"{not json"), b"{not json", NOW, 400, "malformed_body"),
        (signed(b"not json", secret="wrong"), b"not json", NOW, 401, "signature_mismatch"),  # 401 before 400
        (signed(b'{"id":"e1","event":"appointment.updated"}'), b'{"id":"e1","event":"appointment.updated"}',
         NOW, 400, "malformed_body"),
    ],
)
async def test_webhook_refusals(headers: dict[str, str], body: bytes, now: datetime, status: int, code: str) -> None:
    conn = build()
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook(headers, body, now=now)
    assert (info.value.status, info.value.code) == (status, code)
    await conn.close()


async def test_webhooks_disabled_without_secret_and_maintain_makes_no_call() -> None:
    conn = build(secret=None)
    with pytest.raises(WebhookError) as info:
        await conn.parse_webhook(signed(EXAMPLE_DELIVERY), EXAMPLE_DELIVERY, now=NOW)
    assert info.value.status == 404
    with aioresponses() as mocked:
        status = await conn.maintain("https://syncd.example.org")
        assert status["subscription"] == "not needed" and not mocked.requests
    await conn.close()


# -- mapping (part 9) ------------------------------------------------------------------------------------


def test_worked_record_maps_to_canonical() -> None:
    a = MAPPER.to_appointment(EXAMPLE_RECORD)
    assert a.status is Status.PENDING and a.native_status == "Pending"
    assert a.start == datetime(2026, 12, 1, 9, 0, tzinfo=UTC) and a.end == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert (a.patient, a.practitioner, a.location, a.service_type) == (
        "1013", "52", "b7d4e2a0-5c1f-4d8e-9a3b-1f2e3d4c5b6a", "Exam")
    assert a.notes is None and a.description is None and a.extra == {"uuid": EXAMPLE_RECORD["uuid"]}
    assert MAPPER.syncd_id(EXAMPLE_RECORD) == "apt_01JD5K8Q2M"
    assert MAPPER.version(EXAMPLE_RECORD) == "2026-11-22T10:15:03.412Z"


@pytest.mark.parametrize(
    ("state", "reason", "status"),
    [
        ("Confirmed", None, Status.BOOKED), ("Arrived", None, Status.ARRIVED), ("In surgery", None, Status.ARRIVED),
        ("Completed", None, Status.FULFILLED), ("Did not attend", None, Status.NOSHOW),
        ("Cancelled", "Booked in error", Status.ENTERED_IN_ERROR), ("Cancelled", "booked IN error",
                                                                     Status.ENTERED_IN_ERROR),
        ("Cancelled", "Cancelled by patient", Status.CANCELLED),
    ],
)
def test_status_in(state: str, reason: str | None, status: Status) -> None:
    a = MAPPER.to_appointment(record(state=state, cancellation_reason=reason))
    assert a.status is status and a.native_status == state
    if status in (Status.CANCELLED, Status.ENTERED_IN_ERROR):
        assert a.cancellation_reason == reason


@pytest.mark.parametrize(
    "change",
    [{"state": "Rescheduled"}, {"start_time": "2026-12-01T09:00:00"}, {"patient_id": "abc"},
     {"finish_time": "2026-12-01T08:00:00.000Z"}],
)
def test_unmappable_records_raise_mapping_error(change: dict[str, Any]) -> None:
    with pytest.raises(MappingError):
        MAPPER.to_appointment(record(**change))


REASONS = ("Cancelled by patient", "Cancelled by practice", "Other")
ROUND_TRIP_STATUSES = (Status.PENDING, Status.BOOKED, Status.ARRIVED, Status.FULFILLED, Status.CANCELLED,
                       Status.NOSHOW, Status.ENTERED_IN_ERROR)


@st.composite
def canonical(draw: st.DrawFn) -> Appointment:
    status = draw(st.sampled_from(ROUND_TRIP_STATUSES))
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 2_000_000)))
    end = start + timedelta(seconds=draw(st.integers(60, 6 * 3600)))
    reason: str | None = None
    if status is Status.CANCELLED:
        reason = draw(st.sampled_from(REASONS))
    elif status is Status.ENTERED_IN_ERROR:
        reason = "Booked in error"
    ids = st.integers(1, 10**9).map(str)
    text = st.text(min_size=1, max_size=40).filter(lambda s: s != "")
    return Appointment(
        status=status, start=start, end=end,
        patient=draw(st.none() | ids), practitioner=draw(ids),
        location=draw(st.none() | st.uuids().map(str)), service_type=draw(st.none() | text),
        notes=draw(st.none() | text), cancellation_reason=reason,
    )


def to_wire(a: Appointment) -> dict[str, Any]:
    """canonical -> vendor with the connector's own functions (the vendor stores what it is sent)."""
    body = MAPPER.create_body(a.with_changes(status=Status.PENDING, cancellation_reason=None), "apt_x", None)
    body["state"] = MAPPER.native_for(a)
    if body["state"] == "Cancelled":
        body["cancellation_reason"] = MAPPER.reason_name(a)
    body.update(id=1, updated_at="2026-11-22T10:15:03.412Z")
    return body


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical())
def test_round_trip_is_identity_on_every_field_dentally_holds(a: Appointment) -> None:
    back = MAPPER.to_appointment(to_wire(a))
    for name in ("status", "start", "end", "patient", "practitioner", "location", "service_type", "notes",
                 "cancellation_reason"):
        assert getattr(back, name) == getattr(a, name), name
    assert back.description is None  # no Dentally field (unexpressible)


@settings(max_examples=50, deadline=None)
@given(canonical(), st.sampled_from([Status.PROPOSED, Status.CHECKED_IN]))
def test_lossy_statuses_map_to_their_neighbour(a: Appointment, status: Status) -> None:
    wire = to_wire(a.with_changes(status=status, cancellation_reason=None))
    assert MAPPER.to_appointment(wire).status is {Status.PROPOSED: Status.PENDING,
                                                  Status.CHECKED_IN: Status.ARRIVED}[status]


@settings(max_examples=50, deadline=None)
@given(canonical(), st.text(min_size=1, max_size=10).filter(lambda s: not s.isdigit() or not s.isascii()))
def test_unmappable_desired_values_raise(a: Appointment, bad: str) -> None:
    with pytest.raises(MappingError):
        MAPPER.native_for(a.with_changes(status=Status.WAITLIST, cancellation_reason=None))
    with pytest.raises(MappingError):
        MAPPER.create_body(a.with_changes(status=Status.BOOKED, cancellation_reason=None, practitioner=bad), "x", None)
    with pytest.raises(MappingError):
        MAPPER.create_body(a.with_changes(status=Status.ARRIVED, cancellation_reason=None), "x", None)


def test_times_are_written_utc_with_milliseconds_and_z() -> None:
    when = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert utc_to_dentally_time(when) == "2026-12-01T10:00:00.123Z"
    assert dentally_time_to_utc("2026-12-01T10:00:00.123+01:00") == datetime(2026, 12, 1, 9, 0, 0, 123000, tzinfo=UTC)


def test_needs_replace_only_for_patient_changes() -> None:
    conn = build()
    current = MAPPER.to_appointment(record(state="Confirmed"))
    assert conn.needs_replace(current, current.with_changes(patient="1014"))
    assert conn.needs_replace(current, current.with_changes(patient=None))
    assert conn.needs_replace(current, current.with_changes(notes="x")) is None
    assert conn.needs_replace(current, current.with_changes(status=Status.CANCELLED)) is None
    pending_without = MAPPER.to_appointment(record(patient_id=None))
    assert conn.needs_replace(pending_without, pending_without.with_changes(patient="1014")) is None
    confirmed_without = MAPPER.to_appointment(record(patient_id=None, state="Confirmed"))
    assert conn.needs_replace(confirmed_without, confirmed_without.with_changes(patient="1014"))
    caps = conn.capabilities
    assert (caps.batch_read_size, caps.batch_write_size, caps.patient_change, caps.webhooks,
            caps.replace_reason) == (1, 1, False, True, "Booked in error")


# -- classification (part 6 and 7) --------------------------------------------------------------------------


def resp(status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Response:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return Response(status=status, headers={"Content-Type": "application/json", **(headers or {})}, body=data, url=BASE)


def err(message: str, etype: str = "invalid_access_error",
        params: dict[str, list[str]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": etype, "message": message}
    if params is not None:
        error["params"] = params
    return {"error": error}


def test_classification() -> None:
    seed = classify(resp(422, SEED_422))
    assert isinstance(seed, Rejected) and "can not change patients" in str(seed)
    assert "current status is: Confirmed" in str(seed)
    lock = classify(resp(422, err("The appointment could not be processed", "invalid_request_error",
                                  {"state": ["The appointment can not be updated as the current status is: Arrived"]})))
    assert isinstance(lock, Conflict)
    transition = classify(resp(422, err("The appointment could not be processed", "invalid_request_error",
                                        {"state": ["can not transition from Confirmed to Completed"]})))
    assert isinstance(transition, Rejected)
    assert isinstance(classify(resp(401, err("The access token is invalid"))), AuthFailure)
    assert isinstance(classify(resp(403, err("A User-Agent header is required"))), AuthFailure)
    hourly = classify(resp(403, err("Rate limit exceeded"), {"X-RateLimit-Reset": "4102444800"}))
    assert isinstance(hourly, RateLimited) and hourly.wait > 3600
    no_reset = classify(resp(403, err("Rate limit exceeded")))
    assert isinstance(no_reset, RateLimited) and no_reset.wait == 60
    burst = classify(resp(429, err("Too many requests", "rate_limit_error"), {"Retry-After": "3"}))
    assert isinstance(burst, RateLimited) and burst.wait == 3
    assert isinstance(classify(resp(503, err("Internal server error", "api_error"))), Retriable)
    assert isinstance(classify(resp(500)), Retriable)
    html = classify(Response(400, {"Content-Type": "text/html"}, b"<html>oops</html>", BASE))
    assert isinstance(html, Rejected) and "HTML" in str(html)
    refused = classify(resp(400, err("Invalid parameter", "invalid_request_error",
                                     {"updated_after": ["is not a permitted parameter"]})))
    assert isinstance(refused, Rejected) and refused.code == "updated_after_refused"
    assert classify(resp(200, {"appointment": {}})) is None


def test_vendor_messages_are_masked() -> None:
    out = classify(resp(422, err("bad", "invalid_request_error", {"notes": ["ana.ruiz@example.org +34 600 001 002"]})))
    assert out is not None and "example.org" not in str(out) and "600" not in str(out)
    assert mask("call +44 20 7946 0958") == "call ***"


# -- wire (aioresponses) -----------------------------------------------------------------------------------


async def test_headers_on_every_request() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(ONE_URL, payload={"appointment": record()})
        await conn.read(["757579675"])
        [call] = calls(mocked, "GET", r"/v1/appointments/757579675$")
        headers = call.kwargs["headers"]
        assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["User-Agent"] == USER_AGENT
        assert headers["Accept"] == "application/json"
    await conn.close()


async def test_connect_timeout_is_retried_then_succeeds() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(ONE_URL, exception=aiohttp.ServerTimeoutError("connect timed out"))
        mocked.get(ONE_URL, exception=aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("dentally.test", 80, False, False, None, None, None),
            OSError("refused")))
        mocked.get(ONE_URL, payload={"appointment": record()})
        got = await conn.read(["757579675"])
        assert not got["757579675"].deleted
        assert len(calls(mocked, "GET", r"/v1/appointments/\d+$")) == 3
    await conn.close()


async def test_read_timeout_exhausts_retries_as_retriable() -> None:
    conn = build()
    with aioresponses() as mocked:
        for _ in range(5):
            mocked.get(ONE_URL, exception=TimeoutError())
        with pytest.raises(Retriable):
            await conn.read(["757579675"])
    await conn.close()


async def test_timeout_on_create_searches_by_reference_instead_of_repeating() -> None:
    conn = build()
    created = record(757579999, metadata={"syncd_id": "apt_lost"})
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v1/appointments", exception=TimeoutError())
        mocked.get(LIST_URL, payload={"appointments": [record(), created], "meta": {"page": 1, "per_page": 100}})
        desired = MAPPER.to_appointment(created).with_changes(status=Status.BOOKED)
        [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_lost", desired)])
        assert out.ok and out.record is not None and out.record.external_id == "757579999"
        assert len(calls(mocked, "POST", r"/v1/appointments$")) == 1
        [search] = urls(mocked, "GET", r"/v1/appointments\?")
        query = parse_qs(urlsplit(search).query)
        assert query["sort_by"] == ["updated_at"] and query["sort_direction"] == ["desc"]
        assert query["per_page"] == ["100"] and "updated_after" in query
    await conn.close()


async def test_malformed_json_is_retried() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(ONE_URL, body=b'{"appointment": {', content_type="application/json")
        mocked.get(ONE_URL, payload={"appointment": record()})
        got = await conn.read(["757579675"])
        assert got["757579675"].appointment is not None
    await conn.close()


async def test_html_error_page_is_retried_then_raised() -> None:
    conn = build()
    with aioresponses() as mocked:
        for _ in range(5):
            mocked.get(ONE_URL, status=502, body=b"<html><body>Bad gateway</body></html>", content_type="text/html")
        with pytest.raises(Retriable):
            await conn.read(["757579675"])
        assert len(calls(mocked, "GET", r"/v1/appointments/\d+$")) == 5
    await conn.close()


async def test_200_html_page_is_not_taken_for_success() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(ONE_URL, status=200, body=b"<html>maintenance</html>", content_type="text/html")
        mocked.get(ONE_URL, payload={"appointment": record()})
        got = await conn.read(["757579675"])
        assert got["757579675"].appointment is not None
    await conn.close()


async def test_404_read_is_deleted() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(ONE_URL, status=404, payload=err("Record not found", "not_found_error"))
        got = await conn.read(["757579675"])
        assert got["757579675"].deleted
    await conn.close()


async def test_incremental_cursor_overlap_and_paging() -> None:
    conn = build()
    cursor = json.dumps({"mode": "poll", "t": "2026-11-22T10:14:02.412Z",
                         "r": utc_to_dentally_time(datetime.now(UTC))})
    full = [record(757500000 + i, updated_at=f"2026-11-22T10:20:{59 - i % 60:02d}.000Z") for i in range(100)]
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"appointments": full, "meta": {"page": 1, "per_page": 100}})
        mocked.get(LIST_URL, payload={"appointments": [record(757600000)], "meta": {"page": 2, "per_page": 100}})
        mocked.get(LIST_URL, payload={"appointments": [], "meta": {"total": 101}})  # the window count check
        pages, new = await drain(conn, cursor)
        asked = urls(mocked, "GET", r"/v1/appointments\?")
        first = parse_qs(urlsplit(asked[0]).query)
        assert first["updated_after"] == ["2026-11-22T10:14:01.412Z"]  # cursor − 1 s
        assert first["sort_by"] == ["updated_at"] and first["sort_direction"] == ["desc"]
        assert parse_qs(urlsplit(asked[1]).query)["page"] == ["2"]
    assert pages[0].cursor == cursor  # not resumable mid-pass: the old cursor
    assert new is not None and json.loads(new)["t"] == "2026-11-22T10:20:59.000Z"
    assert sum(len(p.records) for p in pages) == 101
    await conn.close()


async def test_since_lists_everything_changed_since() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"appointments": [record()], "meta": {}})
        mocked.get(LIST_URL, payload={"appointments": [], "meta": {"total": 1}})  # the window count check
        pages = [p async for p in conn.changes(None, since=datetime(2026, 11, 20, tzinfo=UTC))]
        asked = parse_qs(urlsplit(urls(mocked, "GET", r"/v1/appointments\?")[0]).query)
        assert asked["updated_after"] == ["2026-11-19T23:59:59.000Z"]
    assert [r.external_id for p in pages for r in p.records] == ["757579675"]
    await conn.close()


async def test_unmappable_listed_record_is_a_record_error_not_a_crash() -> None:
    conn = build()
    with aioresponses() as mocked:
        mocked.get(LIST_URL, payload={"appointments": [record(state="Rescheduled")], "meta": {}})
        mocked.get(LIST_URL, payload={"appointments": [], "meta": {"total": 1}})  # the window count check
        pages = [p async for p in conn.changes(None, since=NOW)]
    [rec] = [r for p in pages for r in p.records]
    assert rec.error is not None and rec.appointment is None and rec.version
    await conn.close()


# -- against the sandbox ------------------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox("dentally", port=0, **KIT.sandbox_options())
    try:
        yield rs
    finally:
        await rs.stop()


@pytest.fixture
async def conn(sandbox: RunningSandbox) -> AsyncIterator[DentallyConnector]:
    c = build(sandbox.url)
    try:
        yield c
    finally:
        await c.close()






async def dump(sb: RunningSandbox) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): r for r in (await control(sb, "GET", "/_sandbox/records"))["records"]}


def route_count(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], method: str,
                route_part: str) -> int:
    return sum(v - before.get(k, 0) for k, v in after.items() if k[0] == method and k[1].endswith(route_part))


async def test_reading_n_records_costs_n_gets(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 7)
    before = await request_counts(sandbox)
    got = await conn.read([*ids, "757000001"])
    after = await request_counts(sandbox)
    assert route_count(before, after, "GET", "/appointments/{id}") == 8
    assert got["757000001"].deleted and all(not got[i].deleted for i in ids)


async def test_idle_incremental_costs_one_get(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    await KIT.seed(sandbox, 3)
    _, cursor = await drain(conn, None)
    _, cursor = await drain(conn, cursor)  # first pass of the process also counts the window once
    before = await request_counts(sandbox)
    pages, _ = await drain(conn, cursor)
    after = await request_counts(sandbox)
    assert route_count(before, after, "GET", "/appointments") == 1
    assert len(pages) == 1


async def test_reconciliation_pages_and_filters_start_time_itself(sandbox: RunningSandbox,
                                                                  conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 150)
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "GET", "path": "/v1/appointments"}, "times": 50,
                      "action": {"type": "ignore_before"}})
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "GET", "path": "/v1/appointments"}, "times": 50,
                      "action": {"type": "omit_total_pages"}})
    pages, cursor = await drain(conn, None)
    seen = [r.external_id for p in pages for r in p.records]
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))  # no duplicate across chunks
    assert all(p.cursor is None for p in pages[:-1]) and cursor is not None


async def test_updated_after_refused_switches_to_window_mode(sandbox: RunningSandbox,
                                                             conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 3)
    _, cursor = await drain(conn, None)
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "GET", "path": "/v1/appointments"}, "times": 1,
                      "action": {"type": "reject_updated_after"}})
    await KIT.vendor_edit(sandbox, ids[0])
    pages, new = await drain(conn, cursor)
    assert ids[0] in {r.external_id for p in pages for r in p.records}
    assert new is not None and json.loads(new)["mode"] == "window"
    before = await request_counts(sandbox)
    pages2, _ = await drain(conn, new)  # within max(poll_interval, 900 s): nothing to do
    assert await request_counts(sandbox) == before and all(not p.records for p in pages2)


async def test_create_writes_reference_and_no_description(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    await KIT.seed(sandbox, 1)
    desired = KIT.new_appointment().with_changes(description="not stored in Dentally")
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_ref_1", desired)])
    assert out.ok and out.record is not None
    assert out.record.syncd_id == "apt_ref_1" and "description" in out.record.unexpressible
    stored = (await dump(sandbox))[out.record.external_id]
    assert stored["metadata"] == {"syncd_id": "apt_ref_1"} and stored["state"] == "Confirmed"
    assert stored["start_time"].endswith("Z")


async def test_update_sends_only_what_still_differs(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    await set_fields(sandbox, rid, state="Pending")
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired = current.appointment.with_changes(notes="only this")
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_u", desired, external_id=rid, current=current,
                                           changed=frozenset({"notes", "start"}))])
    assert out.ok and out.record is not None and out.record.version != current.version
    after = await request_counts(sandbox)
    assert route_count(before, after, "PUT", "/appointments/{id}") == 1
    assert route_count(before, after, "GET", "/appointments/{id}") == 1  # the re-read before the PUT
    # nothing differs any more: no PUT at all
    [again] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_u", desired, external_id=rid, current=out.record,
                                             changed=frozenset({"notes"}))])
    assert again.ok and route_count(after, await request_counts(sandbox), "PUT", "/appointments/{id}") == 0


async def test_auto_confirm_between_reread_and_put_is_a_conflict(sandbox: RunningSandbox,
                                                                 conn: DentallyConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    await set_fields(sandbox, rid, state="Pending")
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None and current.appointment.start is not None
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "PUT", "path": f"/v1/appointments/{rid}"}, "times": 1,
                      "action": {"type": "auto_confirm"}})
    later = current.appointment.start + timedelta(hours=2)
    assert current.appointment.end is not None
    desired = current.appointment.with_changes(start=later, end=current.appointment.end + timedelta(hours=2))
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_ac", desired, external_id=rid, current=current,
                                           changed=frozenset({"start", "end"}))])
    assert isinstance(out.error, Conflict)
    assert out.record is not None and out.record.appointment is not None
    assert out.record.appointment.native_status == "Confirmed"
    # merged again with the fresh record: the start is now locked -> a refusal naming the lock, no PUT
    [again] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_ac", desired, external_id=rid,
                                             current=out.record, changed=frozenset({"start", "end"}))])
    assert isinstance(again.error, Rejected) and "locked: Confirmed" in str(again.error)


async def test_cancel_default_reason_and_arrived_not_written_over_in_surgery(
    sandbox: RunningSandbox, conn: DentallyConnector
) -> None:
    a, b = await KIT.seed(sandbox, 2)
    current = (await conn.read([a]))[a]
    assert current.appointment is not None
    desired = current.appointment.with_changes(status=Status.CANCELLED)
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_c", desired, external_id=a, current=current)])
    assert out.ok
    assert (await dump(sandbox))[a]["cancellation_reason"] == "Other"
    await set_fields(sandbox, b, state="Arrived")
    await set_fields(sandbox, b, state="In surgery")
    cur_b = (await conn.read([b]))[b]
    assert cur_b.appointment is not None and cur_b.appointment.native_status == "In surgery"
    before = await request_counts(sandbox)
    [kept] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_b", cur_b.appointment.with_changes(
        status=Status.ARRIVED), external_id=b, current=cur_b, changed=frozenset({"status"}))])
    assert kept.ok and route_count(before, await request_counts(sandbox), "PUT", "/appointments/{id}") == 0


async def test_waitlist_is_a_mapping_error_and_nothing_is_written(sandbox: RunningSandbox,
                                                                  conn: DentallyConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    before = await request_counts(sandbox)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_w", current.appointment.with_changes(
        status=Status.WAITLIST), external_id=rid, current=current, changed=frozenset({"status"}))])
    assert isinstance(out.error, MappingError)
    assert route_count(before, await request_counts(sandbox), "PUT", "/appointments/{id}") == 0


async def test_patient_change_replace_flow(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    [old] = await KIT.seed(sandbox, 1)
    current = (await conn.read([old]))[old]
    assert current.appointment is not None
    other = KIT.patients[1] if current.appointment.patient == KIT.patients[0] else KIT.patients[0]
    desired = current.appointment.with_changes(patient=other)
    assert conn.needs_replace(current.appointment, desired)
    # the lost response of the replace create is found by syncd_id + syncd_replaces, not repeated
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "POST", "path": "/v1/appointments"}, "times": 1,
                      "action": {"type": "drop_after_apply"}})
    [made] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_r", desired, replaces=old)])
    assert made.ok and made.record is not None and made.record.replaces == old
    new = made.record.external_id
    cancel = current.appointment.with_changes(status=Status.ENTERED_IN_ERROR,
                                              cancellation_reason=conn.capabilities.replace_reason)
    [gone] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_r", cancel, external_id=old, current=current)])
    assert gone.ok
    records = await dump(sandbox)
    assert records[old]["state"] == "Cancelled" and records[old]["cancellation_reason"] == "Booked in error"
    assert records[old]["notes"].endswith(f"[syncd] replaced by appointment {new}")
    assert records[new]["metadata"] == {"syncd_id": "apt_r", "syncd_replaces": old}
    assert len([r for r in records.values() if r["metadata"].get("syncd_id") == "apt_r"]) == 1
    found = await conn.find_by_reference("apt_r", exclude=[old])
    assert [r.external_id for r in found] == [new]


async def test_hourly_quota_403_waits_for_the_reset(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/faults",
                     {"match": {"method": "GET", "path": "/v1/appointments/*"}, "times": 1,
                      "action": {"type": "rate_limit_hourly"}})
    conn.client.http.max_rate_limit_wait = 5.0  # the reset is about an hour away: give up instead of waiting
    with pytest.raises(RateLimited) as info:
        await conn.read(ids)
    assert info.value.wait > 60


async def test_user_agent_is_mandatory(sandbox: RunningSandbox) -> None:
    ids = await KIT.seed(sandbox, 1)
    bare = build(sandbox.url)
    bare.client.auth.user_agent = ""
    with pytest.raises(AuthFailure) as info:
        await bare.read(ids)
    assert "User-Agent" in str(info.value)
    await bare.close()


async def test_deletion_found_by_reconciliation_absence(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 4)
    _, cursor = await drain(conn, None)
    await KIT.delete(sandbox, ids[2])
    state = json.loads(cursor or "{}")
    state["r"] = "2026-01-01T00:00:00.000Z"  # the daily reconciliation is due
    pages, _ = await drain(conn, json.dumps(state))
    assert [d for p in pages for d in p.deleted_ids] == [ids[2]]
    records = {r.external_id: r for p in pages for r in p.records}
    assert set(ids) - {ids[2]} <= set(records)


async def test_daily_reconciliation_runs_after_the_poll(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    ids = await KIT.seed(sandbox, 3)
    _, cursor = await drain(conn, None)
    far = datetime.now(UTC).replace(microsecond=0) + timedelta(days=200)  # outside the reconciliation window
    await set_fields(sandbox, ids[0], start_time=utc_to_dentally_time(far),
                     finish_time=utc_to_dentally_time(far + timedelta(minutes=30)))
    state = json.loads(cursor or "{}")
    state["r"] = "2026-01-01T00:00:00.000Z"  # the daily reconciliation is due
    before = await request_counts(sandbox)
    pages, new = await drain(conn, json.dumps(state))
    moved = [r for p in pages for r in p.records if r.external_id == ids[0]]
    assert moved and moved[0].appointment is not None and moved[0].appointment.start == far
    assert not [d for p in pages for d in p.deleted_ids]  # moved out of the window is not deleted
    assert new is not None and json.loads(new)["r"] != "2026-01-01T00:00:00.000Z"
    after = await request_counts(sandbox)
    assert route_count(before, after, "GET", "/appointments") >= 2  # the poll, then the window chunks


async def test_known_ids_survive_a_restart(sandbox: RunningSandbox) -> None:
    ids = await KIT.seed(sandbox, 3)
    store = MemoryStateStore()
    first = create_connector(config(sandbox.url), state=store)
    assert isinstance(first, DentallyConnector)
    _, cursor = await drain(first, None)
    await first.close()
    await KIT.delete(sandbox, ids[0])
    second = create_connector(config(sandbox.url), state=store)
    assert isinstance(second, DentallyConnector)
    pages, _ = await drain(second, cursor)
    await second.close()
    assert ids[0] in {d for p in pages for d in p.deleted_ids}


async def test_sandbox_webhooks_verify_and_parse(sandbox: RunningSandbox, conn: DentallyConnector) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        got.set()
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post("/webhooks/dentally", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await control(sandbox, "POST", "/_sandbox/options",
                         {"webhook_url": f"http://127.0.0.1:{port}/webhooks/dentally"})
        [rid] = await KIT.seed(sandbox, 1)
        await asyncio.wait_for(got.wait(), 5)
        headers, body = received[0]
        delivery = await conn.parse_webhook(headers, body, now=datetime.now(UTC))
        assert [(e.external_id, e.deleted) for e in delivery.events] == [(rid, False)]
        assert delivery.dedup_key
        got.clear()
        await KIT.delete(sandbox, rid)
        await asyncio.wait_for(got.wait(), 5)
        headers, body = received[-1]
        gone = await conn.parse_webhook(headers, body, now=datetime.now(UTC))
        assert [(e.external_id, e.deleted) for e in gone.events] == [(rid, True)]
    finally:
        await runner.cleanup()
