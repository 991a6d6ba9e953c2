"""SaludYa sandbox fidelity tests (docs/vendors/saludya.md §1-§10 and the seed document).

Hand-written wire requests through a plain aiohttp session: this tests the sandbox, not a connector.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.saludya.sandbox import LIST_FIELDS, RECORD_FIELDS, seed_body
from syncd.sandboxkit import start_sandbox
from syncd.sandboxkit.seedgen import generate
from tests.sandboxes._saludya_fixtures import (
    API_KEYS,
    APT,
    APT_BUSY,
    APT_OTHER,
    DOC,
    DOC2,
    DOC2_KEY,
    KEY,
    NOW,
    PAT,
    PAT2,
    SEED_ERROR_400,
    SEED_ERROR_401,
    SEED_ERROR_403,
    SEED_ERROR_404,
    SEED_ERROR_409,
    SEED_ERROR_422,
    Client,
)

pytestmark = pytest.mark.timeout(30)

ONE = f"/api/appointments/{APT}"
LIST = "/api/appointments"


async def _client(**options: Any) -> tuple[Client, Callable[[], Any]]:
    running = await start_sandbox("saludya", port=0, **options)
    session = aiohttp.ClientSession()
    client = Client(session, running)

    async def close() -> None:
        await session.close()
        await running.stop()

    return client, close


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    client, close = await _client(api_keys=API_KEYS)
    await client.control("POST", "/_sandbox/clock", {"now": NOW})
    await client.seed()
    try:
        yield client
    finally:
        await close()


# -- the rule table ------------------------------------------------------------------------------


@dataclass
class Case:
    method: str
    path: str
    body: Any = None
    status: int = 200
    raw: str | None = None
    key: str | None = KEY
    apt: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    exact: dict[str, Any] | None = None  # the whole error body
    code: str | None = None
    message: str | None = None
    details: set[str] | None = None  # keys of error.details
    expect: dict[str, Any] = field(default_factory=dict)  # fields of the answered record


def case(cid: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=cid)


V400 = {"status": 400, "code": "VALIDATION_ERROR", "message": "Invalid request data"}
T422 = "INVALID_STATE_TRANSITION"
COMPLETE = {"status": "completed", "diagnosis": "Hipertensión arterial controlada", "send_notification": False}
CANCEL = {"status": "cancelled", "cancellation_reason": "Paciente tuvo una emergencia familiar"}
NEW = {"patient_id": PAT, "doctor_id": DOC, "date": "2026-03-13", "time": "10:00", "send_notification": False}


def lock_message(status: str) -> str:
    return f"Cannot update a {status} appointment. Contact support if you need to make changes."


# fmt: off
RULES = [
    # --- seed document: the Update Appointment page ---
    case("seed:reschedule", "PUT", ONE, {"date": "2026-03-12", "time": "11:00", "notes": "Paciente solicitó cambio",
         "send_notification": True}, expect={"date": "2026-03-12", "time": "11:00", "status": "scheduled"}),
    case("seed:complete-with-diagnosis", "PUT", ONE, {**COMPLETE, "prescription": "Enalapril 10mg",
         "follow_up_required": True, "follow_up_date": "2026-06-10"},
         expect={"status": "completed", "follow_up_date": "2026-06-10", "completed_at": "2026-03-06T11:45:30Z"}),
    case("seed:cancel-with-reason", "PUT", ONE, CANCEL,
         expect={"status": "cancelled", "cancellation_reason": CANCEL["cancellation_reason"],
                 "cancelled_at": "2026-03-06T11:45:30Z"}),
    case("seed:400-complete-without-diagnosis", "PUT", ONE, {"status": "completed"}, 400, exact=SEED_ERROR_400),
    case("seed:400-complete-empty-diagnosis", "PUT", ONE, {"status": "completed", "diagnosis": "  "}, 400,
         exact=SEED_ERROR_400),
    case("seed:400-cancel-without-reason", "PUT", ONE, {"status": "cancelled"}, **V400,
         details={"cancellation_reason"}),
    case("seed:401-missing-token", "PUT", ONE, {"notes": "x"}, 401, key=None, exact=SEED_ERROR_401),
    case("seed:403-other-doctor", "PUT", ONE, {"notes": "x"}, 403, key=DOC2_KEY, exact=SEED_ERROR_403),
    case("seed:404-unknown-id", "PUT", "/api/appointments/apt_unknown01", {"notes": "x"}, 404,
         code="RESOURCE_NOT_FOUND", message="Appointment with ID 'apt_unknown01' not found"),
    case("seed:409-doctor-busy", "PUT", ONE, {"time": "10:00"}, 409, exact=SEED_ERROR_409),
    case("seed:422-completed-locked", "PUT", ONE, {"notes": "x"}, 422, apt={"status": "completed"},
         exact=SEED_ERROR_422),
    case("seed:422-completed-locked-even-noop", "PUT", ONE, {}, 422, apt={"status": "completed"},
         exact=SEED_ERROR_422),
    case("seed:status-values-only", "PUT", ONE, {"status": "done"}, **V400, details={"status"}),
    case("seed:status-lowercase", "PUT", ONE, {"status": "Confirmed"}, **V400, details={"status"}),
    case("seed:date-format", "PUT", ONE, {"date": "12/03/2026"}, **V400, details={"date"}),
    case("seed:date-real-calendar-day", "PUT", ONE, {"date": "2026-02-30"}, **V400, details={"date"}),
    case("seed:time-format-24h", "PUT", ONE, {"time": "24:00"}, **V400, details={"time"}),
    case("seed:time-format-hhmm", "PUT", ONE, {"time": "9:00"}, **V400, details={"time"}),
    case("seed:duration-integer", "PUT", ONE, {"duration_minutes": "30"}, **V400, details={"duration_minutes"}),
    case("seed:follow-up-required-boolean", "PUT", ONE, {**COMPLETE, "follow_up_required": "yes"}, **V400,
         details={"follow_up_required"}),
    case("seed:follow-up-date-format", "PUT", ONE, {**COMPLETE, "follow_up_required": True,
         "follow_up_date": "10-06-2026"}, **V400, details={"follow_up_date"}),
    case("seed:send-notification-boolean", "PUT", ONE, {"notes": "x", "send_notification": "no"}, **V400,
         details={"send_notification"}),
    case("seed:fields-left-out-stay", "PUT", ONE, {"notes": "solo notas"},
         expect={"notes": "solo notas", "reason": "Consulta de control cardiovascular", "time": "09:00"}),
    # --- p10.1 routes ---
    case("p10.1-no-delete-route", "DELETE", ONE, None, 405),
    case("p10.1-no-patch-route", "PATCH", ONE, {"status": "confirmed"}, 405),
    case("p10.1-get-one-full-record", "GET", ONE, None,
         expect={"id": APT, "patient_name": "Paciente Uno", "patient_email": "p1@example.org",
                 "doctor_name": "Dr. Uno", "specialty": "Cardiología", "updated_at": "2026-03-05T14:22:10Z"}),
    # --- p10.2 auth and scope ---
    case("p10.2-401-not-bearer", "GET", ONE, None, 401, key=None, headers={"Authorization": "Token sandbox-key"},
         exact=SEED_ERROR_401),
    case("p10.2-401-unknown-key", "GET", ONE, None, 401, key="nope", exact=SEED_ERROR_401),
    case("p10.2-401-before-404", "GET", "/api/appointments/apt_unknown01", None, 401, key="nope",
         exact=SEED_ERROR_401),
    case("p10.2-403-get-other-doctor", "GET", ONE, None, 403, key=DOC2_KEY, code="FORBIDDEN",
         message="You don't have permission to view this appointment"),
    case("p10.2-get-own-doctor", "GET", f"/api/appointments/{APT_OTHER}", None, key=DOC2_KEY,
         expect={"doctor_id": DOC2}),
    case("p10.2-403-post-other-doctor", "POST", LIST, NEW, 403, key=DOC2_KEY, code="FORBIDDEN",
         message="You don't have permission to create appointments for this doctor"),
    # --- p10.3 list parameters ---
    case("p10.3-limit-zero", "GET", f"{LIST}?limit=0", None, **V400, details={"limit"}),
    case("p10.3-limit-101", "GET", f"{LIST}?limit=101", None, **V400, details={"limit"}),
    case("p10.3-limit-not-int", "GET", f"{LIST}?limit=ten", None, **V400, details={"limit"}),
    case("p10.3-page-zero", "GET", f"{LIST}?page=0", None, **V400, details={"page"}),
    case("p10.3-bad-date-from", "GET", f"{LIST}?date_from=2026-3-1", None, **V400, details={"date_from"}),
    case("p10.3-bad-date-to", "GET", f"{LIST}?date_to=2026-13-01", None, **V400, details={"date_to"}),
    case("p10.3-date-from-after-date-to", "GET", f"{LIST}?date_from=2026-03-13&date_to=2026-03-12", None, **V400,
         details={"date_from"}),
    case("p10.3-bad-sort-by", "GET", f"{LIST}?sort_by=updated_at", None, **V400, details={"sort_by"}),
    case("p10.3-bad-sort-order", "GET", f"{LIST}?sort_order=up", None, **V400, details={"sort_order"}),
    case("p10.3-bad-status-filter", "GET", f"{LIST}?status=booked", None, **V400, details={"status"}),
    # --- p10.4 create ---
    case("p10.4-create-201-scheduled", "POST", LIST, {**NEW, "duration_minutes": 45, "reason": "Control",
         "notes": "[syncd:apt_01JD5K8Q2M]"}, 201,
         expect={"status": "scheduled", "duration_minutes": 45, "specialty": "Cardiología",
                 "created_at": "2026-03-06T11:45:30Z", "updated_at": "2026-03-06T11:45:30Z",
                 "completed_at": None, "cancelled_at": None, "notes": "[syncd:apt_01JD5K8Q2M]"}),
    case("p10.4-create-default-duration-30", "POST", LIST, NEW, 201, expect={"duration_minutes": 30}),
    case("p10.4-create-missing-required", "POST", LIST, {"send_notification": False}, **V400,
         details={"patient_id", "doctor_id", "date", "time"}),
    case("p10.4-create-status-rejected", "POST", LIST, {**NEW, "status": "confirmed"}, **V400, details={"status"}),
    case("p10.4-create-clinical-rejected", "POST", LIST, {**NEW, "diagnosis": "x", "cancellation_reason": "y"},
         **V400, details={"diagnosis", "cancellation_reason"}),
    case("p10.4-create-read-only-rejected", "POST", LIST, {**NEW, "id": "apt_mine000001"}, **V400, details={"id"}),
    case("p10.4-create-unknown-field", "POST", LIST, {**NEW, "room": "3"}, **V400, details={"room"}),
    case("p10.4-create-unknown-patient", "POST", LIST, {**NEW, "patient_id": "pat_nobody0000"}, **V400,
         details={"patient_id"}),
    case("p10.4-create-unknown-doctor", "POST", LIST, {**NEW, "doctor_id": "doc_nobody0000"}, **V400,
         details={"doctor_id"}),
    case("p10.4-create-bad-formats", "POST", LIST, {**NEW, "date": "2026-03-32", "time": "10:5",
         "duration_minutes": 500}, **V400, details={"date", "time", "duration_minutes"}),
    case("p10.4-create-duration-too-short", "POST", LIST, {**NEW, "duration_minutes": 4}, **V400,
         details={"duration_minutes"}),
    case("p10.4-create-notes-too-long", "POST", LIST, {**NEW, "notes": "n" * 1001}, **V400, details={"notes"}),
    case("p10.4-create-reason-too-long", "POST", LIST, {**NEW, "reason": "r" * 256}, **V400, details={"reason"}),
    case("p10.4-create-body-not-json", "POST", LIST, None, raw="{not json", **V400, details={"body"}),
    case("p10.4-create-409-clash", "POST", LIST, {**NEW, "date": "2026-03-12", "time": "10:15"}, 409,
         code="APPOINTMENT_CONFLICT", details={"conflicting_appointment_id", "suggested_times"}),
    # --- p10.5 PUT check order and 400s ---
    case("p10.5-404-before-403", "PUT", "/api/appointments/apt_unknown01", {"notes": "x"}, 404, key=DOC2_KEY,
         code="RESOURCE_NOT_FOUND"),
    case("p10.5-403-before-400", "PUT", ONE, None, 403, key=DOC2_KEY, raw="{not json", exact=SEED_ERROR_403),
    case("p10.5-400-before-422", "PUT", ONE, {"room": "3"}, **V400, apt={"status": "completed"}, details={"room"}),
    case("p10.5-422-before-400-reason", "PUT", ONE, {"status": "cancelled"}, 422, apt={"status": "in_progress"},
         code=T422, details={"from", "to", "allowed"}),
    case("p10.5-400-diagnosis-before-409", "PUT", ONE, {"status": "completed", "time": "10:00"}, 400,
         exact=SEED_ERROR_400),
    case("p10.5-body-not-json", "PUT", ONE, None, raw="{not json", **V400, details={"body"}),
    case("p10.5-body-not-object", "PUT", ONE, ["notes"], **V400, details={"body"}),
    case("p10.5-unknown-field", "PUT", ONE, {"room": "3"}, **V400, details={"room"}),
    case("p10.5-immutable-patient", "PUT", ONE, {"patient_id": PAT2}, **V400, details={"patient_id"}),
    case("p10.5-immutable-doctor-even-same", "PUT", ONE, {"doctor_id": DOC}, **V400, details={"doctor_id"}),
    case("p10.5-read-only-updated-at", "PUT", ONE, {"updated_at": "2026-03-06T00:00:00Z", "specialty": "X"},
         **V400, details={"updated_at", "specialty"}),
    case("p10.5-null-date", "PUT", ONE, {"date": None}, **V400, details={"date"}),
    case("p10.5-null-status", "PUT", ONE, {"status": None}, **V400, details={"status"}),
    case("p10.5-null-clears-notes-and-reason", "PUT", ONE, {"notes": None, "reason": None},
         apt={"notes": "old"}, expect={"notes": None, "reason": None}),
    case("p10.5-clinical-with-other-status", "PUT", ONE, {"status": "confirmed", "diagnosis": "x"}, **V400,
         details={"diagnosis"}),
    case("p10.5-prescription-without-completing", "PUT", ONE, {"prescription": "x"}, **V400,
         details={"prescription"}),
    case("p10.5-cancellation-reason-with-other-status", "PUT", ONE, {"cancellation_reason": "x"}, **V400,
         details={"cancellation_reason"}),
    case("p10.5-follow-up-date-needs-required", "PUT", ONE, {**COMPLETE, "follow_up_date": "2026-06-10"}, **V400,
         details={"follow_up_date"}),
    case("p10.5-cancellation-reason-too-long", "PUT", ONE, {"status": "cancelled", "cancellation_reason": "x" * 501},
         **V400, details={"cancellation_reason"}),
    case("p10.5-duration-range", "PUT", ONE, {"duration_minutes": 481}, **V400, details={"duration_minutes"}),
    # --- p10.6 state machine ---
    case("p10.6-scheduled-to-confirmed", "PUT", ONE, {"status": "confirmed"}, expect={"status": "confirmed"}),
    case("p10.6-scheduled-to-in-progress", "PUT", ONE, {"status": "in_progress"}, expect={"status": "in_progress"}),
    case("p10.6-scheduled-to-no-show", "PUT", ONE, {"status": "no_show"}, expect={"status": "no_show"}),
    case("p10.6-confirmed-to-scheduled", "PUT", ONE, {"status": "scheduled"}, apt={"status": "confirmed"},
         expect={"status": "scheduled"}),
    case("p10.6-confirmed-to-cancelled", "PUT", ONE, CANCEL, apt={"status": "confirmed"},
         expect={"status": "cancelled"}),
    case("p10.6-in-progress-to-confirmed", "PUT", ONE, {"status": "confirmed"}, apt={"status": "in_progress"},
         expect={"status": "confirmed"}),
    case("p10.6-in-progress-to-completed", "PUT", ONE, {**COMPLETE, "notes": "ok"}, apt={"status": "in_progress"},
         expect={"status": "completed", "diagnosis": COMPLETE["diagnosis"]}),
    case("p10.6-in-progress-to-cancelled-422", "PUT", ONE, CANCEL, 422, apt={"status": "in_progress"}, code=T422,
         message="Cannot change status from 'in_progress' to 'cancelled'", details={"from", "to", "allowed"}),
    case("p10.6-in-progress-to-scheduled-422", "PUT", ONE, {"status": "scheduled"}, 422,
         apt={"status": "in_progress"}, code=T422, details={"from", "to", "allowed"}),
    case("p10.6-in-progress-to-no-show-422", "PUT", ONE, {"status": "no_show"}, 422,
         apt={"status": "in_progress"}, code=T422, details={"from", "to", "allowed"}),
    case("p10.6-in-progress-notes-allowed", "PUT", ONE, {"notes": "llegó"}, apt={"status": "in_progress"},
         expect={"notes": "llegó", "status": "in_progress"}),
    case("p10.6-in-progress-date-locked", "PUT", ONE, {"date": "2026-03-13"}, 422, apt={"status": "in_progress"},
         exact={"error": {"code": T422, "message": "Cannot change date, time, duration or reason of an "
                                                      "appointment in progress"}}),
    case("p10.6-in-progress-reason-locked", "PUT", ONE, {"reason": "x"}, 422, apt={"status": "in_progress"},
         code=T422, message="Cannot change date, time, duration or reason of an appointment in progress"),
    case("p10.6-same-status-noop", "PUT", ONE, {"status": "scheduled"}, expect={"status": "scheduled",
         "updated_at": "2026-03-05T14:22:10Z"}),
    case("p10.6-cancelled-locked", "PUT", ONE, {"notes": "x"}, 422, apt={"status": "cancelled",
         "cancellation_reason": "r"}, exact={"error": {"code": T422, "message": lock_message("cancelled")}}),
    case("p10.6-no-show-locked", "PUT", ONE, {"send_notification": False}, 422, apt={"status": "no_show"},
         exact={"error": {"code": T422, "message": lock_message("no_show")}}),
    case("p10.6-cancelled-locked-same-status", "PUT", ONE, CANCEL, 422, apt={"status": "cancelled"},
         exact={"error": {"code": T422, "message": lock_message("cancelled")}}),
    # --- p10.7 availability ---
    case("p10.7-adjacent-slot-free", "PUT", ONE, {"time": "10:30"}, expect={"time": "10:30"}),
    case("p10.7-own-record-not-counted", "PUT", ONE, {"time": "09:15"}, expect={"time": "09:15"}),
    case("p10.7-duration-change-clashes", "PUT", ONE, {"duration_minutes": 90}, 409, code="APPOINTMENT_CONFLICT",
         details={"conflicting_appointment_id", "suggested_times"}),
    case("p10.7-other-doctor-not-counted", "PUT", ONE, {"time": "10:00"}, apt={"doctor_id": DOC2, "time": "08:00"},
         status=409, code="APPOINTMENT_CONFLICT"),
    case("p10.7-notes-only-no-check", "PUT", ONE, {"notes": "x"}, apt={"time": "10:00"}, expect={"notes": "x"}),
    # --- p10.12 If-Match ignored ---
    case("p10.12-if-match-ignored", "PUT", ONE, {"notes": "x"}, headers={"If-Match": '"stale"'},
         expect={"notes": "x"}),
]
# fmt: on


@pytest.mark.parametrize("c", RULES)
async def test_rule(c: Case) -> None:
    client, close = await _client(api_keys=API_KEYS)
    try:
        await client.control("POST", "/_sandbox/clock", {"now": NOW})
        await client.seed(c.apt)
        ans = await client.call(c.method, c.path, c.body, key=c.key, raw=c.raw, headers=c.headers)
        assert ans.status == c.status, ans.body
        if c.exact is not None:
            assert ans.body == c.exact
        if c.code is not None:
            assert ans.body["error"]["code"] == c.code
        if c.message is not None:
            assert ans.body["error"]["message"] == c.message
        if c.details is not None:
            assert set(ans.body["error"]["details"]) == c.details, ans.body
        if 200 <= c.status < 300:
            assert "error" not in ans.body
            if c.method in ("PUT", "POST") or c.path == ONE:
                assert list(ans.body) == list(RECORD_FIELDS)
            for name, value in c.expect.items():
                assert ans.body[name] == value, (name, ans.body)
    finally:
        await close()


# -- focused behaviour ---------------------------------------------------------------------------------


async def test_p10_7_suggested_times_and_earliest_conflict(api: Client) -> None:
    # free the 09:00 slot's neighbour, add a second clash at 10:15 and a busy 11:00
    await api.control("POST", "/_sandbox/records", {"records": [
        {"id": "apt_zz00000001", "patient_id": PAT2, "doctor_id": DOC, "date": "2026-03-12", "time": "10:15",
         "duration_minutes": 30, "status": "scheduled"},
        {"id": "apt_aa00000001", "patient_id": PAT2, "doctor_id": DOC, "date": "2026-03-12", "time": "11:00",
         "duration_minutes": 30, "status": "scheduled"},
        {"id": "apt_cc00000001", "patient_id": PAT2, "doctor_id": DOC, "date": "2026-03-12", "time": "12:00",
         "duration_minutes": 60, "status": "cancelled", "cancellation_reason": "x"},
        {"id": "apt_nn00000001", "patient_id": PAT2, "doctor_id": DOC, "date": "2026-03-12", "time": "12:30",
         "duration_minutes": 30, "status": "no_show"},
    ]})  # fmt: skip
    ans = await api.call("PUT", ONE, {"time": "10:00", "duration_minutes": 30})
    assert ans.status == 409
    details = ans.body["error"]["details"]
    assert details["conflicting_appointment_id"] == APT_BUSY  # earliest start of the two overlaps
    assert details["suggested_times"] == ["11:30", "12:00", "12:30"]  # cancelled / no_show hold no time
    # late in the day: suggestions stop at the end of the date
    ans = await api.call("PUT", ONE, {"time": "23:00"})
    assert ans.status == 200
    ans = await api.call("POST", LIST, {**NEW, "date": "2026-03-12", "time": "23:00", "duration_minutes": 30})
    assert ans.status == 409
    assert ans.body["error"]["details"] == {"conflicting_appointment_id": APT, "suggested_times": ["23:30"]}


async def test_p10_1_request_id_echoed(api: Client) -> None:
    ans = await api.call("GET", ONE, headers={"X-Request-ID": "6f1c7f5e-1d2a-4b5c-9e8f-0a1b2c3d4e5f"})
    assert ans.headers["X-Request-ID"] == "6f1c7f5e-1d2a-4b5c-9e8f-0a1b2c3d4e5f"
    ans = await api.call("GET", ONE, key=None, headers={"X-Request-ID": "abc"})
    assert ans.status == 401 and ans.headers["X-Request-ID"] == "abc"


async def test_auth_missing_expired_revoked(api: Client) -> None:
    ans = await api.call("GET", ONE, key=None)
    assert (ans.status, ans.body) == (401, SEED_ERROR_401)
    assert "X-RateLimit-Remaining" not in ans.headers
    # an API key never expires (docs/vendors/saludya.md §1): a year later it still works
    api.running.sandbox.clock.advance(366 * 86400)
    ans = await api.call("GET", ONE)
    assert ans.status == 200
    # revoked: the key is removed from the organisation's keys
    await api.control("POST", "/_sandbox/options", {"api_keys": {DOC2_KEY: [DOC2]}})
    ans = await api.call("GET", ONE)
    assert (ans.status, ans.body) == (401, SEED_ERROR_401)
    ans = await api.call("GET", f"/api/appointments/{APT_OTHER}", key=DOC2_KEY)
    assert ans.status == 200
    # reset restores the default credential {"sandbox-key": "*"}
    await api.control("POST", "/_sandbox/reset")
    ans = await api.call("GET", LIST)
    assert ans.status == 200 and ans.body["data"] == []


async def test_p10_2_401_not_counted_and_lists_scoped(api: Client) -> None:
    first = await api.call("GET", LIST)
    for _ in range(3):
        assert (await api.call("GET", LIST, key="wrong")).status == 401
    second = await api.call("GET", LIST)
    assert int(first.headers["X-RateLimit-Remaining"]) - 1 == int(second.headers["X-RateLimit-Remaining"])
    assert {r["id"] for r in first.body["data"]} == {APT, APT_BUSY, APT_OTHER}
    scoped = await api.call("GET", LIST, key=DOC2_KEY)
    assert [r["id"] for r in scoped.body["data"]] == [APT_OTHER]
    assert scoped.body["pagination"]["total"] == 1


async def test_p10_3_list_paging_filters_and_order(api: Client) -> None:
    records = []
    for i in range(45):
        day = 10 + i % 5
        records.append({
            "id": f"apt_p{i:09d}", "patient_id": PAT2 if i % 2 else PAT, "doctor_id": DOC2,
            "date": f"2026-04-{day:02d}", "time": f"{8 + i // 5:02d}:00", "duration_minutes": 30,
            "status": "cancelled" if i % 9 == 0 else "confirmed",
            "created_at": f"2026-03-01T10:{i // 2:02d}:00Z",
        })  # fmt: skip
    await api.control("POST", "/_sandbox/records", {"records": records})
    seen: list[str] = []
    page = 1
    while True:
        params = {"date_from": "2026-04-10", "date_to": "2026-04-14", "sort_by": "created_at",
                  "sort_order": "asc", "page": str(page), "limit": "20"}  # fmt: skip
        ans = await api.call("GET", LIST, params=params)
        assert ans.status == 200
        assert ans.body["pagination"] == {"page": page, "limit": 20, "total": 45, "total_pages": 3}
        seen += [r["id"] for r in ans.body["data"]]
        assert all(list(r) == list(RECORD_FIELDS) for r in ans.body["data"])
        if page >= ans.body["pagination"]["total_pages"] or not ans.body["data"]:
            break
        page += 1
    assert seen == sorted(seen, key=lambda rid: (next(r["created_at"] for r in records if r["id"] == rid), rid))
    assert len(seen) == 45 == len(set(seen))
    # past the end, inclusive bounds, filters, default limit, desc, empty
    past = await api.call("GET", LIST, params={"date_from": "2026-04-10", "page": "9", "limit": "20"})
    assert past.body["data"] == [] and past.body["pagination"]["total"] == 45
    one_day = await api.call("GET", LIST, params={"date_from": "2026-04-12", "date_to": "2026-04-12"})
    assert one_day.body["pagination"]["total"] == 9 and {r["date"] for r in one_day.body["data"]} == {"2026-04-12"}
    cancelled = await api.call("GET", LIST, params={"status": "cancelled"})
    assert cancelled.body["pagination"]["total"] == 5  # cancelled are listed too
    by_patient = await api.call("GET", LIST, params={"patient_id": PAT2, "doctor_id": DOC2})
    assert by_patient.body["pagination"]["total"] == 22
    default = await api.call("GET", LIST)
    assert default.body["pagination"] == {"page": 1, "limit": 20, "total": 48, "total_pages": 3}
    first = default.body["data"][0]
    assert (first["date"], first["time"]) == ("2026-03-12", "09:00")  # sort_by=date by default
    desc = await api.call("GET", LIST, params={"sort_by": "date", "sort_order": "desc", "limit": "1"})
    assert desc.body["data"][0]["date"] == "2026-04-14"
    by_status = await api.call("GET", LIST, params={"sort_by": "status", "limit": "100"})
    statuses = [r["status"] for r in by_status.body["data"]]
    assert statuses == sorted(statuses)
    empty = await api.call("GET", LIST, params={"date_from": "2030-01-01"})
    assert empty.body == {"data": [], "pagination": {"page": 1, "limit": 20, "total": 0, "total_pages": 0}}


async def test_p10_8_notifications_counted(api: Client) -> None:
    assert (await api.call("PUT", ONE, {"notes": "a"})).status == 200  # default true
    assert (await api.call("PUT", ONE, {"notes": "b", "send_notification": False})).status == 200
    assert (await api.call("PUT", ONE, {"notes": "b", "send_notification": True})).status == 200  # no-op
    created = await api.call("POST", LIST, {**NEW, "send_notification": True})
    loud = {k: v for k, v in NEW.items() if k != "send_notification"}
    quiet = await api.call("POST", LIST, {**loud, "time": "12:00"})
    assert quiet.status == 201
    quiet_off = await api.call("POST", LIST, {**NEW, "time": "14:00", "send_notification": False})
    assert (await api.record(APT))["_notifications"] == 1
    assert (await api.record(created.body["id"]))["_notifications"] == 1
    assert (await api.record(quiet.body["id"]))["_notifications"] == 1  # default true on create too
    assert (await api.record(quiet_off.body["id"]))["_notifications"] == 0


async def test_p10_9_version_bumps(api: Client) -> None:
    first = await api.call("PUT", ONE, {"notes": "a", "send_notification": False})
    assert first.body["updated_at"] == "2026-03-06T11:45:30Z"
    # same second: strictly increasing by one second
    second = await api.call("PUT", ONE, {"notes": "b", "send_notification": False})
    assert second.body["updated_at"] == "2026-03-06T11:45:31Z"
    # no-op and send_notification-only PUTs bump nothing
    for body in ({"notes": "b"}, {"send_notification": True}, {}):
        same = await api.call("PUT", ONE, body)
        assert same.status == 200 and same.body["updated_at"] == "2026-03-06T11:45:31Z"
    api.running.sandbox.clock.advance(120)
    done = await api.call("PUT", ONE, {**COMPLETE})
    assert re.fullmatch(r"2026-03-06T11:47:3\dZ", done.body["updated_at"])
    assert done.body["completed_at"] == done.body["updated_at"]
    assert done.body["cancelled_at"] is None
    got = await api.call("GET", ONE)
    assert got.body == done.body
    # overwrite through the control API bumps too
    await api.control("POST", "/_sandbox/records", {"records": [{"id": APT_OTHER, "notes": "staff"}]})
    other = await api.call("GET", f"/api/appointments/{APT_OTHER}")
    assert other.body["notes"] == "staff" and other.body["updated_at"] > "2026-03-06T11:47:00Z"


async def test_p10_10_deletion(api: Client) -> None:
    await api.control("POST", "/_sandbox/records", {"delete": [APT]})
    got = await api.call("GET", ONE)
    assert (got.status, got.body) == (404, SEED_ERROR_404)
    put = await api.call("PUT", ONE, {"notes": "x"})
    assert (put.status, put.body) == (404, SEED_ERROR_404)
    listed = await api.call("GET", LIST)
    assert APT not in {r["id"] for r in listed.body["data"]}
    assert listed.body["pagination"]["total"] == 2
    dumped = await api.record(APT)
    assert dumped["_deleted_at"] == "2026-03-06T11:45:30Z"
    assert (await api.record(APT_BUSY))["_deleted_at"] is None
    # the deleted slot no longer holds the doctor's time
    assert (await api.call("PUT", f"/api/appointments/{APT_BUSY}", {"time": "09:00"})).status == 200


async def test_p10_11_quota_windows() -> None:
    client, close = await _client(per_15min=3, per_hour=5, per_day=1000)
    try:
        sandbox = client.running.sandbox
        sandbox.clock.set(datetime(2026, 3, 6, 11, 5, tzinfo=UTC))
        remaining = []
        for _ in range(3):
            ans = await client.call("GET", LIST)
            assert ans.status == 200
            assert ans.headers["X-RateLimit-Window"] == "900"
            assert ans.headers["X-RateLimit-Limit"] == "3"
            assert ans.headers["X-RateLimit-Reset"] == str(int(datetime(2026, 3, 6, 11, 15, tzinfo=UTC).timestamp()))
            remaining.append(ans.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        over = await client.call("GET", LIST)
        assert over.status == 429
        assert over.body == {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Too many requests",
                                       "details": {"limit": 3, "window": 900, "retry_after": 600}}}  # fmt: skip
        assert over.headers["Retry-After"] == "600"
        assert (await client.call("GET", LIST)).status == 429  # 429s are not counted, still 429
        sandbox.clock.set(datetime(2026, 3, 6, 11, 15, tzinfo=UTC))
        ans = await client.call("GET", LIST)
        # 15-min window: 2 left; hour window: 1 left -> headers describe the hour
        assert (ans.headers["X-RateLimit-Window"], ans.headers["X-RateLimit-Remaining"]) == ("3600", "1")
        assert ans.headers["X-RateLimit-Limit"] == "5"
        assert (await client.call("GET", LIST)).status == 200
        over = await client.call("GET", LIST)
        assert over.status == 429
        assert over.body["error"]["details"] == {"limit": 5, "window": 3600, "retry_after": 2700}
        assert over.headers["Retry-After"] == "2700"
        # runtime options: rate_limits off -> no 429, no headers
        await client.control("POST", "/_sandbox/options", {"rate_limits": False})
        ans = await client.call("GET", LIST)
        assert ans.status == 200 and "X-RateLimit-Limit" not in ans.headers
    finally:
        await close()


async def test_p10_11_daily_window_and_tie() -> None:
    client, close = await _client(per_15min=5, per_hour=5, per_day=2)
    try:
        client.running.sandbox.clock.set(datetime(2026, 3, 6, 23, 0, tzinfo=UTC))
        ans = await client.call("GET", LIST)
        assert (ans.headers["X-RateLimit-Window"], ans.headers["X-RateLimit-Remaining"]) == ("86400", "1")
        ans = await client.call("GET", LIST)
        over = await client.call("GET", LIST)
        assert over.status == 429 and over.headers["Retry-After"] == "3600"
        assert over.body["error"]["details"]["window"] == 86400
    finally:
        await close()
    client, close = await _client(per_15min=5, per_hour=5)
    try:
        ans = await client.call("GET", LIST)
        assert ans.headers["X-RateLimit-Window"] == "900"  # tie -> the shortest window
    finally:
        await close()


async def test_defaults_and_options(api: Client) -> None:
    fresh, close = await _client()
    try:
        opts = await fresh.control("GET", "/_sandbox/options")
        assert opts["api_keys"] == {"sandbox-key": "*"}
        assert (opts["per_15min"], opts["per_hour"], opts["per_day"]) == (100, 300, 1000)
        assert opts["timezone"] == "America/Bogota" and opts["rate_limits"] is True
        ans = await fresh.call("GET", LIST)
        assert ans.headers["X-RateLimit-Limit"] == "100" and ans.headers["X-RateLimit-Remaining"] == "99"
    finally:
        await close()
    with pytest.raises(TypeError):
        await start_sandbox("saludya", port=0, token_ttl_seconds=5)
    counts = await api.control("GET", "/_sandbox/requests")
    await api.call("GET", ONE)
    await api.call("PUT", ONE, {"notes": "x"})
    counts = await api.control("GET", "/_sandbox/requests")
    rows = {(r["method"], r["route"]): r["count"] for r in counts["requests"]}
    assert rows[("GET", "/api/appointments/{id}")] == 1 and rows[("PUT", "/api/appointments/{id}")] == 1


async def test_no_webhooks_pushed(api: Client) -> None:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await api.control("POST", "/_sandbox/options", {"webhook_url": f"http://127.0.0.1:{port}/hook"})
        assert (await api.call("PUT", ONE, {"notes": "x"})).status == 200
        assert (await api.call("POST", LIST, NEW)).status == 201
        await api.running.sandbox.wait_webhooks(timeout=1)
        await asyncio.sleep(0.05)
        assert received == [] and api.running.sandbox.webhooks_sent == []
    finally:
        await runner.cleanup()


# -- faults ------------------------------------------------------------------------------------------


async def add_fault(api: Client, path: str, action: dict[str, Any], times: int = 2, method: str = "*") -> None:
    await api.control("POST", "/_sandbox/faults", {"match": {"method": method, "path": path}, "times": times,
                                                   "action": action})  # fmt: skip


async def assert_fault_gone(api: Client, ftype: str, fired: int) -> None:
    state = await api.control("GET", "/_sandbox/faults")
    assert state["faults"] == []
    assert state["fired"][ftype] == fired


async def test_fault_status(api: Client) -> None:
    body = {"error": {"code": "INTERNAL_ERROR", "message": "Internal server error"}}
    await add_fault(api, "/api/appointments/*", {"type": "status", "status": 503, "body": body})
    assert [(await api.call("GET", ONE)).status for _ in range(3)] == [503, 503, 200]
    await assert_fault_gone(api, "status", 2)


async def test_fault_delay(api: Client) -> None:
    await add_fault(api, "/api/appointments/*", {"type": "delay", "seconds": 0.2})
    loop = asyncio.get_running_loop()
    took = []
    for _ in range(3):
        start = loop.time()
        assert (await api.call("GET", ONE)).status == 200
        took.append(loop.time() - start)
    assert took[0] >= 0.2 and took[1] >= 0.2 and took[2] < 0.2
    await assert_fault_gone(api, "delay", 2)


async def test_fault_drop_after_apply(api: Client) -> None:
    # POST, because aiohttp silently re-sends an idempotent method (PUT) once after a dropped
    # connection, which would eat the second firing
    await add_fault(api, "/api/appointments", {"type": "drop_after_apply"}, method="POST")
    for hhmm in ("12:00", "13:00"):
        with pytest.raises(aiohttp.ClientError):
            await api.call("POST", LIST, {**NEW, "time": hhmm})
        dump = await api.control("GET", "/_sandbox/records")
        assert hhmm in {r["time"] for r in dump["records"]}  # applied although the answer was lost
    assert (await api.call("POST", LIST, {**NEW, "time": "14:00"})).status == 201
    assert len((await api.control("GET", "/_sandbox/records"))["records"]) == 6
    await assert_fault_gone(api, "drop_after_apply", 2)


async def test_fault_rate_limit(api: Client) -> None:
    await add_fault(api, "/api/appointments", {"type": "rate_limit", "retry_after": 3})
    for _ in range(2):
        ans = await api.call("GET", LIST)
        assert ans.status == 429 and ans.headers["Retry-After"] == "3"
        assert ans.body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert set(ans.body["error"]["details"]) == {"limit", "window", "retry_after"}
        assert ans.body["error"]["details"]["retry_after"] == 3
    assert (await api.call("GET", LIST)).status == 200
    await assert_fault_gone(api, "rate_limit", 2)


async def test_fault_mutate_before(api: Client) -> None:
    await add_fault(api, "/api/appointments/*", {"type": "mutate_before", "changes": {"reason": "staff"}},
                    method="GET")  # fmt: skip
    first = await api.call("GET", ONE)
    assert first.body["reason"] == "staff" and first.body["updated_at"] == "2026-03-06T11:45:30Z"
    second = await api.call("GET", ONE)
    assert second.body["updated_at"] == "2026-03-06T11:45:31Z"
    third = await api.call("GET", ONE)
    assert third.body["updated_at"] == "2026-03-06T11:45:31Z"
    await assert_fault_gone(api, "mutate_before", 2)


async def test_fault_delete_record(api: Client) -> None:
    await add_fault(api, "/api/appointments", {"type": "delete_record", "id": APT}, times=1, method="GET")
    listed = await api.call("GET", LIST)
    assert APT not in {r["id"] for r in listed.body["data"]}
    assert (await api.call("GET", ONE)).body == SEED_ERROR_404
    await assert_fault_gone(api, "delete_record", 1)
    # a path-named record, twice
    await add_fault(api, "/api/appointments/*", {"type": "delete_record"}, times=2, method="GET")
    assert (await api.call("GET", f"/api/appointments/{APT_BUSY}")).status == 404
    assert (await api.call("GET", f"/api/appointments/{APT_OTHER}")).status == 404
    await assert_fault_gone(api, "delete_record", 3)


async def test_fault_mutate_record(api: Client) -> None:
    await add_fault(api, "/api/appointments", {"type": "mutate_record", "id": APT,
                                               "changes": {"date": "2026-12-30"}}, method="GET")  # fmt: skip
    window = {"date_from": "2026-03-12", "date_to": "2026-03-12"}
    first = await api.call("GET", LIST, params=window)
    assert APT not in {r["id"] for r in first.body["data"]}  # moved out of the window between pages
    got = await api.call("GET", ONE)
    assert got.body["date"] == "2026-12-30" and got.body["updated_at"] == "2026-03-06T11:45:30Z"
    await api.call("GET", LIST, params=window)
    assert (await api.call("GET", ONE)).body["updated_at"] == "2026-03-06T11:45:31Z"
    await api.call("GET", LIST, params=window)
    assert (await api.call("GET", ONE)).body["updated_at"] == "2026-03-06T11:45:31Z"
    await assert_fault_gone(api, "mutate_record", 2)


async def test_fault_mutate_keep_version(api: Client) -> None:
    await add_fault(api, "/api/appointments/*", {"type": "mutate_keep_version", "changes": {"notes": "Llamar antes"}},
                    times=1, method="GET")  # fmt: skip
    got = await api.call("GET", ONE)
    assert got.body["notes"] == "Llamar antes"
    assert got.body["updated_at"] == "2026-03-05T14:22:10Z"  # no bump: a same-second change
    await assert_fault_gone(api, "mutate_keep_version", 1)


async def test_fault_rate_limit_window(api: Client) -> None:
    api.running.sandbox.clock.set(datetime(2026, 3, 6, 22, 0, tzinfo=UTC))
    await add_fault(api, "/api/appointments*", {"type": "rate_limit_window", "window": 86400})
    for _ in range(2):
        ans = await api.call("GET", LIST)
        assert ans.status == 429
        assert ans.headers["Retry-After"] == "7200"
        assert ans.headers["X-RateLimit-Window"] == "86400" and ans.headers["X-RateLimit-Limit"] == "1000"
        assert ans.headers["X-RateLimit-Remaining"] == "0"
        assert ans.headers["X-RateLimit-Reset"] == str(int(datetime(2026, 3, 7, tzinfo=UTC).timestamp()))
        assert ans.body["error"]["details"] == {"limit": 1000, "window": 86400, "retry_after": 7200}
    assert (await api.call("GET", LIST)).status == 200
    await assert_fault_gone(api, "rate_limit_window", 2)


async def test_fault_doctor_busy(api: Client) -> None:
    await add_fault(api, "/api/appointments", {"type": "doctor_busy", "suggested_times": ["10:30"]}, method="POST")
    for _ in range(2):
        ans = await api.call("POST", LIST, NEW)
        assert ans.status == 409
        assert ans.body["error"]["code"] == "APPOINTMENT_CONFLICT"
        assert ans.body["error"]["message"] == "Doctor is not available at the requested time"
        assert ans.body["error"]["details"]["suggested_times"] == ["10:30"]
        assert ans.body["error"]["details"]["conflicting_appointment_id"].startswith("apt_")
    assert (await api.call("POST", LIST, NEW)).status == 201
    await assert_fault_gone(api, "doctor_busy", 2)


async def test_fault_list_missing_fields(api: Client) -> None:
    await add_fault(api, "/api/appointments", {"type": "list_missing_fields"}, method="GET")
    for _ in range(2):
        ans = await api.call("GET", LIST)
        assert ans.status == 200
        for item in ans.body["data"]:
            assert list(item) == list(LIST_FIELDS)
            assert "cancellation_reason" not in item and "updated_at" not in item
    ans = await api.call("GET", LIST)
    assert all(list(item) == list(RECORD_FIELDS) for item in ans.body["data"])
    await assert_fault_gone(api, "list_missing_fields", 2)


async def test_unknown_fault_type_refused(api: Client) -> None:
    async with api.session.post(api.url + "/_sandbox/faults", json={"action": {"type": "explode"}}) as resp:
        assert resp.status == 400


# -- seeding from the shared dataset -------------------------------------------------------------------


async def test_seed_body_from_dataset() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    dataset = generate(50, now=now)
    body, rows = seed_body(dataset)
    again_body, again_rows = seed_body(generate(50, now=now))
    assert (body, rows) == (again_body, again_rows)  # deterministic ids
    kinds = {kind for kind, _, _ in rows}
    assert kinds == {"patient", "practitioner", "location", "service", "appointment"}
    assert sum(1 for kind, _, _ in rows if kind == "appointment") == 50
    assert len({ext for kind, _, ext in rows if kind == "appointment"}) == 50
    for kind, prefix in (("patient", "pat_"), ("practitioner", "doc_"), ("appointment", "apt_")):
        assert all(ext.startswith(prefix) for k, _, ext in rows if k == kind)
    client, close = await _client()
    try:
        client.running.sandbox.clock.set(now)
        await client.control("POST", "/_sandbox/records", body)
        seen: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            ans = await client.call("GET", LIST, params={"sort_by": "created_at", "page": str(page), "limit": "20"})
            assert ans.status == 200
            seen.update({r["id"]: r for r in ans.body["data"]})
            if page >= ans.body["pagination"]["total_pages"]:
                break
            page += 1
        assert len(seen) == 50
        appt_ids = {key: ext for kind, key, ext in rows if kind == "appointment"}
        services = {s.key: s for s in dataset.services}
        for appt in dataset.appointments[:10]:
            got = await client.call("GET", f"/api/appointments/{appt_ids[appt.key]}")
            assert got.status == 200
            rec = got.body
            bogota = appt.start - timedelta(hours=5)  # America/Bogota is UTC-5 all year
            assert (rec["date"], rec["time"]) == (bogota.strftime("%Y-%m-%d"), bogota.strftime("%H:%M"))
            assert rec["duration_minutes"] == services[appt.service].minutes
            assert rec["status"] == {"booked": "confirmed", "pending": "scheduled"}[appt.status]
            assert rec["specialty"] == services[appt.service].name
            assert rec["patient_name"] and rec["doctor_name"]
    finally:
        await close()
