"""The Onlive sandbox against docs/vendors/onlive.md (§1-§10) and the seed "Update Appointment" page.

Every request is hand-signed (tests/sandboxes/_onlive_client.py); no connector code is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from connectors.onlive.sandbox import seed_body
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.sandboxkit.seedgen import generate
from tests.sandboxes._onlive_client import (
    EMPTY_SHA256,
    KEY_ID,
    SECRET,
    Onlive,
    canonical,
    onlive_date,
    signature,
)

NOW = datetime(2026, 11, 22, 10, 15, 2, tzinfo=UTC)
API = "/api/v2/appointments"
C1 = "c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d"
C2 = "c0a80122-7d2e-4f4b-9c1a-5e6f7a8b9c0d"
S1 = "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
S2 = "5b1e2c3d-4e5f-4a6b-8c7d-000000000002"  # 30 min, calendar C1 only
R1 = "1610c525-f19a-40d0-8cd1-03daba3d2d98"
R2 = "20000000-0000-4000-8000-000000000002"
RPAST = "30000000-0000-4000-8000-000000000003"
RCANC = "40000000-0000-4000-8000-000000000004"
RDONE = "50000000-0000-4000-8000-000000000005"
RNOSHOW = "60000000-0000-4000-8000-000000000006"
RDEL = "70000000-0000-4000-8000-000000000007"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
IDS = {"R1": R1, "R2": R2, "RPAST": RPAST, "RCANC": RCANC, "RDONE": RDONE, "RNOSHOW": RNOSHOW, "RDEL": RDEL,
       "UNKNOWN": UNKNOWN}


def _rec(rid: str, start: str, end: str, cal: str, status: str, emails: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": rid, "title": "Video consultation", "description": "Follow-up", "lang": "es-ES",
        "startAt": start, "endAt": end, "calendarIds": [cal], "serviceId": S1, "status": status,
        "guests": [{"email": e, "extraFields": {"firstName": "Test"}} for e in emails],
        "reminders": [{"time": 15, "unit": "m", "direction": "before"}],
        "extraFields": {"location": "Clinic Madrid"}, "event": {"room": "Room 1"},
        "externalId": f"apt_{rid[:8]}", "createdAt": "2026-11-20T08:00:00.000Z",
        "updatedAt": "2026-11-21T08:00:00.000Z",
        **extra,
    }


BASE_SEED: dict[str, Any] = {
    "services": [{"id": S2, "name": "Calendar one only", "duration": 30, "calendarIds": [C1]}],
    "records": [
        _rec(R1, "2026-12-01T09:00:00.000Z", "2026-12-01T09:30:00.000Z", C1, "confirmed",
             ["ana.lopez@example.com", "carl@example.com"]),
        _rec(R2, "2026-12-01T10:00:00.000Z", "2026-12-01T10:30:00.000Z", C1, "pending", ["bob@example.com"]),
        _rec(RPAST, "2026-11-20T09:00:00.000Z", "2026-11-20T09:30:00.000Z", C2, "confirmed", ["p@example.com"]),
        _rec(RCANC, "2026-12-02T09:00:00.000Z", "2026-12-02T09:30:00.000Z", C2, "cancelled", ["c@example.com"]),
        _rec(RDONE, "2026-12-02T10:00:00.000Z", "2026-12-02T10:30:00.000Z", C2, "completed", ["d@example.com"]),
        _rec(RNOSHOW, "2026-12-02T11:00:00.000Z", "2026-12-02T11:30:00.000Z", C2, "no-show", ["n@example.com"]),
        _rec(RDEL, "2026-12-03T09:00:00.000Z", "2026-12-03T09:30:00.000Z", C1, "confirmed", ["x@example.com"],
             _deleted_at="2026-11-21T09:00:00.000Z"),
    ],
}


@pytest.fixture
async def env() -> AsyncIterator[tuple[Onlive, RunningSandbox]]:
    running = await start_sandbox("onlive", port=0)
    try:
        async with aiohttp.ClientSession() as http:
            api = Onlive(http, running)
            await api.set_clock(NOW)
            await api.control("POST", "/_sandbox/records", BASE_SEED)
            yield api, running
    finally:
        await running.stop()


@pytest.fixture
async def api(env: tuple[Onlive, RunningSandbox]) -> Onlive:
    return env[0]


def create_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Video consultation", "startAt": "2026-12-05T09:00:00.000Z", "endAt": "2026-12-05T09:30:00.000Z",
        "calendarIds": [C1], "serviceId": S1, "guests": [{"email": "new.patient@example.com"}],
        "origin": "syncd", "externalId": "apt_NEW",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP: Any = object()


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: Any = None
    status: int = 200
    code: str | None = None
    field: str | None = None
    check: Callable[[Any], bool] | None = None
    pre: list[tuple[str, str, Any]] = dc_field(default_factory=list)
    content_type: str | None = "application/json"
    headers: dict[str, str] | None = None


def p(path: str) -> str:
    return path.format(**IDS)


CASES = [
    # --- seed document: update semantics ----------------------------------------------------------
    Case("seed:put-returns-full-record", "PUT", "/{R1}",
         {"startAt": "2026-12-01T11:00:00.000Z", "endAt": "2026-12-01T11:30:00.000Z"},
         check=lambda b: b["startAt"] == "2026-12-01T11:00:00.000Z" and b["id"] == R1 and "createdAt" in b),
    Case("seed:partial-update-keeps-fields", "PUT", "/{R1}", {"comment": "Follow-up needed"},
         check=lambda b: b["comment"] == "Follow-up needed" and b["description"] == "Follow-up"
         and b["title"] == "Video consultation" and len(b["guests"]) == 2),
    Case("seed:arrays-replaced-guests", "PUT", "/{R1}", {"guests": [{"email": "new@example.com"}]},
         check=lambda b: b["guests"] == [{"email": "new@example.com"}]),
    Case("seed:arrays-replaced-reminders", "PUT", "/{R1}",
         {"reminders": [{"time": 1, "unit": "h", "direction": "before"}]},
         check=lambda b: b["reminders"] == [{"time": 1, "unit": "h", "direction": "before"}]),
    Case("p10.6-extraFields-replaced", "PUT", "/{R1}", {"extraFields": {"priority": "high"}},
         check=lambda b: b["extraFields"] == {"priority": "high"}),
    Case("p10.6-event-replaced", "PUT", "/{R1}", {"event": {"iCallUrl": "https://meet.example.com/x"}},
         check=lambda b: b["event"] == {"iCallUrl": "https://meet.example.com/x"}),
    Case("seed:null-clears-description", "PUT", "/{R1}", {"description": None},
         check=lambda b: b["description"] is None),
    Case("seed:null-clears-reminders", "PUT", "/{R1}", {"reminders": None}, check=lambda b: b["reminders"] is None),
    Case("seed:all-16-fields-updatable", "PUT", "/{R1}", {
        "title": "T", "description": "D", "startAt": "2026-12-01T09:00:00.000Z", "endAt": "2026-12-01T09:30:00.000Z",
        "guests": [{"email": "ana.lopez@example.com"}], "reminders": [], "extraFields": {}, "lang": "en-US",
        "event": {}, "status": "pending", "subStatus": "pending", "origin": "web", "originUrl": "https://e.com",
        "comment": "c", "interactionId": "123e4567", "externalId": "EXT-123"},
        check=lambda b: b["title"] == "T" and b["externalId"] == "EXT-123" and b["status"] == "pending"),
    Case("p10.7-null-title", "PUT", "/{R1}", {"title": None}, 400, "VALIDATION_ERROR", "title"),
    Case("p10.7-null-startAt", "PUT", "/{R1}", {"startAt": None}, 400, "VALIDATION_ERROR", "startAt"),
    Case("p10.7-null-endAt", "PUT", "/{R1}", {"endAt": None}, 400, "VALIDATION_ERROR", "endAt"),
    Case("p10.7-null-status", "PUT", "/{R1}", {"status": None}, 400, "VALIDATION_ERROR", "status"),
    Case("p10.7-null-guests", "PUT", "/{R1}", {"guests": None}, 400, "VALIDATION_ERROR", "guests"),
    Case("p10.8-calendarIds-not-updatable", "PUT", "/{R1}", {"calendarIds": [C2]}, 400, "VALIDATION_ERROR",
         "calendarIds", check=lambda b: b["errors"][0]["message"] == "property calendarIds should not exist"),
    Case("p10.8-serviceId-not-updatable", "PUT", "/{R1}", {"serviceId": S2}, 400, "VALIDATION_ERROR", "serviceId"),
    Case("p10.8-id-not-updatable", "PUT", "/{R1}", {"id": R2}, 400, "VALIDATION_ERROR", "id"),
    Case("p10.8-createdAt-not-updatable", "PUT", "/{R1}", {"createdAt": "2026-01-01T00:00:00Z"}, 400,
         "VALIDATION_ERROR", "createdAt"),
    Case("p10.8-unknown-property", "PUT", "/{R1}", {"priority": "high"}, 400, "VALIDATION_ERROR", "priority"),
    Case("p4-empty-body", "PUT", "/{R1}", {}, 400, "VALIDATION_ERROR"),
    Case("p4-guests-empty", "PUT", "/{R1}", {"guests": []}, 400, "VALIDATION_ERROR", "guests"),
    Case("p4-wrong-type", "PUT", "/{R1}", {"title": 5}, 400, "VALIDATION_ERROR", "title"),
    Case("seed:end-after-start", "PUT", "/{R1}", {"endAt": "2026-12-01T08:00:00.000Z"}, 400, "VALIDATION_ERROR",
         "endAt", check=lambda b: b["errors"][0]["message"] == "endAt must be after startAt"),
    Case("seed:end-equal-start", "PUT", "/{R1}", {"endAt": "2026-12-01T09:00:00.000Z"}, 400, "VALIDATION_ERROR",
         "endAt"),
    Case("seed:iso8601-offset-required", "PUT", "/{R1}", {"startAt": "2026-12-01T09:00:00"}, 400,
         "VALIDATION_ERROR", "startAt",
         check=lambda b: b["errors"][0]["message"] == "must be a valid ISO 8601 date-time with offset"),
    Case("seed:iso8601-garbage", "PUT", "/{R1}", {"endAt": "tomorrow"}, 400, "VALIDATION_ERROR", "endAt"),
    Case("seed:iso8601-offset-accepted-returns-utc", "PUT", "/{R1}",
         {"startAt": "2026-12-01T12:00:00+01:00", "endAt": "2026-12-01T12:30:00+01:00"},
         check=lambda b: b["startAt"] == "2026-12-01T11:00:00.000Z" and b["endAt"] == "2026-12-01T11:30:00.000Z"),
    Case("seed:valid-guest-email", "PUT", "/{R1}", {"guests": [{"email": "not-an-email"}]}, 400,
         "VALIDATION_ERROR", "guests"),
    Case("seed:duplicate-guest-email-ignoring-case", "PUT", "/{R1}",
         {"guests": [{"email": "a@example.com"}, {"email": "A@Example.com"}]}, 400, "VALIDATION_ERROR", "guests",
         check=lambda b: "duplicate guest email" in b["errors"][0]["message"]),
    Case("p4-all-shape-errors-reported", "PUT", "/{R1}", {"title": None, "calendarIds": [C2]}, 400,
         "VALIDATION_ERROR", check=lambda b: {e["field"] for e in b["errors"]} == {"title", "calendarIds"}),
    # --- past, services, calendar availability ------------------------------------------------------
    Case("seed:past-appointment-put", "PUT", "/{RPAST}", {"comment": "x"}, 422, "APPOINTMENT_IN_PAST"),
    Case("seed:past-appointment-cancel", "POST", "/{RPAST}/cancel", {"status": "cancelled"}, 422,
         "APPOINTMENT_IN_PAST"),
    Case("p10.10-move-start-into-past", "PUT", "/{R1}",
         {"startAt": "2026-11-22T10:00:00.000Z", "endAt": "2026-11-22T10:30:00.000Z"}, 422, "APPOINTMENT_IN_PAST"),
    Case("seed:service-duration", "PUT", "/{R1}", {"endAt": "2026-12-01T09:45:00.000Z"}, 422,
         "SERVICE_DURATION_MISMATCH",
         check=lambda b: b["message"] == "Duration must be 30 minutes for this service"),
    Case("seed:calendar-availability", "PUT", "/{R1}",
         {"startAt": "2026-12-01T10:15:00.000Z", "endAt": "2026-12-01T10:45:00.000Z"}, 409, "SLOT_UNAVAILABLE",
         check=lambda b: b["message"] == "Calendar slot not available"),
    Case("p10.11-adjacent-slot-ok", "PUT", "/{R1}",
         {"startAt": "2026-12-01T10:30:00.000Z", "endAt": "2026-12-01T11:00:00.000Z"}),
    Case("p10.11-moved-frees-slot", "PUT", "/{R1}",
         {"startAt": "2026-12-01T10:00:00.000Z", "endAt": "2026-12-01T10:30:00.000Z"},
         pre=[("PUT", "/{R2}", {"startAt": "2026-12-01T14:00:00.000Z", "endAt": "2026-12-01T14:30:00.000Z"})]),
    Case("p10.11-cancelled-frees-slot", "PUT", "/{R1}",
         {"startAt": "2026-12-01T10:00:00.000Z", "endAt": "2026-12-01T10:30:00.000Z"},
         pre=[("POST", "/{R2}/cancel", {"status": "cancelled"})]),
    Case("p10.11-deleted-frees-slot", "PUT", "/{R1}",
         {"startAt": "2026-12-01T10:00:00.000Z", "endAt": "2026-12-01T10:30:00.000Z"},
         pre=[("DELETE", "/{R2}", None)]),
    Case("p10.11-create-slot-taken", "POST", "",
         create_body(startAt="2026-12-01T09:15:00.000Z", endAt="2026-12-01T09:45:00.000Z"), 409, "SLOT_UNAVAILABLE"),
    Case("p10.11-other-calendar-free", "POST", "",
         create_body(startAt="2026-12-01T09:00:00.000Z", endAt="2026-12-01T09:30:00.000Z", calendarIds=[C2]), 201),
    Case("p10.12-create-duration-mismatch", "POST", "", create_body(endAt="2026-12-05T10:00:00.000Z"), 422,
         "SERVICE_DURATION_MISMATCH"),
    Case("p10.12-create-calendar-outside-service", "POST", "", create_body(serviceId=S2, calendarIds=[C2]), 422,
         "SERVICE_RULE_VIOLATION"),
    Case("p10.12-no-service-no-duration-rule", "POST", "",
         create_body(serviceId=_DROP, endAt="2026-12-05T10:10:00.000Z"), 201),
    # --- state machine ------------------------------------------------------------------------------
    Case("p10.13-confirmed-to-pending", "PUT", "/{R1}", {"status": "pending"},
         check=lambda b: b["status"] == "pending"),
    Case("p10.13-pending-to-confirmed", "PUT", "/{R2}", {"status": "confirmed"},
         check=lambda b: b["status"] == "confirmed"),
    Case("p10.13-resend-status-is-noop", "PUT", "/{R1}", {"status": "confirmed"},
         check=lambda b: b["updatedAt"] == "2026-11-21T08:00:00.000Z"),
    Case("p10.13-put-cancelled-use-cancel-endpoint", "PUT", "/{R1}", {"status": "cancelled"}, 422,
         "USE_CANCEL_ENDPOINT"),
    Case("p10.13-put-completed-onlive-only", "PUT", "/{R1}", {"status": "completed"}, 422,
         "INVALID_STATUS_TRANSITION",
         check=lambda b: b["message"] == "Cannot change status from confirmed to completed"),
    Case("p10.13-put-no-show-onlive-only", "PUT", "/{R2}", {"status": "no-show"}, 422, "INVALID_STATUS_TRANSITION"),
    Case("p5-unknown-status", "PUT", "/{R1}", {"status": "booked"}, 400, "VALIDATION_ERROR", "status"),
    Case("p10.13-closed-cancelled", "PUT", "/{RCANC}", {"comment": "x"}, 422, "APPOINTMENT_CLOSED",
         check=lambda b: b["message"] == "Appointment is cancelled and cannot be modified"),
    Case("p10.13-closed-completed", "PUT", "/{RDONE}", {"status": "pending"}, 422, "APPOINTMENT_CLOSED"),
    Case("p10.13-closed-no-show", "PUT", "/{RNOSHOW}", {"comment": "x"}, 422, "APPOINTMENT_CLOSED"),
    Case("p4-shape-before-closed", "PUT", "/{RCANC}", {"calendarIds": [C1]}, 400, "VALIDATION_ERROR"),
    # --- cancel -------------------------------------------------------------------------------------
    Case("p10.14-cancel", "POST", "/{R1}/cancel",
         {"status": "cancelled", "subStatus": "external-request", "strategy": "guest-appointment",
          "reason": "Patient called to cancel"},
         check=lambda b: b["status"] == "cancelled" and b["subStatus"] == "external-request"
         and b["cancellationReason"] == "Patient called to cancel"
         and all(g["status"] == "cancelled" for g in b["guests"])),
    Case("p10.14-already-cancelled", "POST", "/{RCANC}/cancel", {"status": "cancelled"}, 422, "ALREADY_CANCELLED"),
    Case("p10.14-repeat-cancel-already-cancelled", "POST", "/{R1}/cancel", {"status": "cancelled"}, 422,
         "ALREADY_CANCELLED", pre=[("POST", "/{R1}/cancel", {"status": "cancelled"})]),
    Case("p10.14-cancel-completed-closed", "POST", "/{RDONE}/cancel", {"status": "cancelled"}, 422,
         "APPOINTMENT_CLOSED"),
    Case("p10.14-cancel-no-show-closed", "POST", "/{RNOSHOW}/cancel", {}, 422, "APPOINTMENT_CLOSED"),
    Case("p10.14-bad-strategy", "POST", "/{R1}/cancel", {"strategy": "all"}, 400, "VALIDATION_ERROR", "strategy"),
    Case("p10.14-guest-only-needs-guests", "POST", "/{R1}/cancel", {"strategy": "guest-only"}, 400,
         "VALIDATION_ERROR", "guests"),
    Case("p10.14-unknown-guest", "POST", "/{R1}/cancel", {"guests": ["zed@example.com"]}, 400, "VALIDATION_ERROR",
         "guests"),
    Case("p10.14-guest-only-keeps-appointment", "POST", "/{R1}/cancel",
         {"strategy": "guest-only", "guests": ["ana.lopez@example.com", "carl@example.com"]},
         check=lambda b: b["status"] == "confirmed" and all(g["status"] == "cancelled" for g in b["guests"])),
    Case("p10.14-guest-appointment-partial", "POST", "/{R1}/cancel", {"guests": ["ana.lopez@example.com"]},
         check=lambda b: b["status"] == "confirmed" and b["guests"][0]["status"] == "cancelled"
         and "status" not in b["guests"][1]),
    Case("p10.14-last-guest-cancels-appointment", "POST", "/{R1}/cancel", {"guests": ["carl@example.com"]},
         check=lambda b: b["status"] == "cancelled",
         pre=[("POST", "/{R1}/cancel", {"guests": ["ana.lopez@example.com"]})]),
    Case("p10.14-reason-max-500", "POST", "/{R1}/cancel", {"reason": "x" * 501}, 400, "VALIDATION_ERROR", "reason"),
    Case("p10.14-substatus-pattern", "POST", "/{R1}/cancel", {"subStatus": "Not Valid"}, 400, "VALIDATION_ERROR",
         "subStatus"),
    Case("p10.14-status-only-cancelled", "POST", "/{R1}/cancel", {"status": "pending"}, 400, "VALIDATION_ERROR",
         "status"),
    Case("p10.14-unknown-property", "POST", "/{R1}/cancel", {"notify": False}, 400, "VALIDATION_ERROR", "notify"),
    # --- deletion -----------------------------------------------------------------------------------
    Case("p10.16-delete-soft", "DELETE", "/{R1}",
         check=lambda b: b["deletedAt"] is not None and b["deletedAt"] == b["updatedAt"]),
    Case("p10.16-get-deleted-200", "GET", "/{RDEL}", check=lambda b: b["deletedAt"] == "2026-11-21T09:00:00.000Z"),
    Case("p10.16-put-deleted-404", "PUT", "/{RDEL}", {"comment": "x"}, 404, "NOT_FOUND"),
    Case("p10.16-cancel-deleted-404", "POST", "/{RDEL}/cancel", {"status": "cancelled"}, 404, "NOT_FOUND"),
    Case("p10.16-delete-deleted-404", "DELETE", "/{RDEL}", None, 404, "NOT_FOUND"),
    # --- media type, ids ----------------------------------------------------------------------------
    Case("p10.3-put-needs-json", "PUT", "/{R1}", {"comment": "x"}, 415, "UNSUPPORTED_MEDIA_TYPE",
         content_type="text/plain"),
    Case("p10.3-create-needs-json", "POST", "", create_body(), 415, "UNSUPPORTED_MEDIA_TYPE", content_type=None),
    Case("p10.3-cancel-needs-json", "POST", "/{R1}/cancel", {"status": "cancelled"}, 415, "UNSUPPORTED_MEDIA_TYPE",
         content_type="application/x-www-form-urlencoded"),
    Case("p6-invalid-id", "GET", "/not-a-uuid", None, 400, "INVALID_ID", "appointmentId",
         check=lambda b: b["message"] == "Invalid appointment ID format"),
    Case("p6-invalid-id-put", "PUT", "/12345", {"comment": "x"}, 400, "INVALID_ID"),
    Case("p6-unknown-id", "GET", "/{UNKNOWN}", None, 404, "NOT_FOUND",
         check=lambda b: b == {"statusCode": 404, "message": "Appointment not found", "code": "NOT_FOUND"}),
    Case("p3-get-bare-record", "GET", "/{R1}",
         check=lambda b: b["id"] == R1 and "data" not in b and b["organizationId"] and "cancellationReason" in b),
    # --- create -------------------------------------------------------------------------------------
    Case("p4-create-201", "POST", "", create_body(), 201,
         check=lambda b: b["status"] == "pending" and b["externalId"] == "apt_NEW" and b["deletedAt"] is None
         and b["createdAt"] == b["updatedAt"] and b["calendarIds"] == [C1]),
    Case("p4-create-confirmed", "POST", "", create_body(status="confirmed"), 201,
         check=lambda b: b["status"] == "confirmed"),
    Case("p4-create-missing-title", "POST", "", create_body(title=_DROP), 400, "VALIDATION_ERROR", "title"),
    Case("p4-create-missing-calendarIds", "POST", "", create_body(calendarIds=_DROP), 400, "VALIDATION_ERROR",
         "calendarIds"),
    Case("p4-create-missing-guests", "POST", "", create_body(guests=_DROP), 400, "VALIDATION_ERROR", "guests"),
    Case("p4-create-unknown-calendar", "POST", "", create_body(calendarIds=[UNKNOWN]), 400, "VALIDATION_ERROR",
         "calendarIds"),
    Case("p4-create-in-past", "POST", "",
         create_body(startAt="2026-11-22T10:15:00.000Z", endAt="2026-11-22T10:45:00.000Z"), 422,
         "APPOINTMENT_IN_PAST"),
    Case("p4-create-status-cancelled", "POST", "", create_body(status="cancelled"), 400, "VALIDATION_ERROR", "status"),
    Case("p4-create-unknown-property", "POST", "", create_body(id=UNKNOWN), 400, "VALIDATION_ERROR", "id"),
    Case("p4-create-end-after-start", "POST", "", create_body(endAt="2026-12-05T08:00:00.000Z"), 400,
         "VALIDATION_ERROR", "endAt"),
    # --- lists --------------------------------------------------------------------------------------
    Case("p10.4-unknown-param", "GET", "?foo=1", None, 400, "VALIDATION_ERROR", "foo"),
    Case("p10.4-limit-over-100", "GET", "?limit=101", None, 400, "VALIDATION_ERROR", "limit",
         check=lambda b: b["errors"][0]["message"] == "must not be greater than 100"),
    Case("p10.4-limit-100-ok", "GET", "?limit=100", check=lambda b: b["meta"]["limit"] == 100),
    Case("p10.4-limit-zero", "GET", "?limit=0", None, 400, "VALIDATION_ERROR", "limit"),
    Case("p10.4-page-zero", "GET", "?page=0", None, 400, "VALIDATION_ERROR", "page"),
    Case("p10.4-bad-sort", "GET", "?sort=title", None, 400, "VALIDATION_ERROR", "sort"),
    Case("p10.4-bad-updatedSince", "GET", "?updatedSince=yesterday", None, 400, "VALIDATION_ERROR", "updatedSince"),
    Case("p10.4-envelope-default-limit-20", "GET", "",
         check=lambda b: b["meta"] == {"page": 1, "limit": 20, "total": 6, "totalPages": 1} and len(b["data"]) == 6),
    Case("p10.4-deleted-only-with-includeDeleted", "GET", "?includeDeleted=true",
         check=lambda b: b["meta"]["total"] == 7 and RDEL in {r["id"] for r in b["data"]}),
    Case("p10.4-default-sort-startAt", "GET", "",
         check=lambda b: [r["startAt"] for r in b["data"]] == sorted(r["startAt"] for r in b["data"])),
    Case("p10.4-page-past-end", "GET", "?page=5", check=lambda b: b["data"] == [] and b["meta"]["page"] == 5),
    Case("p10.17-externalId-exact", "GET", "?externalId=apt_1610c525",
         check=lambda b: [r["id"] for r in b["data"]] == [R1]),
    Case("p10.17-externalId-case-sensitive", "GET", "?externalId=APT_1610C525", check=lambda b: b["data"] == []),
    Case("p10.4-updatedSince-inclusive", "GET", "?updatedSince=2026-11-21T08:00:00.000Z",
         check=lambda b: b["meta"]["total"] == 6),
    Case("p10.4-updatedSince-filters", "GET", "?updatedSince=2026-11-21T08:00:00.001Z",
         check=lambda b: b["meta"]["total"] == 0),
    Case("p2-from-to-window", "GET", "?from=2026-12-01T00:00:00Z&to=2026-12-01T10:00:00Z",
         check=lambda b: [r["id"] for r in b["data"]] == [R1]),
    Case("p2-search", "GET", "?search=BOB@", check=lambda b: [r["id"] for r in b["data"]] == [R2]),
    Case("p10.17-if-match-ignored", "PUT", "/{R1}", {"comment": "y"}, headers={"If-Match": '"stale"'},
         check=lambda b: b["comment"] == "y"),
]


def _split(path: str) -> tuple[str, list[tuple[str, str]]]:
    base, _, query = path.partition("?")
    pairs = [tuple(kv.split("=", 1)) for kv in query.split("&")] if query else []
    return API + p(base), [(k, v) for k, v in pairs]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rules(api: Onlive, case: Case) -> None:
    for method, path, body in case.pre:
        url, query = _split(path)
        pre = await api.call(method, url, query=query, body=body if body is not None else _unset())
        assert pre.status in (200, 201), (case.id, pre.body)
    url, query = _split(case.path)
    reply = await api.call(case.method, url, query=query, body=case.body if case.body is not None else _unset(),
                           content_type=case.content_type, extra_headers=case.headers)
    assert reply.status == case.status, reply.body
    if case.code is not None:
        assert reply.code == case.code, reply.body
        assert reply.body["statusCode"] == case.status
        assert isinstance(reply.body["message"], str)
        if case.status == 400:
            assert reply.body["errors"], reply.body
        else:
            assert "errors" not in reply.body
    if case.field is not None:
        assert case.field in reply.fields(), reply.body
    if case.check is not None:
        assert case.check(reply.body), reply.body


def _unset() -> Any:
    from tests.sandboxes._onlive_client import _UNSET

    return _UNSET


# --- signing and auth ---------------------------------------------------------------------------------------
async def test_worked_examples_a_and_b(api: Onlive) -> None:
    query = "updatedSince=2026-11-22T10%3A14%3A01.412Z&includeDeleted=true&sort=updatedAt&order=desc&page=1&limit=100"
    assert canonical([("updatedSince", "2026-11-22T10:14:01.412Z"), ("includeDeleted", "true"), ("sort", "updatedAt"),
                      ("order", "desc"), ("page", "1"), ("limit", "100")]) == (
        "includeDeleted=true&limit=100&order=desc&page=1&sort=updatedAt&updatedSince=2026-11-22T10%3A14%3A01.412Z")
    sig_a = signature(SECRET, "GET", API, canonical([("updatedSince", "2026-11-22T10:14:01.412Z"),
                      ("includeDeleted", "true"), ("sort", "updatedAt"), ("order", "desc"), ("page", "1"),
                      ("limit", "100")]), "20261122T101502Z", b"")
    assert sig_a == "e6152be89104ab0fdd1a457c89b07a762128aae448eadcbf13665101fbfeb027"
    # A exactly as printed (raw ':' in the query as sent)
    raw_a = query.replace("%3A", ":")
    headers = {"x-onlive-site-date": "20261122T101502Z", "Accept": "application/json",
               "Authorization": f"ONLIVESITE Credential={KEY_ID}, Signature={sig_a}"}
    async with api.http.get(yarl.URL(f"{api.base}{API}?{raw_a}", encoded=True), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    # B: the 98-byte body
    body = b'{"startAt":"2026-12-01T09:00:00.000Z","endAt":"2026-12-01T09:30:00.000Z","comment":"Moved by EHR"}'
    assert len(body) == 98
    sig_b = signature(SECRET, "PUT", f"{API}/{R1}", "", "20261122T101502Z", body)
    assert sig_b == "1723d75c4efc47974bcb9fc2caf5d6b58bb4c396238a1f8a92c2165c87d76ae0"
    headers = {"x-onlive-site-date": "20261122T101502Z", "Content-Type": "application/json",
               "Authorization": f"ONLIVESITE Credential:{KEY_ID}, Signature={sig_b}"}
    async with api.http.put(f"{api.base}{API}/{R1}", data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["comment"] == "Moved by EHR"
    assert EMPTY_SHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def test_canonical_query_check_value(api: Onlive) -> None:
    assert canonical([("search", "Dr Pérez & co")]) == "search=Dr%20P%C3%A9rez%20%26%20co"
    reply = await api.call("GET", API, query=[("search", "Dr Pérez & co")])
    assert reply.status == 200 and reply.body["data"] == []


def _auth_err(code: str, message: str) -> dict[str, Any]:
    return {"statusCode": 401, "message": message, "code": code}


HDR = _auth_err("AUTH_HEADER_INVALID", "Missing or malformed authentication headers")
DATE = _auth_err("AUTH_DATE_INVALID", "Invalid x-onlive-site-date header")
EXPIRED = _auth_err("REQUEST_EXPIRED", "Request date is more than 15 minutes from server time")
UNKNOWN_KEY = _auth_err("UNKNOWN_ACCESS_KEY", "Unknown access key")
MISMATCH = _auth_err("SIGNATURE_MISMATCH", "Signature does not match")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"omit": ["Authorization"]}, HDR, id="p1-missing-authorization"),
        pytest.param({"omit": ["x-onlive-site-date"]}, HDR, id="p1-missing-date-header"),
        pytest.param({"authorization": "Bearer abc"}, HDR, id="p1-wrong-scheme"),
        pytest.param({"authorization": f"ONLIVESITE Credential={KEY_ID}, Signature=abc"}, HDR, id="p1-short-signature"),
        pytest.param({"date": "2026-11-22T10:15:02Z"}, DATE, id="p1-date-format"),
        pytest.param({"date": "20261322T101502Z"}, DATE, id="p1-date-not-real"),
        pytest.param({"date": "20261122T100001Z"}, EXPIRED, id="p10.2-skew-901s-past"),
        pytest.param({"date": "20261122T103003Z"}, EXPIRED, id="p10.2-skew-901s-future"),
        pytest.param({"key_id": "OLAKUNKNOWN"}, UNKNOWN_KEY, id="p1-unknown-key"),
        pytest.param({"secret": "wrong"}, MISMATCH, id="p1-signature-mismatch"),
        pytest.param({"extra_headers": {"x-onlive-site-date": "20261122T101503Z"}}, MISMATCH, id="p1-date-signed"),
    ],
)
async def test_auth_failures(api: Onlive, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    reply = await api.call("GET", f"{API}/{R1}", **kwargs)
    assert reply.status == 401
    assert reply.body == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"omit": ["x-onlive-site-date"], "key_id": "OLAKUNKNOWN"}, HDR, id="p1-order-header-first"),
        pytest.param({"date": "2026-11-22", "key_id": "OLAKUNKNOWN"}, DATE, id="p1-order-date-before-key"),
        pytest.param({"date": "20261122T100001Z", "key_id": "OLAKUNKNOWN"}, EXPIRED, id="p1-order-skew-before-key"),
        pytest.param({"key_id": "OLAKUNKNOWN", "secret": "wrong"}, UNKNOWN_KEY, id="p1-order-key-before-signature"),
    ],
)
async def test_auth_check_order(api: Onlive, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    reply = await api.call("GET", f"{API}/{R1}", **kwargs)
    assert reply.body == expected


async def test_auth_before_rate_limit_and_415(api: Onlive) -> None:
    await api.control("POST", "/_sandbox/options", {"per_minute": 1})
    assert (await api.call("GET", API)).status == 200
    assert (await api.call("GET", API, secret="wrong")).body == MISMATCH
    assert (await api.call("PUT", f"{API}/{R1}", body={"comment": "x"}, content_type="text/plain",
                           secret="wrong")).body == MISMATCH
    assert (await api.call("GET", API)).status == 429


async def test_reset_restores_options_clock_and_state(api: Onlive) -> None:
    await api.control("POST", "/_sandbox/options", {"per_minute": 5, "access_keys": {}})
    await api.control("POST", "/_sandbox/reset")
    options = await api.control("GET", "/_sandbox/options")
    assert options["per_minute"] == 120 and options["access_keys"] == {KEY_ID: SECRET}
    assert abs((api.now() - datetime.now(UTC)).total_seconds()) < 5
    assert (await api.call("GET", API)).body["data"] == []
    assert {s["id"] for s in (await api.records())["services"]} == {S1}
    async with api.http.post(f"{api.base}/_sandbox/options", json={"bogus": 1}) as resp:
        assert resp.status == 400


@pytest.mark.parametrize("offset", [-900, 900], ids=["p10.2-skew-900s-past-ok", "p10.2-skew-900s-future-ok"])
async def test_skew_900_passes(api: Onlive, offset: int) -> None:
    await api.set_clock(NOW)
    reply = await api.call("GET", f"{API}/{R1}", date=onlive_date(NOW + timedelta(seconds=offset)))
    assert reply.status == 200


async def test_credential_colon_and_equals(api: Onlive) -> None:
    assert (await api.call("GET", f"{API}/{R1}", separator=":")).status == 200
    assert (await api.call("GET", f"{API}/{R1}", separator="=")).status == 200


async def test_signature_covers_path_query_and_body(api: Onlive) -> None:
    sig = signature(SECRET, "PUT", f"{API}/{R1}", "", onlive_date(api.now()), b'{"comment":"a"}')
    auth = f"ONLIVESITE Credential={KEY_ID}, Signature={sig}"
    reply = await api.call("PUT", f"{API}/{R1}", raw=b'{"comment":"b"}', authorization=auth)
    assert reply.body == MISMATCH
    reply = await api.call("PUT", f"{API}/{R2}", raw=b'{"comment":"a"}', authorization=auth)
    assert reply.body == MISMATCH


async def test_expired_by_clock_and_date_header_correction(api: Onlive) -> None:
    stamp = onlive_date(api.now())
    await api.advance(901)
    reply = await api.call("GET", f"{API}/{R1}", date=stamp)
    assert reply.body == EXPIRED
    server = datetime.strptime(reply.headers["Date"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert abs((server - api.now()).total_seconds()) < 5
    corrected = await api.call("GET", f"{API}/{R1}", date=onlive_date(server))
    assert corrected.status == 200


async def test_revoked_key(api: Onlive) -> None:
    assert (await api.call("GET", f"{API}/{R1}")).status == 200
    await api.control("POST", "/_sandbox/options", {"access_keys": {"OTHER": "x"}})
    assert (await api.call("GET", f"{API}/{R1}")).body == UNKNOWN_KEY


async def test_forbidden_for_scoped_key(api: Onlive) -> None:
    await api.control("POST", "/_sandbox/options", {"access_keys": {KEY_ID: SECRET, "SCOPED": {"secret": "s",
                                                    "calendarIds": [C2]}}})
    reply = await api.call("GET", f"{API}/{R1}", key_id="SCOPED", secret="s")
    assert reply.status == 403
    assert reply.body == {"statusCode": 403, "message": "Insufficient permissions to access the appointment",
                          "code": "FORBIDDEN"}
    listed = await api.call("GET", API, key_id="SCOPED", secret="s")
    assert {r["calendarIds"][0] for r in listed.body["data"]} == {C2}


# --- rate limits --------------------------------------------------------------------------------------------
async def test_rate_limit_headers_and_429(api: Onlive) -> None:
    await api.control("POST", "/_sandbox/options", {"per_minute": 3})
    first = await api.call("GET", f"{API}/{R1}")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert 1 <= int(first.headers["X-RateLimit-Reset"]) <= 60
    assert (await api.call("GET", f"{API}/{R1}", secret="bad")).status == 401  # 401s do not count
    await api.call("GET", f"{API}/{R1}")
    assert (await api.call("GET", f"{API}/{UNKNOWN}")).status == 404  # counts
    limited = await api.call("GET", f"{API}/{R1}")
    assert limited.status == 429
    assert limited.body == {"statusCode": 429, "message": "ThrottlerException: Too Many Requests",
                            "code": "RATE_LIMITED"}
    assert int(limited.headers["Retry-After"]) >= 1
    await api.advance(61)
    again = await api.call("GET", f"{API}/{R1}")
    assert again.status == 200 and again.headers["X-RateLimit-Remaining"] == "2"


async def test_rate_limit_default_120_and_off_switch() -> None:
    running = await start_sandbox("onlive", port=0, rate_limits=False, per_minute=1)
    try:
        async with aiohttp.ClientSession() as http:
            client = Onlive(http, running)
            assert running.sandbox.options["per_minute"] == 1
            for _ in range(5):
                assert (await client.call("GET", API)).status == 200
    finally:
        await running.stop()
    running = await start_sandbox("onlive", port=0)
    try:
        assert running.sandbox.options["per_minute"] == 120
        assert running.sandbox.options["timezone"] == "Europe/Madrid"
        assert running.sandbox.options["access_keys"] == {KEY_ID: SECRET}
    finally:
        await running.stop()


# --- fault injection ----------------------------------------------------------------------------------------
async def test_fault_status_fires_times_then_stops(api: Onlive) -> None:
    await api.fault("GET", f"{API}/*", {"type": "status", "status": 503, "body": {"statusCode": 500,
                    "message": "Internal server error"}}, times=2)
    assert [(await api.call("GET", f"{API}/{R1}")).status for _ in range(3)] == [503, 503, 200]


async def test_fault_delay(api: Onlive) -> None:
    await api.fault("GET", f"{API}/*", {"type": "delay", "seconds": 0.3}, times=1)
    started = time.monotonic()
    assert (await api.call("GET", f"{API}/{R1}")).status == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await api.call("GET", f"{API}/{R1}")
    assert time.monotonic() - started < 0.3


async def test_fault_drop_after_apply(api: Onlive) -> None:
    # a POST create (aiohttp silently re-sends idempotent methods whose connection dropped)
    await api.fault("POST", API, {"type": "drop_after_apply"}, times=2)
    for n in range(2):
        body = create_body(externalId=f"apt_drop{n}", startAt=f"2026-12-0{5 + n}T09:00:00.000Z",
                           endAt=f"2026-12-0{5 + n}T09:30:00.000Z")
        with pytest.raises(aiohttp.ClientError):
            await api.call("POST", API, body=body)
        found = await api.call("GET", API, query=[("externalId", f"apt_drop{n}"), ("includeDeleted", "true")])
        assert len(found.body["data"]) == 1  # applied, then the connection was closed
    third = create_body(startAt="2026-12-09T09:00:00.000Z", endAt="2026-12-09T09:30:00.000Z")
    assert (await api.call("POST", API, body=third)).status == 201


async def test_fault_rate_limit(api: Onlive) -> None:
    await api.fault("*", f"{API}*", {"type": "rate_limit", "retry_after": 3}, times=2)
    for _ in range(2):
        reply = await api.call("GET", API)
        assert reply.status == 429 and reply.headers["Retry-After"] == "3" and reply.code == "RATE_LIMITED"
    assert (await api.call("GET", API)).status == 200


async def test_fault_mutate_before(api: Onlive) -> None:
    before = await api.record(R1)
    await api.fault("PUT", f"{API}/*", {"type": "mutate_before", "changes": {"description": "by receptionist"}}, 1)
    reply = await api.call("PUT", f"{API}/{R1}", body={"comment": "ours"})
    assert reply.body["description"] == "by receptionist" and reply.body["comment"] == "ours"
    assert reply.body["updatedAt"] > before["updatedAt"]
    await api.call("PUT", f"{API}/{R1}", body={"description": "ours again"})
    assert (await api.record(R1))["description"] == "ours again"


async def test_fault_request_expired(api: Onlive) -> None:
    await api.fault("GET", f"{API}/*", {"type": "request_expired"}, times=2)
    for _ in range(2):
        reply = await api.call("GET", f"{API}/{R1}")
        assert reply.body == EXPIRED
        assert "Date" in reply.headers
    assert (await api.call("GET", f"{API}/{R1}")).status == 200


async def test_fault_ignore_updated_since(api: Onlive) -> None:
    query = [("updatedSince", "2030-01-01T00:00:00.000Z")]
    await api.fault("GET", API, {"type": "ignore_updated_since"}, times=1)
    assert (await api.call("GET", API, query=query)).body["meta"]["total"] == 6
    assert (await api.call("GET", API, query=query)).body["meta"]["total"] == 0


async def test_fault_reject_updated_since(api: Onlive) -> None:
    query = [("updatedSince", "2026-11-01T00:00:00.000Z")]
    await api.fault("GET", API, {"type": "reject_updated_since"}, times=2)
    for _ in range(2):
        reply = await api.call("GET", API, query=query)
        assert reply.status == 400 and reply.body["errors"][0]["field"] == "updatedSince"
    assert (await api.call("GET", API, query=query)).status == 200


async def test_fault_ignore_external_id(api: Onlive) -> None:
    query = [("externalId", "apt_1610c525")]
    await api.fault("GET", API, {"type": "ignore_external_id"}, times=1)
    assert len((await api.call("GET", API, query=query)).body["data"]) == 6
    assert len((await api.call("GET", API, query=query)).body["data"]) == 1


async def test_fault_guest_added_array_replace_race(api: Onlive) -> None:
    before = await api.record(R1)
    await api.fault("PUT", f"{API}/*", {"type": "guest_added"}, times=1)
    stale_guests = [{"email": g["email"]} for g in before["guests"]]
    reply = await api.call("PUT", f"{API}/{R1}", body={"guests": stale_guests})
    assert reply.status == 200
    assert "other@example.com" not in {g["email"] for g in reply.body["guests"]}  # silently dropped
    await api.fault("GET", f"{API}/*", {"type": "guest_added"}, times=1)
    seen = await api.call("GET", f"{API}/{R1}")
    assert seen.body["guests"][-1] == {"email": "other@example.com"}
    assert (await api.call("GET", f"{API}/{R1}")).body["guests"] == seen.body["guests"]


@pytest.mark.parametrize("status", ["completed", "no-show"])
async def test_fault_session_end(api: Onlive, status: str) -> None:
    await api.fault("PUT", f"{API}/*", {"type": "session_end", "status": status}, times=1)
    reply = await api.call("PUT", f"{API}/{R1}", body={"comment": "late"})
    assert reply.status == 422 and reply.code == "APPOINTMENT_CLOSED"
    assert (await api.record(R1))["status"] == status
    assert (await api.call("PUT", f"{API}/{R2}", body={"comment": "fine"})).status == 200


async def test_fault_unknown_type_refused(api: Onlive) -> None:
    async with api.http.post(f"{api.base}/_sandbox/faults", json={"match": {}, "action": {"type": "nope"}}) as resp:
        assert resp.status == 400
    async with api.http.post(f"{api.base}/_sandbox/faults",
                             json={"match": {}, "action": {"type": "session_end", "status": "cancelled"}}) as resp:
        assert resp.status == 400


# --- change detection, versions, notifications, deletion feed ---------------------------------------------
async def test_incremental_poll_pages_and_deletion_feed(api: Onlive) -> None:
    bodies = []
    for i in range(45):
        start = datetime(2026, 12, 10, 8, 0, tzinfo=UTC) + timedelta(minutes=30 * i)
        bodies.append(create_body(startAt=start.isoformat(), endAt=(start + timedelta(minutes=30)).isoformat(),
                                  externalId=f"apt_{i}"))
    for body in bodies:
        assert (await api.call("POST", API, body=body)).status == 201
    since = "2026-11-22T10:00:00.000Z"
    seen: list[str] = []
    page = 1
    while True:
        reply = await api.call("GET", API, query=[("updatedSince", since), ("includeDeleted", "true"),
                                                  ("sort", "updatedAt"), ("order", "desc"),
                                                  ("page", str(page)), ("limit", "20")])
        assert reply.body["meta"] == {"page": page, "limit": 20, "total": 45, "totalPages": 3}
        stamps = [r["updatedAt"] for r in reply.body["data"]]
        assert stamps == sorted(stamps, reverse=True)
        seen += [r["id"] for r in reply.body["data"]]
        if len(reply.body["data"]) < 20:
            break
        page += 1
    assert page == 3 and len(set(seen)) == 45
    stamps_by_id = {r["id"]: r["updatedAt"] for r in (await api.records())["records"]}
    cursor = max(stamps_by_id[rid] for rid in seen)
    victim = seen[10]
    deleted = await api.call("DELETE", f"{API}/{victim}")
    assert deleted.body["deletedAt"] == deleted.body["updatedAt"] > cursor
    since = (datetime.fromisoformat(cursor.replace("Z", "+00:00")) - timedelta(seconds=1)).isoformat()
    feed = await api.call("GET", API, query=[("updatedSince", since), ("includeDeleted", "true"),
                                             ("sort", "updatedAt"), ("order", "desc"), ("limit", "100")])
    assert feed.body["data"][0]["id"] == victim and feed.body["data"][0]["deletedAt"] is not None
    plain = await api.call("GET", API, query=[("updatedSince", since), ("limit", "100")])
    assert victim not in {r["id"] for r in plain.body["data"]}


async def test_updated_at_strictly_increasing_and_notifications(api: Onlive) -> None:
    stamps = []
    for i in range(5):
        stamps.append((await api.call("PUT", f"{API}/{R1}", body={"comment": f"c{i}"})).body["updatedAt"])
    assert stamps == sorted(set(stamps))
    await api.set_clock(NOW - timedelta(hours=1))  # the clock goes back: still +1 ms
    back = (await api.call("PUT", f"{API}/{R1}", body={"comment": "back"})).body["updatedAt"]
    prev = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00"))
    assert back == (prev + timedelta(milliseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    await api.set_clock(NOW)
    assert (await api.record(R1))["_notifications"] == 6
    same = await api.call("PUT", f"{API}/{R1}", body={"comment": "back", "status": "confirmed"})
    assert same.body["updatedAt"] == back  # no-op
    assert (await api.record(R1))["_notifications"] == 6
    await api.call("POST", f"{API}/{R1}/cancel", body={"status": "cancelled"})
    assert (await api.record(R1))["_notifications"] == 7


async def test_no_webhooks_sent(env: tuple[Onlive, RunningSandbox]) -> None:
    api, running = env
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await api.control("POST", "/_sandbox/options", {"webhook_url": f"http://127.0.0.1:{port}/hook"})
        assert (await api.call("PUT", f"{API}/{R1}", body={"comment": "x"})).status == 200
        assert (await api.call("POST", API, body=create_body())).status == 201
        await api.call("DELETE", f"{API}/{R2}")
        await running.sandbox.wait_webhooks()
        await asyncio.sleep(0.05)
        assert received == [] and running.sandbox.webhooks_sent == []
    finally:
        await runner.cleanup()


# --- control API and seeding ----------------------------------------------------------------------------------
async def test_records_control_shape(api: Onlive) -> None:
    dump = await api.records()
    assert {c["id"] for c in dump["calendars"]} == {C1, C2}
    assert {s["id"] for s in dump["services"]} == {S1, S2}
    by_id = {r["id"]: r for r in dump["records"]}
    assert by_id[RDEL]["_deleted_at"] == "2026-11-21T09:00:00.000Z" and by_id[R1]["_deleted_at"] is None
    assert by_id[R1]["_notifications"] == 0
    await api.control("POST", "/_sandbox/records", {"records": [{"id": R1, "status": "completed"}], "delete": [R2]})
    dump = {r["id"]: r for r in (await api.records())["records"]}
    assert dump[R1]["status"] == "completed" and dump[R1]["updatedAt"] > by_id[R1]["updatedAt"]
    assert dump[R2]["deletedAt"] is not None and dump[R2]["deletedAt"] == dump[R2]["updatedAt"]
    async with api.http.post(f"{api.base}/_sandbox/records", json={"records": [{"id": R1, "status": "x"}]}) as resp:
        assert resp.status == 400
    await api.control("POST", "/_sandbox/reset")
    assert (await api.records())["records"] == []


async def test_seed_body_generate_50(api: Onlive) -> None:
    await api.control("POST", "/_sandbox/reset")
    dataset = generate(50, now=NOW)
    body, rows = seed_body(dataset)
    again_body, again_rows = seed_body(generate(50, now=NOW))
    assert body == again_body and rows == again_rows
    await api.set_clock(NOW)
    await api.control("POST", "/_sandbox/records", body)
    kinds = {k for k, _, _ in rows}
    assert kinds == {"patient", "practitioner", "location", "service", "appointment"}
    apt_rows = [(key, ext) for kind, key, ext in rows if kind == "appointment"]
    assert len(apt_rows) == 50
    listed = await api.call("GET", API, query=[("limit", "100")])
    assert listed.body["meta"]["total"] == 50
    emails = {ext for kind, _, ext in rows if kind == "patient"}
    for key, ext in apt_rows[:10]:
        reply = await api.call("GET", f"{API}/{ext}")
        assert reply.status == 200 and reply.body["externalId"] == key
        assert reply.body["guests"][0]["email"] in emails
        assert reply.body["status"] in ("pending", "confirmed")
    key, ext = apt_rows[0]
    assert (await api.call("PUT", f"{API}/{ext}", body={"comment": "seeded ok"})).status == 200


async def test_request_counts_by_route_template(api: Onlive) -> None:
    await api.call("GET", f"{API}/{R1}")
    await api.call("PUT", f"{API}/{R1}", body={"comment": "x"})
    await api.call("POST", f"{API}/{R2}/cancel", body={"status": "cancelled"})
    await api.call("GET", API)
    rows = {(r["method"], r["route"]): r["count"] for r in (await api.control("GET", "/_sandbox/requests"))["requests"]}
    assert rows[("GET", "/api/v2/appointments/{id}")] == 1
    assert rows[("PUT", "/api/v2/appointments/{id}")] == 1
    assert rows[("POST", "/api/v2/appointments/{id}/cancel")] == 1
    assert rows[("GET", "/api/v2/appointments")] == 1
