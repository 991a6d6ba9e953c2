"""SaludYa connector: vendor-specific behaviour (docs/vendors/saludya.md), on the wire and against the sandbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import create_connector
from connectors.saludya import PACKAGE as SALUDYA_PACKAGE
from connectors.saludya.client import classify, mask
from connectors.saludya.connector import SaludYaConnector, ScanState
from connectors.saludya.mapfuncs import (
    SaludYaMapper,
    saludya_join_marker,
    saludya_local_to_utc,
    saludya_split_marker,
    saludya_utc_to_local,
)
from syncd.config import ConnectorConfig
from syncd.connector import MemoryStateStore, WriteKind, WriteRequest
from syncd.errors import (
    AuthFailure,
    Conflict,
    MappingError,
    NotWritable,
    RateLimited,
    Rejected,
    Retriable,
    WebhookError,
)
from syncd.http import Response
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.secret import Secret
from tests.connectors.kits.saludya import DOCTOR, KIT, TIMEZONE, control

load_vendor_mapping = SALUDYA_PACKAGE.load_mapping

BASE = "http://saludya.test"
LIST_RE = re.compile(r"^http://saludya\.test/api/appointments(\?.*)?$")
ONE_RE = re.compile(r"^http://saludya\.test/api/appointments/[^/?]+$")


def make(base_url: str = BASE, **kw: Any) -> SaludYaConnector:
    config = ConnectorConfig(name="saludya", type="saludya", base_url=base_url, poll_interval=300.0,
                             timezone=kw.pop("timezone", TIMEZONE), max_requests_per_second=1000.0,
                             auth={"api_key": Secret("sandbox-key")}, **kw)
    conn = create_connector(config, state=MemoryStateStore())
    assert isinstance(conn, SaludYaConnector)
    conn.http.backoff_base = 0.001
    conn.http.backoff_max = 0.005
    return conn


def raw_record(rid: str = "apt_7k3m9n2p4q", **over: Any) -> dict[str, Any]:
    rec = {
        "id": rid, "patient_id": "pat_5x8y2z4a6b", "patient_name": "María González",
        "patient_email": "maria@example.com", "patient_phone": "+573001234567", "doctor_id": "doc_3j5k7m9n1p",
        "doctor_name": "Dr. Carlos Ramírez", "specialty": "Cardiología", "date": "2026-03-12", "time": "10:00",
        "duration_minutes": 30, "status": "scheduled", "reason": "Consulta de control cardiovascular",
        "notes": "Paciente solicitó cambio de horario\n[syncd:apt_01JD5K8Q2M]", "diagnosis": None,
        "prescription": None, "follow_up_required": False, "follow_up_date": None,
        "created_at": "2026-03-05T14:22:10Z", "updated_at": "2026-03-06T11:45:30Z", "completed_at": None,
        "cancelled_at": None, "cancellation_reason": None,
    }  # fmt: skip
    rec.update(over)
    return rec


def listing(items: list[dict[str, Any]], page: int = 1, total_pages: int = 1) -> dict[str, Any]:
    return {"data": items, "pagination": {"page": page, "limit": 100, "total": len(items),
                                          "total_pages": total_pages}}


def sent(m: aioresponses, method: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(url, headers, json body) of every ``method`` request aioresponses saw, in order."""
    out = []
    for (meth, url), calls in m.requests.items():
        if meth != method:
            continue
        for call in calls:
            data = call.kwargs.get("data")
            out.append((str(url), dict(call.kwargs.get("headers") or {}), json.loads(data) if data else None))
    return out


@pytest.fixture
async def wire() -> AsyncIterator[tuple[SaludYaConnector, aioresponses]]:
    conn = make()
    with aioresponses() as m:
        try:
            yield conn, m
        finally:
            await conn.close()


