"""Onlive connector: signing vectors, mapping round trip, wire faults (aioresponses) and sandbox behaviour."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import create_connector
from connectors.onlive import PACKAGE as ONLIVE_PACKAGE
from connectors.onlive.client import OnliveAuth, canonical_query, classify, query_string, sign, string_to_sign
from connectors.onlive.connector import OnliveConnector
from connectors.onlive.mapfuncs import OnliveMapper, onlive_time_to_utc, patient_to_guests, utc_to_onlive_time
from syncd.config import ConnectorConfig
from syncd.connector import MemoryStateStore, VendorRecord, WriteKind, WriteRequest
from syncd.errors import AuthFailure, Conflict, MappingError, RateLimited, Rejected, Retriable, WebhookError
from syncd.http import Response
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kit import control, request_counts
from tests.connectors.kits.onlive import KEY_ID, SECRET, fresh_seed, iso

load_vendor_mapping = ONLIVE_PACKAGE.load_mapping

BASE = "http://onlive.test"
LIST = re.compile(r"^http://onlive\.test/api/v2/appointments(\?.*)?$")
ONE = re.compile(r"^http://onlive\.test/api/v2/appointments/[^/?]+$")
RID = "1610c525-f19a-40d0-8cd1-03daba3d2d98"


def config(base_url: str = BASE, **kw: Any) -> ConnectorConfig:
    values: dict[str, Any] = {
        "name": "onlive", "type": "onlive", "base_url": base_url, "poll_interval": 60.0, "timezone": "UTC",
        "max_requests_per_second": 1000.0,
        "auth": {"access_key_id": Secret(KEY_ID), "secret_access_key": Secret(SECRET)},
    }
    values.update(kw)
    return ConnectorConfig(**values)


def connector(base_url: str = BASE, **kw: Any) -> OnliveConnector:
    conn = create_connector(config(base_url, **kw), state=MemoryStateStore())
    assert isinstance(conn, OnliveConnector)
    conn.client.http.backoff_base = 0.001  # fast retries in tests
    conn.client.http.backoff_max = 0.01
    return conn


def raw_record(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": RID, "deletedAt": None, "createdAt": "2026-11-22T10:15:03.412Z", "updatedAt": "2026-11-22T10:15:03.412Z",
        "title": "Video consultation", "description": "Follow-up", "lang": "es-ES",
        "startAt": "2026-12-01T09:00:00.000Z", "endAt": "2026-12-01T09:30:00.000Z",
        "event": {"iCallUrl": "https://meet.example.com/r/7f3a", "room": "Room 1"},
        "reminders": [{"time": 15, "unit": "m", "direction": "before"}], "extraFields": {"location": "Clinic Madrid"},
        "guests": [{"email": "ana.lopez@example.com", "extraFields": {"firstName": "Ana"}}],
        "calendarIds": ["c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d"], "serviceId": "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "status": "confirmed", "subStatus": None, "origin": "syncd", "originUrl": None, "comment": "",
        "interactionId": None, "externalId": "apt_01JD5K8Q2M", "cancellationReason": None,
        "organizationId": "9d2f0a4e-1b3c-4d5e-8f6a-7b8c9d0e1f2a", "userGroupId": None,
    }
    rec.update(over)
    return rec


def page(items: list[dict[str, Any]], *, limit: int = 100) -> dict[str, Any]:
    return {"data": items, "meta": {"page": 1, "limit": limit, "total": len(items), "totalPages": 1}}


# -- signing (part 1, worked examples A and B) ----------------------------------------------------------
def test_worked_example_a() -> None:
    query = "updatedSince=2026-11-22T10:14:01.412Z&includeDeleted=true&sort=updatedAt&order=desc&page=1&limit=100"
    sts = string_to_sign("GET", "/api/v2/appointments", query, "20261122T101502Z", b"")
    assert sts == (
        "GET\n/api/v2/appointments\n"
        "includeDeleted=true&limit=100&order=desc&page=1&sort=updatedAt&updatedSince=2026-11-22T10%3A14%3A01.412Z\n"
        "20261122T101502Z\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert sign(SECRET, "GET", "/api/v2/appointments", query, "20261122T101502Z", b"") == (
        "e6152be89104ab0fdd1a457c89b07a762128aae448eadcbf13665101fbfeb027")


def test_worked_example_b() -> None:
    body = b'{"startAt":"2026-12-01T09:00:00.000Z","endAt":"2026-12-01T09:30:00.000Z","comment":"Moved by EHR"}'
    assert len(body) == 98
    assert hashlib.sha256(body).hexdigest() == "9864dbbfbd2dae8e8a8348b6d832635086226494bebab37ce7b593fa4cb10259"
    path = f"/api/v2/appointments/{RID}"
    assert string_to_sign("PUT", path, "", "20261122T101502Z", body).split("\n")[2] == ""
    assert sign(SECRET, "PUT", path, "", "20261122T101502Z", body) == (
        "1723d75c4efc47974bcb9fc2caf5d6b58bb4c396238a1f8a92c2165c87d76ae0")


def test_canonical_query_check_value() -> None:
    assert query_string({"search": "Dr Pérez & co"}) == "search=Dr%20P%C3%A9rez%20%26%20co"
    assert canonical_query("search=Dr+P%C3%A9rez+%26+co") == "search=Dr%20P%C3%A9rez%20%26%20co"
    assert canonical_query("b=2&a=~x&a=1") == "a=1&a=~x&b=2"
    assert canonical_query("") == ""


async def test_auth_headers_use_equals_and_sign_the_sent_url() -> None:
    auth = OnliveAuth(KEY_ID, SECRET)
    headers: dict[str, str] = {}
    url = yarl.URL("http://h/api/v2/appointments?limit=100&page=1", encoded=True)
    await auth.apply("GET", url, headers, b"")
    date = headers["x-onlive-site-date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", date)
    expected = hmac.new(SECRET.encode(), string_to_sign("GET", "/api/v2/appointments", "limit=100&page=1", date,
                                                        b"").encode(), hashlib.sha256).hexdigest()
    assert headers["Authorization"] == f"ONLIVESITE Credential={KEY_ID}, Signature={expected}"
    assert headers["Accept"] == "application/json"


# -- webhooks: Onlive has none (rule 14) -----------------------------------------------------------------
async def test_every_webhook_delivery_is_refused_with_404() -> None:
    conn = connector()
    try:
        body = b'{"ids":["08pxx0000004KGGAA2"]}'
        good = {"X-Syncd-Timestamp": "1795345200",
                "X-Syncd-Signature": "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"}
        cases = [good, {**good, "X-Syncd-Signature": "v1=" + "0" * 64}, {}]
        for headers in cases:
            with pytest.raises(WebhookError) as err:
                await conn.parse_webhook(headers, body, now=datetime.fromtimestamp(1795345200, UTC))
            assert err.value.status == 404 and err.value.code == "webhooks_disabled"
        # a stale timestamp changes nothing either
        with pytest.raises(WebhookError):
            await conn.parse_webhook(good, body, now=datetime.fromtimestamp(1795345200 + 3600, UTC))
        status = await conn.maintain("https://syncd.example.org")
        assert status["subscription"] == "not needed"
        assert conn.capabilities.webhooks is False and conn.capabilities.batch_read_size == 1
    finally:
        await conn.close()


# -- mapping (part 9) -------------------------------------------------------------------------------------
MAPPER = OnliveMapper(load_vendor_mapping())
ms_times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
texts = st.one_of(st.none(), st.text(max_size=40))
emails = st.from_regex(r"[a-z][a-z0-9.]{0,10}@[a-z]{1,8}\.(org|com)", fullmatch=True)
ids = st.uuids().map(str)


def vendor_side(desired: Appointment, canonical_id: str) -> dict[str, Any]:
    """What Onlive holds after syncd's create (and cancel): built with the connector's own functions."""
    body = MAPPER.create_body(desired.with_changes(status=Status.BOOKED, cancellation_reason=None)
                              if desired.status.terminal else desired, canonical_id)
    raw = {**body, "id": RID, "updatedAt": "2026-11-22T10:15:03.412Z", "deletedAt": None, "subStatus": None,
           "cancellationReason": None}
    if MAPPER.is_cancel(desired):
        cancel = MAPPER.cancel_body(desired, reason=desired.cancellation_reason or "x")
        raw.update(status=cancel["status"], subStatus=cancel["subStatus"], cancellationReason=cancel["reason"])
    elif desired.status in (Status.FULFILLED, Status.NOSHOW):
        raw["status"] = MAPPER.target_status(desired)  # set by Onlive itself
    return raw


@settings(max_examples=50, deadline=None)
@given(
    status=st.sampled_from([Status.PENDING, Status.BOOKED, Status.FULFILLED, Status.NOSHOW, Status.CANCELLED,
                            Status.ENTERED_IN_ERROR]),
    start=ms_times, minutes=st.integers(1, 600), patient=emails, practitioner=ids,
    location=st.one_of(st.none(), st.text(min_size=1, max_size=30)), service=st.one_of(st.none(), ids),
    description=texts, notes=texts, reason=st.text(min_size=1, max_size=60), canonical_id=st.text(min_size=1,
                                                                                                   max_size=20),
)
def test_round_trip_is_identity(status: Status, start: datetime, minutes: int, patient: str, practitioner: str,
                                location: str | None, service: str | None, description: str | None,
                                notes: str | None, reason: str, canonical_id: str) -> None:
    cancelled = status in (Status.CANCELLED, Status.ENTERED_IN_ERROR)
    desired = Appointment(status=status, start=start, end=start + timedelta(minutes=minutes), patient=patient,
                          practitioner=practitioner, location=location, service_type=service,
                          description=description, notes=notes, cancellation_reason=reason if cancelled else None)
    raw = vendor_side(desired, canonical_id)
    back = MAPPER.to_appointment(json.loads(json.dumps(raw)))
    assert back.sync_values() == desired.sync_values()
    assert back.start == desired.start and back.end == desired.end
    assert MAPPER.syncd_id(raw) == canonical_id


@settings(max_examples=50, deadline=None)
@given(guests=st.lists(emails, min_size=1, max_size=5, unique=True), new=emails)
def test_patient_change_keeps_other_guests_without_duplicates(guests: list[str], new: str) -> None:
    current: list[dict[str, Any]] = [{"email": g, "extraFields": {"n": i}} for i, g in enumerate(guests)]
    out = patient_to_guests(current, new)
    assert out[0]["email"].lower() == new.lower()
    emails_out = [g["email"].lower() for g in out]
    assert len(emails_out) == len(set(emails_out))
    assert [g for g in out[1:]] == [g for g in current[1:] if g["email"].lower() != new.lower()]


def test_status_in_table() -> None:
    assert MAPPER.to_appointment(raw_record(status="pending")).status is Status.PENDING
    assert MAPPER.to_appointment(raw_record(status="confirmed")).status is Status.BOOKED
    assert MAPPER.to_appointment(raw_record(status="completed")).status is Status.FULFILLED
    assert MAPPER.to_appointment(raw_record(status="no-show")).status is Status.NOSHOW
    eie = MAPPER.to_appointment(raw_record(status="cancelled", subStatus="booked-in-error", cancellationReason="r"))
    assert eie.status is Status.ENTERED_IN_ERROR and eie.cancellation_reason == "r"
    assert MAPPER.to_appointment(raw_record(status="cancelled", subStatus="user-request")).status is Status.CANCELLED
    guest_cancelled = raw_record(guests=[{"email": "a@example.com", "status": "cancelled"}])
    assert MAPPER.to_appointment(guest_cancelled).status is Status.CANCELLED
    # cancellationReason is read only while cancelled (FHIR app-4)
    assert MAPPER.to_appointment(raw_record(cancellationReason="old")).cancellation_reason is None
    appt = MAPPER.to_appointment(raw_record())
    assert appt.native_status == "confirmed" and appt.patient == "ana.lopez@example.com"
    assert appt.location == "Clinic Madrid" and appt.extra["onlive_title"] == "Video consultation"


def test_unmappable_values_raise_mapping_error() -> None:
    with pytest.raises(MappingError):
        MAPPER.to_appointment(raw_record(status="archived"))
    with pytest.raises(MappingError):
        MAPPER.to_appointment(raw_record(startAt="2026-12-01 09:00"))  # no offset
    with pytest.raises(MappingError):
        MAPPER.to_appointment(raw_record(endAt="2026-12-01T08:00:00.000Z"))  # end before start
    with pytest.raises(MappingError):
        MAPPER.to_appointment(raw_record(guests=[{"name": "no email"}]))
    start = datetime(2030, 1, 1, 9, tzinfo=UTC)
    waitlist = Appointment(status=Status.WAITLIST, start=start, end=start + timedelta(minutes=30),
                           patient="a@example.com", practitioner="cal")
    with pytest.raises(MappingError):
        MAPPER.create_body(waitlist, "apt_1")
    with pytest.raises(MappingError):
        MAPPER.target_status(waitlist)
    with pytest.raises(MappingError):
        MAPPER.create_body(waitlist.with_changes(status=Status.BOOKED, patient=None), "apt_1")
    with pytest.raises(MappingError):
        MAPPER.cancel_body(waitlist.with_changes(status=Status.CANCELLED), reason="x" * 501)


def test_times_are_written_in_utc_with_milliseconds() -> None:
    when = onlive_time_to_utc("2026-12-01T10:00:00.123456+01:00", "t")
    assert when == datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert utc_to_onlive_time(when) == "2026-12-01T09:00:00.123Z"


def test_classification() -> None:
    def resp(status: int, body: Any, headers: dict[str, str] | None = None, ctype: str = "application/json"
             ) -> Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Response(status=status, headers={"Content-Type": ctype, **(headers or {})}, body=raw, url=BASE)

    assert classify(resp(200, {})) is None
    err = classify(resp(429, {"statusCode": 429, "message": "ThrottlerException: Too Many Requests",
                              "code": "RATE_LIMITED"}, {"Retry-After": "7"}))
    assert isinstance(err, RateLimited) and err.wait == 7
    err = classify(resp(429, {"statusCode": 429, "code": "RATE_LIMITED"}))
    assert isinstance(err, RateLimited) and err.wait == 60
    assert isinstance(classify(resp(409, {"statusCode": 409, "code": "SLOT_UNAVAILABLE", "message": "m"})), Rejected)
    assert isinstance(classify(resp(422, {"statusCode": 422, "code": "APPOINTMENT_CLOSED", "message": "m"})),
                      Conflict)
    assert isinstance(classify(resp(403, {"statusCode": 403, "code": "FORBIDDEN", "message": "m"})), AuthFailure)
    assert isinstance(classify(resp(503, b"<html>bad gateway</html>", ctype="text/html")), Retriable)
    masked = classify(resp(400, {"statusCode": 400, "code": "VALIDATION_ERROR", "message": "Validation failed",
                                 "errors": [{"field": "guests", "message": "duplicate guest email: x@y.org"}]}))
    assert isinstance(masked, Rejected) and "x@y.org" not in str(masked) and "duplicate guest email" in str(masked)


# -- wire faults (aioresponses) ---------------------------------------------------------------------------
@pytest.fixture
def wire() -> Any:
    with aioresponses() as mocked:
        yield mocked


async def test_connect_timeout_is_retried(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.get(ONE, exception=aiohttp.ServerTimeoutError("connect timed out"))
        wire.get(ONE, payload=raw_record())
        got = await conn.read([RID])
        assert got[RID].appointment is not None and conn.client.http.retried == 1
    finally:
        await conn.close()


async def test_read_timeout_exhausts_to_retriable(wire: aioresponses) -> None:
    conn = connector()
    try:
        for _ in range(5):
            wire.get(ONE, exception=TimeoutError())
        with pytest.raises(Retriable):
            await conn.read([RID])
    finally:
        await conn.close()


async def test_malformed_json_and_html_error_page_are_retriable(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.get(ONE, body=b'{"id": "1610c525', status=200, content_type="application/json")
        wire.get(ONE, body=b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        wire.get(ONE, payload=raw_record())
        got = await conn.read([RID])
        assert got[RID].appointment is not None and conn.client.http.retried == 2
    finally:
        await conn.close()


async def test_html_404_page_on_write_is_rejected_not_mistaken(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.post(LIST, body=b"<html>Not here</html>", status=404, content_type="text/html")
        start = datetime.now(UTC) + timedelta(days=2)
        desired = Appointment(status=Status.BOOKED, start=start, end=start + timedelta(minutes=30),
                              patient="a@example.org", practitioner="c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d")
        [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_html", desired)])
        assert isinstance(out.error, Rejected) and "HTML error page" in str(out.error)
    finally:
        await conn.close()


async def test_create_answer_without_record_is_searched_not_repeated(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.post(LIST, status=201, payload={"statusCode": 201})  # a success that carries no record
        wire.get(LIST, payload=page([raw_record(externalId="apt_x"), raw_record(id="other", externalId="apt_y")]))
        start = datetime.now(UTC) + timedelta(days=2)
        desired = Appointment(status=Status.BOOKED, start=start, end=start + timedelta(minutes=30),
                              patient="a@example.org", practitioner="c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d")
        [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_x", desired)])
        assert out.ok and out.record is not None and out.record.external_id == RID
        assert conn.client.http.calls["create"] == 1 and conn.client.http.calls["search"] == 1
    finally:
        await conn.close()


async def test_incremental_poll_sends_cursor_minus_one_second(wire: aioresponses) -> None:
    conn = connector()
    seen: list[yarl.URL] = []
    sign_url = conn.client.auth.apply

    async def spy(method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        seen.append(url)  # the URL exactly as sent (aioresponses normalises the one it reports)
        await sign_url(method, url, headers, body)

    conn.client.auth.apply = spy  # type: ignore[method-assign]
    try:
        wire.get(LIST, payload=page([raw_record(updatedAt="2026-11-22T10:15:03.412Z")]))
        cursor = json.dumps({"mode": "inc", "t": "2026-11-22T10:15:02.412Z"})
        pages = [p async for p in conn.changes(cursor)]
        assert len(pages) == 1 and len(seen) == 1
        assert seen[0].raw_query_string == ("includeDeleted=true&limit=100&order=desc&page=1&sort=updatedAt"
                                            "&updatedSince=2026-11-22T10%3A15%3A01.412Z")
        assert json.loads(pages[0].cursor or "")["t"] == "2026-11-22T10:15:03.412Z"
    finally:
        await conn.close()


async def test_unmappable_record_in_a_poll_is_a_record_error(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.get(LIST, payload=page([raw_record(status="archived", updatedAt="2026-11-22T10:15:03.412Z")]))
        cursor = json.dumps({"mode": "inc", "t": "2026-11-22T10:15:02.412Z"})
        [p] = [p async for p in conn.changes(cursor)]
        [rec] = p.records
        assert isinstance(rec.error, MappingError) and rec.appointment is None and rec.external_id == RID
    finally:
        await conn.close()


async def test_remaining_zero_blocks_further_requests(wire: aioresponses) -> None:
    conn = connector()
    try:
        wire.get(ONE, payload=raw_record(),
                 headers={"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "23"})
        await conn.read([RID])
        assert conn.client.http.blocked_for > 20
    finally:
        await conn.close()


# -- against the sandbox ----------------------------------------------------------------------------------
@pytest.fixture
async def sb() -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox("onlive", port=0)
    try:
        yield rs
    finally:
        await rs.stop()


@pytest.fixture
async def conn(sb: RunningSandbox) -> AsyncIterator[OnliveConnector]:
    c = connector(sb.url)
    try:
        yield c
    finally:
        await c.close()


async def seed(sb: RunningSandbox, n: int) -> list[str]:
    body = fresh_seed(n)
    await control(sb, "POST", "/_sandbox/records", body)
    return [r["id"] for r in body["records"]]




async def stored(sb: RunningSandbox, rid: str) -> dict[str, Any]:
    return next(r for r in (await control(sb, "GET", "/_sandbox/records"))["records"] if r["id"] == rid)


async def fault(sb: RunningSandbox, method: str, path: str, action: dict[str, Any], times: int = 1) -> None:
    await control(sb, "POST", "/_sandbox/faults", {"match": {"method": method, "path": path}, "times": times,
                                                    "action": action})


async def drain(c: OnliveConnector, cursor: str | None) -> tuple[list[VendorRecord], str | None]:
    out: list[VendorRecord] = []
    async for p in c.changes(cursor):
        out.extend(p.records)
        cursor = p.cursor or cursor
    return out, cursor


async def test_call_economy_reads_and_polls(sb: RunningSandbox, conn: OnliveConnector) -> None:
    ids = await seed(sb, 7)
    await conn.read(ids)
    assert (await request_counts(sb))[("GET", "/api/v2/appointments/{id}")] == 7  # no batch read: one GET each
    _, cursor = await drain(conn, None)
    before = (await request_counts(sb))[("GET", "/api/v2/appointments")]
    _, cursor2 = await drain(conn, cursor)
    assert (await request_counts(sb))[("GET", "/api/v2/appointments")] == before + 1  # nothing changed: one GET
    assert json.loads(cursor2 or "")["mode"] == "inc"


async def test_poll_pages_at_100_and_sees_deletions(sb: RunningSandbox, conn: OnliveConnector) -> None:
    ids = await seed(sb, 3)
    _, cursor = await drain(conn, None)
    more = await seed(sb, 150)
    await control(sb, "POST", "/_sandbox/records", {"delete": [ids[0]]})
    before = (await request_counts(sb))[("GET", "/api/v2/appointments")]
    records, _ = await drain(conn, cursor)
    assert (await request_counts(sb))[("GET", "/api/v2/appointments")] == before + 2  # ⌈(151+1)/100⌉
    seen = {r.external_id for r in records}
    assert set(more) <= seen
    assert any(r.external_id == ids[0] and r.deleted for r in records)


async def test_ignored_filter_switches_to_window_mode(sb: RunningSandbox, conn: OnliveConnector) -> None:
    ids = await seed(sb, 3)
    _, cursor = await drain(conn, None)
    sb.sandbox.clock.advance(60)
    await control(sb, "POST", "/_sandbox/records", {"records": [{"id": ids[0], "comment": "edited"}]})
    _, cursor = await drain(conn, cursor)  # the cursor is now a minute past the untouched records
    assert json.loads(cursor or "")["mode"] == "inc"
    await fault(sb, "GET", "/api/v2/appointments", {"type": "ignore_updated_since"})
    sb.sandbox.clock.advance(60)
    await control(sb, "POST", "/_sandbox/records", {"records": [{"id": ids[1], "comment": "edited"}]})
    records, cursor2 = await drain(conn, cursor)
    assert ids[1] in {r.external_id for r in records}
    state = json.loads(cursor2 or "")
    assert state["mode"] == "window" and "next" in state
    before = sum((await request_counts(sb)).values())
    pages = [p async for p in conn.changes(cursor2)]  # within 300 s: no network call
    assert sum((await request_counts(sb)).values()) == before and pages[0].cursor == cursor2


async def test_refused_filter_switches_to_window_mode(sb: RunningSandbox, conn: OnliveConnector) -> None:
    ids = await seed(sb, 2)
    _, cursor = await drain(conn, None)
    await fault(sb, "GET", "/api/v2/appointments", {"type": "reject_updated_since"})
    records, cursor2 = await drain(conn, cursor)
    assert set(ids) <= {r.external_id for r in records}
    assert json.loads(cursor2 or "")["mode"] == "window"


async def test_request_expired_is_corrected_once(sb: RunningSandbox, conn: OnliveConnector) -> None:
    ids = await seed(sb, 4)
    sb.sandbox.clock.advance(1200)  # the sandbox is 20 minutes ahead
    got = await conn.read(ids)  # four concurrent reads share one correction
    assert not any(r.deleted for r in got.values()) and conn.client.auth.corrections == 1
    before = sum((await request_counts(sb)).values())
    await conn.read(ids[:1])  # the offset is kept: no second 401
    assert conn.client.auth.corrections == 1 and sum((await request_counts(sb)).values()) == before + 1


async def test_request_expired_twice_stops_with_auth_failure(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    await fault(sb, "GET", "/api/v2/appointments/*", {"type": "request_expired"}, times=5)
    before = sum((await request_counts(sb)).values())
    with pytest.raises(AuthFailure):
        await conn.read([rid])
    assert sum((await request_counts(sb)).values()) - before == 2


async def test_stale_guest_list_is_refused_and_fresh_one_is_kept(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired = current.appointment.with_changes(patient="new.guest@example.org")
    # another user adds a guest just before our re-read: the version differs -> conflict, nothing written
    await fault(sb, "GET", f"/api/v2/appointments/{rid}", {"type": "guest_added"})
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_g", desired, external_id=rid, current=current,
                                           changed=frozenset({"patient"}))])
    assert isinstance(out.error, Conflict) and out.record is not None
    # re-merged from the fresh record: guests are built from the fresh copy
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_g", desired, external_id=rid, current=out.record,
                                           changed=frozenset({"patient"}))])
    assert out.ok, out.error
    guests = [g["email"] for g in (await stored(sb, rid))["guests"]]
    assert guests == ["new.guest@example.org", "other@example.com"]


async def test_location_change_keeps_other_extra_fields(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    await control(sb, "POST", "/_sandbox/records",
                  {"records": [{"id": rid, "extraFields": {"location": "Centro", "priority": "high"}}]})
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired = current.appointment.with_changes(location="Norte")
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_l", desired, external_id=rid, current=current,
                                           changed=frozenset({"location"}))])
    assert out.ok, out.error
    assert (await stored(sb, rid))["extraFields"] == {"location": "Norte", "priority": "high"}


async def test_no_op_and_vendor_only_statuses_send_no_put(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    same = WriteRequest(WriteKind.UPDATE, "apt_n", current.appointment, external_id=rid, current=current,
                        changed=frozenset({"notes"}))
    done = current.appointment.with_changes(status=Status.FULFILLED)
    fulfilled = WriteRequest(WriteKind.UPDATE, "apt_n", done, external_id=rid, current=current,
                             changed=frozenset({"status"}))
    arrived = WriteRequest(WriteKind.UPDATE, "apt_n", current.appointment.with_changes(status=Status.ARRIVED),
                           external_id=rid, current=current, changed=frozenset({"status"}))
    outs = await conn.write([same, fulfilled, arrived])
    assert all(o.ok for o in outs), [o.error for o in outs]
    assert "status" in (outs[1].record.unexpressible if outs[1].record else set())
    assert ("PUT", "/api/v2/appointments/{id}") not in await request_counts(sb)
    assert (await stored(sb, rid))["_notifications"] == 0


async def test_session_end_before_put_is_a_conflict(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    await fault(sb, "PUT", "/api/v2/appointments/*", {"type": "session_end", "status": "completed"})
    desired = current.appointment.with_changes(notes="late note")
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_s", desired, external_id=rid, current=current,
                                           changed=frozenset({"notes"}))])
    assert isinstance(out.error, Conflict) and out.error.code == "APPOINTMENT_CLOSED"
    assert out.record is not None and out.record.appointment is not None
    assert out.record.appointment.status is Status.FULFILLED


async def test_lost_cancel_answer_counts_as_success(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    await fault(sb, "POST", "/api/v2/appointments/*/cancel", {"type": "drop_after_apply"})
    desired = current.appointment.with_changes(status=Status.ENTERED_IN_ERROR, cancellation_reason="dup")
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_c", desired, external_id=rid, current=current)])
    assert out.ok, out.error
    assert out.record is not None and out.record.appointment is not None
    assert out.record.appointment.status is Status.ENTERED_IN_ERROR
    rec = await stored(sb, rid)
    assert rec["subStatus"] == "booked-in-error" and rec["cancellationReason"] == "dup"


async def test_default_cancel_reason_and_deleted_target(sb: RunningSandbox, conn: OnliveConnector) -> None:
    a, b = await seed(sb, 2)
    got = await conn.read([a, b])
    cur_a = got[a].appointment
    assert cur_a is not None
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_a", cur_a.with_changes(status=Status.CANCELLED),
                                           external_id=a, current=got[a])])
    assert out.ok, out.error
    rec = await stored(sb, a)
    assert rec["cancellationReason"] == "Cancelled via syncd" and rec["subStatus"] == "external-request"
    await control(sb, "POST", "/_sandbox/records", {"delete": [b]})
    cur_b = got[b].appointment
    assert cur_b is not None
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_b", cur_b.with_changes(notes="x"),
                                           external_id=b, changed=frozenset({"notes"}))])
    assert isinstance(out.error, Conflict) and out.record is not None and out.record.deleted


async def test_lost_create_found_by_client_side_match(sb: RunningSandbox, conn: OnliveConnector) -> None:
    await seed(sb, 3)
    await fault(sb, "POST", "/api/v2/appointments", {"type": "drop_after_apply"})
    await fault(sb, "GET", "/api/v2/appointments", {"type": "ignore_external_id"})
    start = (datetime.now(UTC) + timedelta(days=4)).replace(hour=11, minute=0, second=0, microsecond=0)
    desired = Appointment(status=Status.PENDING, start=start, end=start + timedelta(minutes=30),
                          patient="p@example.org", practitioner="c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d",
                          service_type="5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_lost", desired)])
    assert out.ok, out.error
    records = (await control(sb, "GET", "/_sandbox/records"))["records"]
    mine = [r for r in records if r["externalId"] == "apt_lost"]
    assert len(mine) == 1 and mine[0]["id"] == out.record.external_id  # type: ignore[union-attr]
    assert mine[0]["origin"] == "syncd" and mine[0]["status"] == "pending" and mine[0]["title"] == "Appointment"
    assert (await request_counts(sb))[("POST", "/api/v2/appointments")] == 1


async def test_practitioner_change_replace_flow(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    current = (await conn.read([rid]))[rid]
    old = current.appointment
    assert old is not None and old.start is not None and old.end is not None
    other = next(c["id"] for c in (await control(sb, "GET", "/_sandbox/records"))["calendars"]
                 if c["id"] != old.practitioner and c["id"] != "c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d"
                 and c["id"] != "c0a80122-7d2e-4f4b-9c1a-5e6f7a8b9c0d")
    desired = old.with_changes(practitioner=other)
    assert conn.needs_replace(old, desired) is not None
    assert conn.needs_replace(old, old.with_changes(notes="n")) is None
    # in place it is refused
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_r", desired, external_id=rid, current=current,
                                           changed=frozenset({"practitioner"}))])
    assert isinstance(out.error, Rejected)
    [made] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_r", desired, replaces=rid)])
    assert made.ok, made.error
    new_id = made.record.external_id  # type: ignore[union-attr]
    assert made.record is not None and made.record.replaces == rid
    found = await conn.find_by_reference("apt_r", exclude=[rid])
    assert [r.external_id for r in found] == [new_id]
    reason = conn.capabilities.replace_reason
    [gone] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_r", old.with_changes(
        status=Status.CANCELLED, cancellation_reason=reason), external_id=rid, current=current)])
    assert gone.ok, gone.error
    rec = await stored(sb, rid)
    assert rec["subStatus"] == "rescheduled" and rec["cancellationReason"] == f"replaced by {new_id}"


async def test_replace_of_a_past_record_recreates_nothing(sb: RunningSandbox, conn: OnliveConnector) -> None:
    [rid] = await seed(sb, 1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    await control(sb, "POST", "/_sandbox/records", {"records": [
        {"id": rid, "startAt": iso(start), "endAt": iso(start + timedelta(minutes=30))}]})
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    future = datetime.now(UTC) + timedelta(days=2)
    desired = current.appointment.with_changes(start=future, end=future + timedelta(minutes=30),
                                               practitioner="c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d")
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_p", desired, replaces=rid)])
    assert isinstance(out.error, Rejected) and out.error.code == "REPLACE_TARGET_CLOSED"
    assert ("POST", "/api/v2/appointments") not in await request_counts(sb)