# -- webhooks: SaludYa has none (docs/vendors/README.md rule 14) -------------------------------------------------------
def _generic_signature(secret: str, ts: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("case", ["good", "wrong_secret", "stale", "worked_example", "no_headers"])
async def test_every_webhook_delivery_answers_404(case: str) -> None:
    conn = make(webhook_secret=Secret("sandbox-webhook-secret"))
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    body = b'{"ids":["08pxx0000004KGGAA2"]}'
    ts = str(int(now.timestamp()))
    headers = {
        "good": {"X-Syncd-Timestamp": ts, "X-Syncd-Signature": _generic_signature("sandbox-webhook-secret", ts, body)},
        "wrong_secret": {"X-Syncd-Timestamp": ts, "X-Syncd-Signature": _generic_signature("nope", ts, body)},
        "stale": {"X-Syncd-Timestamp": str(int(now.timestamp()) - 301),
                  "X-Syncd-Signature": _generic_signature("sandbox-webhook-secret", ts, body)},
        "worked_example": {"X-Syncd-Timestamp": "1795345200", "X-Syncd-Signature":
                           "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"},
        "no_headers": {},
    }[case]
    if case == "worked_example":
        now = datetime.fromtimestamp(1795345200, UTC)
        assert headers["X-Syncd-Signature"] == _generic_signature("sandbox-webhook-secret", "1795345200", body)
    try:
        with pytest.raises(WebhookError) as info:
            await conn.parse_webhook(headers, body, now=now)
        assert info.value.status == 404 and info.value.code == "webhooks_disabled"
    finally:
        await conn.close()


async def test_capabilities_and_maintain_without_network(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    caps = conn.capabilities
    assert (caps.webhooks, caps.batch_read_size, caps.batch_write_size) == (False, 1, 1)
    assert not caps.patient_change and caps.replace_cancel_first_when == frozenset({"patient"})
    assert caps.replace_reason == "Replaced via sync (syncd)" and not caps.subscription
    status = await conn.maintain("https://syncd.example.org")
    assert status["subscription"] == "not needed"
    assert not m.requests


# -- mapping ---------------------------------------------------------------------------------------------
MAPPER = SaludYaMapper(load_vendor_mapping(), TIMEZONE)
ROUND_TRIP_STATUSES = [Status.PENDING, Status.BOOKED, Status.ARRIVED, Status.FULFILLED, Status.CANCELLED,
                       Status.NOSHOW, Status.ENTERED_IN_ERROR]
ids = st.from_regex(r"[a-z0-9]{6,12}", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\n"),
               min_size=1, max_size=80)


@st.composite
def appointments(draw: st.DrawFn) -> tuple[Appointment, str]:
    status = draw(st.sampled_from(ROUND_TRIP_STATUSES))
    minutes = draw(st.integers(0, 60 * 24 * 400))
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    duration = draw(st.integers(5, 480))
    reason = draw(text) if status is Status.CANCELLED else None
    appt = Appointment(
        status=status, start=start, end=start + timedelta(minutes=duration),
        patient="pat_" + draw(ids), practitioner="doc_" + draw(ids), service_type=draw(text),
        description=draw(st.none() | text), notes=draw(st.none() | st.text(min_size=1, max_size=300).filter(
            lambda s: not s.endswith("\n") and not re.search(r"\[syncd", s) and "\r" not in s)),
        cancellation_reason=reason,
    )
    return appt, "apt_" + draw(ids)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appointments())
def test_canonical_to_vendor_to_canonical_is_identity(case: tuple[Appointment, str]) -> None:
    appt, canonical_id = case
    raw = MAPPER.to_vendor(appt, canonical_id)
    back = MAPPER.to_appointment(raw)
    assert back.sync_values() == appt.sync_values()
    assert back.native_status == raw["status"]
    assert MAPPER.split(raw).reference == canonical_id


def test_lossy_statuses_map_as_the_table_says() -> None:
    start = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    base = Appointment(status=Status.PROPOSED, start=start, end=start + timedelta(minutes=30))
    assert MAPPER.native_status(base) == "scheduled"
    assert MAPPER.native_status(base.with_changes(status=Status.CHECKED_IN)) == "in_progress"
    eie = base.with_changes(status=Status.ENTERED_IN_ERROR)
    assert MAPPER.cancellation_reason(eie) == "Entered in error (syncd)"
    assert MAPPER.cancellation_reason(base.with_changes(status=Status.CANCELLED)) == "Cancelled via sync (syncd)"
    with pytest.raises(MappingError):
        MAPPER.native_status(base.with_changes(status=Status.WAITLIST))


@pytest.mark.parametrize("change", ["seconds", "too_short", "too_long", "fraction", "long_reason", "waitlist"])
def test_unmappable_values_raise_mapping_error(change: str) -> None:
    start = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    appt = Appointment(status=Status.BOOKED, start=start, end=start + timedelta(minutes=30),
                       patient="pat_1", practitioner="doc_1")
    bad = {
        "seconds": appt.with_changes(start=start + timedelta(seconds=30), end=start + timedelta(minutes=31)),
        "too_short": appt.with_changes(end=start + timedelta(minutes=4)),
        "too_long": appt.with_changes(end=start + timedelta(minutes=481)),
        "fraction": appt.with_changes(end=start + timedelta(minutes=30, seconds=1)),
        "long_reason": appt.with_changes(description="x" * 256),
        "waitlist": appt.with_changes(status=Status.WAITLIST),
    }[change]
    with pytest.raises(MappingError):
        MAPPER.to_vendor(bad, "apt_x")


def test_dst_gap_and_fold_are_mapping_errors() -> None:
    with pytest.raises(MappingError, match="does not exist"):
        saludya_local_to_utc("2026-03-29", "02:30", "Europe/Madrid")
    with pytest.raises(MappingError, match="ambiguous"):
        saludya_local_to_utc("2026-10-25", "02:30", "Europe/Madrid")
    fold = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first 02:30 of the fold
    with pytest.raises(MappingError, match="ambiguous"):
        saludya_utc_to_local(fold, "Europe/Madrid")
    assert saludya_local_to_utc("2026-03-12", "10:00", TIMEZONE) == datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    with pytest.raises(MappingError):
        saludya_local_to_utc("2026-02-30", "10:00", TIMEZONE)


def test_marker_split_and_join() -> None:
    split = saludya_split_marker("hola\n[syncd:apt_1]")
    assert (split.notes, split.reference, split.replaced) == ("hola", "apt_1", None)
    split = saludya_split_marker("[syncd-replaced:apt_1]")
    assert (split.notes, split.reference, split.replaced) == (None, None, "apt_1")
    assert saludya_split_marker("no marker [syncd:apt_1] here").reference is None
    long = saludya_join_marker("x" * 2000, "apt_01JD5K8Q2M")
    assert len(long) == 1000 and long.endswith("\n[syncd:apt_01JD5K8Q2M]")
    assert saludya_join_marker(None, "apt_1") == "[syncd:apt_1]"


def test_reads_the_vendor_record_of_part_3() -> None:
    rec = SaludYaConnector._deleted("x")
    assert rec.deleted and rec.appointment is None
    conn = make()
    record = conn._record(raw_record())
    assert record.version == "2026-03-06T11:45:30Z" and record.syncd_id == "apt_01JD5K8Q2M"
    appt = record.appointment
    assert appt is not None
    assert appt.start == datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    assert appt.end == datetime(2026, 3, 12, 15, 30, tzinfo=UTC)
    assert appt.status is Status.PENDING and appt.native_status == "scheduled"
    assert appt.notes == "Paciente solicitó cambio de horario"
    assert appt.service_type == "Cardiología" and appt.location is None
    # location is not stored at all; the specialty is stored, read-only (docs/vendors/saludya.md §9)
    assert record.not_stored == frozenset({"location"}) and record.read_only == frozenset({"service_type"})
    assert conn.capabilities.not_stored == record.not_stored and conn.capabilities.read_only == record.read_only
    assert {"patient", "practitioner", "start"} <= conn.capabilities.required_on_create
    eie = conn._record(raw_record(status="cancelled", cancellation_reason="Entered in error (syncd)"))
    assert eie.appointment is not None and eie.appointment.status is Status.ENTERED_IN_ERROR
    bad = conn._record(raw_record(status="paused"))
    assert bad.error is not None and bad.appointment is None


def test_needs_replace() -> None:
    conn = make()
    start = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    cur = Appointment(status=Status.BOOKED, start=start, end=start + timedelta(minutes=30),
                      patient="pat_1", practitioner="doc_1")
    assert conn.needs_replace(cur, cur.with_changes(notes="x")) is None
    assert "doctor" in str(conn.needs_replace(cur, cur.with_changes(practitioner="doc_2")))
    assert "cancel the old appointment first" in str(conn.needs_replace(cur, cur.with_changes(patient="pat_2")))
    assert conn.needs_replace(cur, cur.with_changes(patient="pat_2", status=Status.CANCELLED)) is None


# -- classification ------------------------------------------------------------------------------------
def _resp(status: int, body: Any, headers: dict[str, str] | None = None, ctype: str = "application/json") -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status=status, headers={"Content-Type": ctype, **(headers or {})}, body=raw, url=BASE)


def test_classify_by_meaning() -> None:
    busy = classify(_resp(409, {"error": {"code": "APPOINTMENT_CONFLICT", "message": "Doctor is not available at "
                                          "the requested time", "details": {"conflicting_appointment_id": "apt_8",
                                                                            "suggested_times": ["10:30", "11:00"]}}}))
    assert isinstance(busy, Rejected) and not isinstance(busy, Conflict)
    assert busy.code == "APPOINTMENT_CONFLICT" and "apt_8" in str(busy) and "10:30,11:00" in str(busy)
    assert isinstance(classify(_resp(401, {"error": {"code": "UNAUTHORIZED", "message": "x"}})), AuthFailure)
    assert isinstance(classify(_resp(422, {"error": {"code": "INVALID_STATE_TRANSITION", "message": "x"}})), Conflict)
    limited = classify(_resp(429, {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}},
                             {"Retry-After": "412"}))
    assert isinstance(limited, RateLimited) and limited.wait == 412
    fallback = classify(_resp(429, {}), rate_limit_fallback=60)
    assert isinstance(fallback, RateLimited) and fallback.wait == 60
    html = classify(_resp(502, b"<html><body>Bad gateway</body></html>", ctype="text/html"))
    assert isinstance(html, Retriable) and "text/html" in str(html)
    assert classify(_resp(200, raw_record())) is None
    leak = classify(_resp(400, {"error": {"code": "VALIDATION_ERROR", "message": "Invalid request data",
                                          "details": {"notes": "maria@example.com +57 300 123 4567"}}}))
    assert leak is not None and "maria@example.com" not in str(leak) and "300 123" not in str(leak)
    assert mask("call +573001234567") == "call ***"


# -- wire (aioresponses) -------------------------------------------------------------------------------
async def test_headers_on_every_request(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    m.get(ONE_RE, payload=raw_record(), repeat=True)
    await conn.read(["apt_a", "apt_b"])
    calls = sent(m, "GET")
    assert len(calls) == 2
    request_ids = set()
    for _url, headers, _ in calls:
        assert headers["Authorization"] == "Bearer sandbox-key"
        assert headers["Accept"] == "application/json" and headers["Accept-Language"] == "en"
        request_ids.add(headers["X-Request-ID"])
    assert len(request_ids) == 2


async def test_read_timeouts_are_retried_then_raised(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    m.get(ONE_RE, exception=TimeoutError(), repeat=True)
    with pytest.raises(Retriable):
        await conn.read(["apt_a"])
    assert conn.http.calls["read"] == conn.http.max_attempts


async def test_connect_timeout_then_success(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    m.get(ONE_RE, exception=aiohttp.ConnectionTimeoutError("connect timed out"))
    m.get(ONE_RE, payload=raw_record())
    got = await conn.read(["apt_7k3m9n2p4q"])
    assert got["apt_7k3m9n2p4q"].appointment is not None
    assert conn.http.retried == 1


async def test_malformed_json_and_html_pages_are_retriable(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    m.get(ONE_RE, body=b'{"id": "apt_7k3m', status=200, content_type="application/json")
    m.get(ONE_RE, body=b"<html>Service Unavailable</html>", status=503, content_type="text/html")
    m.get(ONE_RE, body=b"<html>OK?</html>", status=200, content_type="text/html")
    m.get(ONE_RE, payload=raw_record())
    got = await conn.read(["apt_7k3m9n2p4q"])
    assert got["apt_7k3m9n2p4q"].appointment is not None
    assert conn.http.retried == 3


async def test_lost_create_is_searched_by_marker_not_repeated(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    created = raw_record("apt_new", notes="hola\n[syncd:apt_c1]", date="2026-03-12", time="10:00")
    m.post(LIST_RE, exception=aiohttp.ServerTimeoutError("read timed out"))
    # the search: same date and doctor; a cancelled copy and an excluded id are ignored
    m.get(LIST_RE, payload=listing([
        raw_record("apt_old", notes="[syncd:apt_c1]", status="cancelled", cancellation_reason="x"),
        raw_record("apt_retired", notes="[syncd:apt_c1]"),
        created,
    ]))
    start = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)
    desired = Appointment(status=Status.PENDING, start=start, end=start + timedelta(minutes=30),
                          patient="pat_5x8y2z4a6b", practitioner="doc_3j5k7m9n1p",
                          description="Consulta de control cardiovascular", notes="hola")
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_c1", desired, replaces="apt_retired")])
    assert out.ok and out.record is not None and out.record.external_id == "apt_new"
    assert conn.http.calls["create"] == 1 and conn.http.calls["search"] == 1
    [(url, _, _)] = sent(m, "GET")
    assert "date_from=2026-03-12" in url and "date_to=2026-03-12" in url and "doctor_id=doc_3j5k7m9n1p" in url
    [(_, headers, body)] = sent(m, "POST")
    assert body["send_notification"] is False and body["notes"] == "hola\n[syncd:apt_c1]"
    assert "status" not in body and headers["Content-Type"] == "application/json"


async def test_update_sends_only_what_differs(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    current = conn._record(raw_record())
    assert current.appointment is not None and current.appointment.start is not None
    m.get(ONE_RE, payload=raw_record())
    m.put(ONE_RE, payload=raw_record(time="11:00", updated_at="2026-03-06T11:50:00Z"))
    desired = current.appointment.with_changes(start=current.appointment.start + timedelta(hours=1),
                                               end=current.appointment.start + timedelta(hours=1, minutes=30))
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "apt_01JD5K8Q2M", desired,
                                           external_id="apt_7k3m9n2p4q", current=current,
                                           changed=frozenset({"start", "end"}))])
    assert out.ok and out.record is not None and out.record.version == "2026-03-06T11:50:00Z"
    [(_, _, body)] = sent(m, "PUT")
    assert body == {"time": "11:00", "send_notification": False}


async def test_cancel_and_replace_marker(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    current = conn._record(raw_record())
    assert current.appointment is not None
    m.get(ONE_RE, payload=raw_record())
    m.put(ONE_RE, payload=raw_record(status="cancelled", cancellation_reason="Replaced via sync (syncd)",
                                     updated_at="2026-03-06T11:50:00Z"))
    desired = current.appointment.with_changes(status=Status.CANCELLED, cancellation_reason="Replaced via sync (syncd)")
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "apt_01JD5K8Q2M", desired,
                                           external_id="apt_7k3m9n2p4q", current=current)])
    assert out.ok
    [(_, _, body)] = sent(m, "PUT")
    assert body == {"status": "cancelled", "cancellation_reason": "Replaced via sync (syncd)",
                    "notes": "Paciente solicitó cambio de horario\n[syncd-replaced:apt_01JD5K8Q2M]",
                    "send_notification": False}


async def test_cancel_without_reason_uses_the_mapping_default(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    current = conn._record(raw_record())
    assert current.appointment is not None
    m.get(ONE_RE, payload=raw_record())
    m.put(ONE_RE, payload=raw_record(status="cancelled", cancellation_reason="Cancelled via sync (syncd)"))
    desired = current.appointment.with_changes(status=Status.CANCELLED)
    [out] = await conn.write([WriteRequest(WriteKind.CANCEL, "c", desired, external_id="apt_7k3m9n2p4q",
                                           current=current)])
    assert out.ok
    [(_, _, body)] = sent(m, "PUT")
    assert body == {"status": "cancelled", "cancellation_reason": "Cancelled via sync (syncd)",
                    "send_notification": False}


async def test_pagination_at_100_and_rate_limit_wait(wire: tuple[SaludYaConnector, aioresponses]) -> None:
    conn, m = wire
    page1 = [raw_record(f"apt_{i:04d}") for i in range(100)]
    m.get(LIST_RE, payload=listing(page1, 1, 2))
    m.get(LIST_RE, status=429, payload={"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}},
          headers={"Retry-After": "0"})
    m.get(LIST_RE, payload=listing([raw_record("apt_9999")], 2, 2))
    pages = [p async for p in conn.changes(None)]
    assert [len(p.records) for p in pages] == [100, 1]
    urls = [u for u, _, _ in sent(m, "GET")]
    assert all("limit=100" in u and "sort_by=created_at" in u and "sort_order=asc" in u for u in urls)
    assert "page=2" in urls[-1]


# -- against the sandbox ---------------------------------------------------------------------------------
@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox("saludya", port=0, **KIT.sandbox_options())
    try:
        yield rs
    finally:
        await rs.stop()


@pytest.fixture
async def conn(sandbox: RunningSandbox) -> AsyncIterator[SaludYaConnector]:
    c = make(sandbox.url)
    try:
        yield c
    finally:
        await c.close()


async def requests_of(sb: RunningSandbox, method: str, route: str) -> int:
    rows = (await control(sb, "GET", "/_sandbox/requests"))["requests"]
    return sum(r["count"] for r in rows if r["method"] == method and r["route"] == route)


async def dump(sb: RunningSandbox, rid: str) -> dict[str, Any]:
    rows = (await control(sb, "GET", "/_sandbox/records"))["records"]
    return next(r for r in rows if r["id"] == rid)


async def test_reading_n_records_costs_n_calls(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    ids = await KIT.seed(sandbox, 4)
    got = await conn.read([*ids, "apt_unknown"])
    assert got["apt_unknown"].deleted and all(got[i].appointment is not None for i in ids)
    assert await requests_of(sandbox, "GET", "/api/appointments/{id}") == 5


async def test_create_booked_confirms_without_notifying(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    await KIT.seed(sandbox, 1)
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_n1", KIT.new_appointment())])
    assert out.ok and out.record is not None and out.record.appointment is not None
    assert out.record.appointment.status is Status.BOOKED and out.record.syncd_id == "apt_n1"
    assert await requests_of(sandbox, "POST", "/api/appointments") == 1
    assert await requests_of(sandbox, "PUT", "/api/appointments/{id}") == 1
    row = await dump(sandbox, out.record.external_id)
    assert row["_notifications"] == 0 and row["status"] == "confirmed"
    # a pending create is one call
    base = KIT.new_appointment()
    assert base.start is not None and base.end is not None
    pending = base.with_changes(status=Status.PENDING, start=base.start + timedelta(hours=2),
                                end=base.end + timedelta(hours=2))
    [out2] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_n2", pending)])
    assert out2.ok and await requests_of(sandbox, "PUT", "/api/appointments/{id}") == 1


async def test_writes_never_notify(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired, changed = KIT.update_of(current.appointment)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "u", desired, external_id=rid, current=current,
                                           changed=changed)])
    assert out.ok and out.record is not None
    [out2] = await conn.write([WriteRequest(WriteKind.CANCEL, "u", KIT.cancel_of(desired), external_id=rid,
                                            current=out.record)])
    assert out2.ok
    row = await dump(sandbox, rid)
    assert row["_notifications"] == 0 and row["status"] == "cancelled"
    assert row["notes"] == "moved by the contract suite\n[syncd:seed_" + row["notes"].split("[syncd:seed_")[1]


async def test_fulfilled_is_not_expressible_nothing_written(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    desired = current.appointment.with_changes(status=Status.FULFILLED)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "f", desired, external_id=rid, current=current,
                                           changed=frozenset({"status"}))])
    assert out.ok and out.record is not None and out.record.version == current.version
    assert await requests_of(sandbox, "PUT", "/api/appointments/{id}") == 0


async def test_terminal_record_is_a_conflict_without_a_put(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/records", {"records": [{"id": rid, "status": "no_show"}]})
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None and current.appointment.status is Status.NOSHOW
    desired = current.appointment.with_changes(notes="late edit")
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "t", desired, external_id=rid, current=current,
                                           changed=frozenset({"notes"}))])
    # an open conflict (docs/vendors/README.md rule 10)
    assert isinstance(out.error, NotWritable) and out.error.code == "TERMINAL"
    assert await requests_of(sandbox, "PUT", "/api/appointments/{id}") == 0


async def test_same_second_change_is_caught_by_fingerprint(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "GET", "path": f"/api/appointments/{rid}"},
                  "times": 1, "action": {"type": "mutate_keep_version", "changes": {"reason": "Llamar antes"}}})
    desired, changed = KIT.update_of(current.appointment)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "s", desired, external_id=rid, current=current,
                                           changed=changed)])
    assert isinstance(out.error, Conflict) and out.error.code == "STALE"
    assert out.record is not None and out.record.version == current.version
    assert await requests_of(sandbox, "PUT", "/api/appointments/{id}") == 0


async def test_state_lock_after_a_racing_change_is_a_conflict(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    assert current.appointment is not None
    # between our re-read and our PUT the doctor completes the visit: 422, and the re-read shows the move
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "PUT", "path": f"/api/appointments/{rid}"},
                  "times": 1, "action": {"type": "mutate_record", "id": rid,
                                         "changes": {"status": "completed", "diagnosis": "ok"}}})
    desired, changed = KIT.update_of(current.appointment)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "r", desired, external_id=rid, current=current,
                                           changed=changed)])
    assert isinstance(out.error, Conflict) and out.record is not None
    assert out.record.appointment is not None and out.record.appointment.status is Status.FULFILLED


async def test_deleted_target_is_a_conflict_with_a_deleted_record(sandbox: RunningSandbox,
                                                                   conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    current = (await conn.read([rid]))[rid]
    await KIT.delete(sandbox, rid)
    assert current.appointment is not None
    desired, changed = KIT.update_of(current.appointment)
    [out] = await conn.write([WriteRequest(WriteKind.UPDATE, "d", desired, external_id=rid, current=current,
                                           changed=changed)])
    assert isinstance(out.error, Conflict) and out.record is not None and out.record.deleted


async def test_hot_pass_skips_unchanged_and_checks_vanished(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    ids = await KIT.seed(sandbox, 4)
    pages = [p async for p in conn.changes(None)]
    cursor = pages[-1].cursor
    assert cursor is not None
    # nothing changed: a hot pass yields nothing, at the cost of one list call
    before = await requests_of(sandbox, "GET", "/api/appointments")
    quiet = [p async for p in conn.changes(cursor)]
    assert not [r for p in quiet for r in p.records] and quiet[-1].cursor
    assert await requests_of(sandbox, "GET", "/api/appointments") == before + 1
    cursor = quiet[-1].cursor
    # one deleted, one moved out of the hot window by staff: both vanish; GET tells which is which
    await KIT.delete(sandbox, ids[0])
    far = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    await control(sandbox, "POST", "/_sandbox/records", {"records": [{"id": ids[1], "date": far}]})
    pages = [p async for p in conn.changes(cursor)]
    deleted = {d for p in pages for d in p.deleted_ids}
    records = {r.external_id: r for p in pages for r in p.records}
    assert deleted == {ids[0]}
    assert set(records) == {ids[1]} and not records[ids[1]].deleted
    state = ScanState.load(pages[-1].cursor or "")
    assert state is not None and ids[0] not in state.known and state.run is None


async def test_scan_plan_runs_the_largest_due_pass(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    later = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")
    await control(sandbox, "POST", "/_sandbox/records", {"records": [{"id": rid, "date": later}]})
    pages = [p async for p in conn.changes(None)]
    cursor = pages[-1].cursor
    await KIT.vendor_edit(sandbox, rid)
    hot = [r for p in [p async for p in conn.changes(cursor)] for r in p.records]
    assert hot == []  # day +10 is outside the hot window
    real_now = conn.now
    conn.now = lambda: real_now() + timedelta(seconds=3600)  # the near pass (today-1 .. today+14) is due
    near = [p async for p in conn.changes(cursor)]
    assert [r.external_id for p in near for r in p.records] == [rid]
    state = ScanState.load(near[-1].cursor or "")
    assert state is not None and state.last["near"] == state.last["hot"]


async def test_list_missing_fields_falls_back_to_get(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    ids = await KIT.seed(sandbox, 2)
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "GET", "path": "/api/appointments"},
                  "times": 1, "action": {"type": "list_missing_fields"}})
    pages = [p async for p in conn.changes(None)]
    records = [r for p in pages for r in p.records]
    assert {r.external_id for r in records} == set(ids)
    assert all(r.version and r.syncd_id and r.appointment and r.appointment.notes for r in records)
    assert await requests_of(sandbox, "GET", "/api/appointments/{id}") == 2


async def test_cursor_resumes_mid_pass(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    ids = await KIT.seed(sandbox, 150)
    gen = conn.changes(None)
    first = await anext(gen)
    assert isinstance(gen, AsyncGenerator)
    await gen.aclose()
    assert len(first.records) == 100 and first.cursor is not None
    rest = [p async for p in conn.changes(first.cursor)]
    seen = {r.external_id for r in first.records} | {r.external_id for p in rest for r in p.records}
    assert seen == set(ids)
    assert sum(len(p.records) for p in rest) == 50


async def test_since_yields_records_changed_since(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    ids = await KIT.seed(sandbox, 3)
    await control(sandbox, "POST", "/_sandbox/clock",
                  {"now": (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    await KIT.vendor_edit(sandbox, ids[2])
    since = datetime.now(UTC) + timedelta(minutes=4)
    records = [r for p in [p async for p in conn.changes(None, since=since)] for r in p.records]
    assert [r.external_id for r in records] == [ids[2]]


async def test_forbidden_read_is_a_per_record_error(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/options", {"api_keys": {"sandbox-key": [DOCTOR]}})
    got = await conn.read([rid])
    assert got[rid].error is not None and "FORBIDDEN" in str(got[rid].error) and not got[rid].deleted


async def test_busy_doctor_keeps_the_suggested_times(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "POST", "path": "/api/appointments"},
                  "times": 1, "action": {"type": "doctor_busy", "suggested_times": ["10:30", "11:00"]}})
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "b", KIT.new_appointment())])
    assert isinstance(out.error, Rejected) and out.error.code == "APPOINTMENT_CONFLICT"
    assert "10:30,11:00" in str(out.error)
    assert await requests_of(sandbox, "POST", "/api/appointments") == 1


async def test_quota_429_is_waited_out(sandbox: RunningSandbox, conn: SaludYaConnector) -> None:
    [rid] = await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "GET", "path": "/api/appointments/*"},
                  "times": 1, "action": {"type": "rate_limit", "retry_after": 0}})
    got = await conn.read([rid])
    assert got[rid].appointment is not None and conn.http.retried == 1
    conn.http.max_rate_limit_wait = 10
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "GET", "path": "/api/appointments/*"},
                  "times": 1, "action": {"type": "rate_limit_window", "window": 86400}})
    with pytest.raises(RateLimited):
        await conn.read([rid])


async def test_create_outcome_lost_on_post_is_found_by_search(sandbox: RunningSandbox,
                                                              conn: SaludYaConnector) -> None:
    await KIT.seed(sandbox, 1)
    await control(sandbox, "POST", "/_sandbox/faults", {"match": {"method": "POST", "path": "/api/appointments"},
                  "times": 1, "action": {"type": "drop_after_apply"}})
    [out] = await conn.write([WriteRequest(WriteKind.CREATE, "apt_lost", KIT.new_appointment())])
    assert out.ok and out.record is not None and out.record.appointment is not None
    assert out.record.appointment.status is Status.BOOKED  # the adopted record still got its confirmation
    assert await requests_of(sandbox, "POST", "/api/appointments") == 1
    assert await requests_of(sandbox, "GET", "/api/appointments") == 1
    found = await conn.find_by_reference("apt_lost", exclude=[out.record.external_id])
    assert found == []


def test_scan_budget_factor() -> None:
    conn = make()
    state = ScanState(pages={"hot": 1, "near": 5, "full": 30})
    conn._budget(state, datetime.now(UTC).date())
    assert state.k == 1  # the part 2 example: C = 528
    state = ScanState(pages={"hot": 2, "near": 10, "full": 60})
    conn._budget(state, datetime.now(UTC).date())
    assert state.k == 2  # C = 1,056
    state = ScanState(pages={"hot": 20, "near": 100, "full": 600})
    conn._budget(state, datetime.now(UTC).date())
    assert state.k == 8 and state.warned is not None

