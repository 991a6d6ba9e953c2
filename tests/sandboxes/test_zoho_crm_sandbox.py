"""The Zoho CRM sandbox against VENDORS.md "Zoho CRM" and the seed page, over the wire by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from tests.sandboxes._zoho_crm_helpers import (
    ADMIN,
    CONTACT,
    MOD,
    NOW,
    RUN,
    SERVICE,
    UNKNOWN,
    C,
    O,
    R,
    Receiver,
    S,
    X,
    Zoho,
    base_records,
    iso,
    new_appointment,
)

from connectors.zoho_crm.sandbox import seed_body
from syncd.sandboxkit import start_sandbox
from syncd.sandboxkit.seedgen import generate


@pytest.fixture
async def zoho() -> AsyncIterator[Zoho]:
    running = await start_sandbox("zoho_crm", port=0)
    async with aiohttp.ClientSession() as http:
        z = Zoho(running, http)
        await z.control("POST", "clock", {"now": iso(NOW)})
        await z.control("POST", "records", {"records": base_records()})
        await z.login()
        yield z
    await running.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    yield rec
    await rec.stop()


def later(days: float = 0, hours: float = 0) -> str:
    return iso(NOW + timedelta(days=days, hours=hours))


def put(*records: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(records), "trigger": []}


# (id, options, method, path, body, HTTP status, code or None for success, details.api_name or None)
RULES: list[tuple[str, dict[str, Any], str, str, Any, int, str | None, str | None]] = [
    # --- seed page: Update Appointments ---------------------------------------------------------
    ("seed:E8-id-mandatory", {}, "PUT", MOD, put({"Status": "Cancelled"}), 400, "MANDATORY_NOT_FOUND", "id"),
    ("seed:E8-id-unknown", {}, "PUT", MOD, put({"id": UNKNOWN, "Status": "Cancelled"}), 400, "INVALID_DATA", "id"),
    ("seed:status-values-only", {}, "PUT", MOD, put({"id": S, "Status": "Done"}), 400, "INVALID_DATA", "Status"),
    ("seed:status-case-sensitive", {}, "PUT", MOD, put({"id": S, "Status": "cancelled"}), 400, "INVALID_DATA",
     "Status"),
    ("seed:E8-service-name-not-updatable", {}, "PUT", MOD, put({"id": S, "Service_Name": {"id": SERVICE}}), 400,
     "INVALID_DATA", "Service_Name"),
    ("seed:E1-reschedule-same-start", {}, "PUT", MOD, put({"id": S, "Appointment_Start_Time": later(1)}), 400,
     "DEPENDENT_FIELD_UNCHANGED", "Appointment_Start_Time"),
    ("seed:E1-reschedule-earlier-start", {}, "PUT", MOD,
     put({"id": S, "Appointment_Start_Time": later(0, 20)}), 400, "DEPENDENT_FIELD_UNCHANGED",
     "Appointment_Start_Time"),
    ("seed:E1-reschedule-later-ok", {}, "PUT", MOD,
     put({"id": S, "Appointment_Start_Time": later(1, 2), "Reschedule_Reason": "By Team",
          "Reschedule_Note": "Member is unavailable"}), 200, None, None),
    ("seed:E1-rescheduled-from-must-precede", {}, "PUT", MOD,
     put({"id": S, "Appointment_Start_Time": later(1, 2), "Rescheduled_From": later(1, 3)}), 400,
     "INVALID_DATA", "Rescheduled_From"),
    ("seed:E1-reschedule-reason-values", {}, "PUT", MOD,
     put({"id": S, "Appointment_Start_Time": later(1, 2), "Reschedule_Reason": "By Robot"}), 400,
     "INVALID_DATA", "Reschedule_Reason"),
    ("seed:E1-start-needs-offset", {}, "PUT", MOD,
     put({"id": S, "Appointment_Start_Time": "2026-11-24T10:00:00"}), 400, "INVALID_DATA",
     "Appointment_Start_Time"),
    ("seed:E2-reschedule-note-needs-start", {}, "PUT", MOD, put({"id": S, "Reschedule_Note": "x"}), 400,
     "DEPENDENT_FIELD_MISSING", "Appointment_Start_Time"),
    ("seed:E2-reschedule-reason-needs-start", {}, "PUT", MOD, put({"id": S, "Reschedule_Reason": "By Team"}), 400,
     "DEPENDENT_FIELD_MISSING", "Appointment_Start_Time"),
    ("seed:E2-reason-note-after-reschedule-ok", {}, "PUT", MOD,
     put({"id": R, "Reschedule_Reason": "By Customer", "Reschedule_Note": "patient asked"}), 200, None, None),
    ("seed:E2-rescheduled-from-needs-start-always", {}, "PUT", MOD,
     put({"id": R, "Rescheduled_From": later(1)}), 400, "DEPENDENT_FIELD_MISSING", "Appointment_Start_Time"),
    ("seed:E3-cancel-keys-need-status", {}, "PUT", MOD, put({"id": S, "Cancellation_Note": "x"}), 400,
     "DEPENDENT_FIELD_MISSING", "Status"),
    ("seed:E3-cancel-keys-with-other-status", {}, "PUT", MOD,
     put({"id": O, "Status": "Completed", "Cancellation_Reason": "By Team"}), 400, "DEPENDENT_MISMATCH", "Status"),
    ("seed:E3-cancellation-reason-values", {}, "PUT", MOD,
     put({"id": S, "Status": "Cancelled", "Cancellation_Reason": "By Nobody"}), 400, "INVALID_DATA",
     "Cancellation_Reason"),
    ("seed:E3-cancel-ok", {}, "PUT", MOD,
     put({"id": S, "Status": "Cancelled", "Cancellation_Reason": "By Customer",
          "Cancellation_Note": "Customer Unavailable"}), 200, None, None),
    ("seed:E4-completed-before-end", {}, "PUT", MOD, put({"id": RUN, "Status": "Completed"}), 400,
     "DEPENDENT_MISMATCH", "Status"),
    ("seed:E4-overdue-before-end", {}, "PUT", MOD, put({"id": S, "Status": "Overdue"}), 400, "DEPENDENT_MISMATCH",
     "Status"),
    ("seed:E4-completed-after-end-ok", {}, "PUT", MOD,
     put({"id": O, "Status": "Completed", "Job_Sheet_Name": "Delivered",
          "Job_Sheet_Description__s": "Delivered on time"}), 200, None, None),
    ("seed:E4-overdue-to-scheduled-needs-reschedule", {}, "PUT", MOD, put({"id": O, "Status": "Scheduled"}), 400,
     "DEPENDENT_MISMATCH", "Status"),
    ("seed:E1-overdue-rescheduled-to-future-ok", {}, "PUT", MOD,
     put({"id": O, "Appointment_Start_Time": later(1, 5)}), 200, None, None),
    ("seed:E5-completed-not-allowed-when-auto", {"mark_as_complete": "auto"}, "PUT", MOD,
     put({"id": RUN, "Status": "Completed"}), 403, "NOT_ALLOWED", "Status"),
    ("seed:E6-job-sheet-mandated-name", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": O, "Status": "Completed", "Job_Sheet_Description__s": "done"}), 400, "MANDATORY_NOT_FOUND",
     "Job_Sheet_Name"),
    ("seed:E6-job-sheet-mandated-description", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": O, "Status": "Completed", "Job_Sheet_Name": "done"}), 400, "MANDATORY_NOT_FOUND",
     "Job_Sheet_Description__s"),
    ("seed:E6-job-sheet-mandated-ok", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": O, "Status": "Completed", "Job_Sheet_Name": "a", "Job_Sheet_Description__s": "b"}), 200, None,
     None),
    ("p10.10-job-sheet-needs-completed", {}, "PUT", MOD, put({"id": O, "Job_Sheet_Name": "a"}), 400,
     "DEPENDENT_FIELD_MISSING", "Status"),
    ("seed:E7-cancelled-status-change", {}, "PUT", MOD, put({"id": X, "Status": "Scheduled"}), 403, "NOT_ALLOWED",
     "Status"),
    ("seed:E7-cancelled-reschedule", {}, "PUT", MOD, put({"id": X, "Appointment_Start_Time": later(5)}), 403,
     "NOT_ALLOWED", "Appointment_Start_Time"),
    ("seed:E7-completed-status-change", {}, "PUT", MOD, put({"id": C, "Status": "Cancelled"}), 403, "NOT_ALLOWED",
     "Status"),
    ("seed:E7-completed-reschedule", {}, "PUT", MOD, put({"id": C, "Appointment_Start_Time": later(5)}), 403,
     "NOT_ALLOWED", "Appointment_Start_Time"),
    ("p10.11-terminal-other-field", {}, "PUT", MOD, put({"id": C, "Additional_Information": "x"}), 403,
     "NOT_ALLOWED", "Additional_Information"),
    ("p10.11-resend-same-status-is-noop", {}, "PUT", MOD, put({"id": X, "Status": "Cancelled"}), 200, None, None),
    ("seed:update-max-100", {}, "PUT", MOD, put(*({"id": S, "Additional_Information": str(i)} for i in range(101))),
     400, "LIMIT_EXCEEDED", None),
    ("seed:put-with-record-id-in-path", {}, "PUT", f"{MOD}/{S}", put({"Additional_Information": "x"}), 200, None,
     None),
    ("p4-path-id-and-body-id-differ", {}, "PUT", f"{MOD}/{S}", put({"id": O, "Additional_Information": "x"}), 400,
     "INVALID_DATA", "id"),
    ("seed:invalid-module", {}, "GET", "/crm/v7/Deals?fields=id", None, 400, "INVALID_MODULE", None),
    ("seed:invalid-request-method", {}, "PATCH", MOD, put({"id": S}), 400, "INVALID_REQUEST_METHOD", None),
    ("seed:invalid-request-method-on-id", {}, "POST", f"{MOD}/{S}", put({"id": S}), 400, "INVALID_REQUEST_METHOD",
     None),
    ("seed:invalid-url-pattern", {}, "GET", "/crm/v7/settings/nothing_here", None, 404, "INVALID_URL_PATTERN", None),
    ("p10.2-no-permission-read-only-user", {"read_only_user": True}, "PUT", MOD,
     put({"id": S, "Additional_Information": "x"}), 403, "NO_PERMISSION", None),
    # --- checklist 6: create -------------------------------------------------------------------
    ("p10.6-create-ok", {}, "POST", MOD, put(new_appointment()), 201, None, None),
    *[
        (f"p10.6-create-mandatory-{key}", {}, "POST", MOD, put(new_appointment(**{key: None})), 400,
         "MANDATORY_NOT_FOUND", key)
        for key in ("Service_Name", "Appointment_Name", "Appointment_For", "Owner", "Appointment_Start_Time",
                    "Location")
    ],
    ("p10.6-create-unknown-service", {}, "POST", MOD, put(new_appointment(Service_Name={"id": UNKNOWN})), 400,
     "INVALID_DATA", "Service_Name"),
    ("p10.6-create-appointment-for-module", {}, "POST", MOD,
     put(new_appointment(Appointment_For={"module": "Deals", "id": CONTACT})), 400, "INVALID_DATA",
     "Appointment_For"),
    ("p10.6-create-one-owner-only", {}, "POST", MOD,
     put(new_appointment(Owner=[{"id": ADMIN}, {"id": "5545974000000393002"}])), 400, "INVALID_DATA", "Owner"),
    ("p10.6-create-client-address-needs-address", {}, "POST", MOD,
     put(new_appointment(Location="Client Address")), 400, "MANDATORY_NOT_FOUND", "Address"),
    ("p10.6-create-client-address-ok", {}, "POST", MOD,
     put(new_appointment(Location="Client Address", Address="Calle Mayor 1")), 201, None, None),
    ("p10.6-create-location-values", {}, "POST", MOD, put(new_appointment(Location="Home")), 400, "INVALID_DATA",
     "Location"),
    ("p10.6-create-time-needs-offset", {}, "POST", MOD,
     put(new_appointment(Appointment_Start_Time="2026-12-01T10:00:00")), 400, "INVALID_DATA",
     "Appointment_Start_Time"),
    ("p10.6-create-time-no-z", {}, "POST", MOD, put(new_appointment(Appointment_Start_Time="2026-12-01T10:00:00Z")),
     400, "INVALID_DATA", "Appointment_Start_Time"),
    ("p10.6-create-time-no-fraction", {}, "POST", MOD,
     put(new_appointment(Appointment_Start_Time="2026-12-01T10:00:00.500+00:00")), 400, "INVALID_DATA",
     "Appointment_Start_Time"),
    ("p4-create-status-only-scheduled", {}, "POST", MOD, put(new_appointment(Status="Cancelled")), 400,
     "INVALID_DATA", "Status"),
    ("p4-create-no-cancellation-keys", {}, "POST", MOD, put(new_appointment(Cancellation_Note="x")), 400,
     "INVALID_DATA", "Cancellation_Note"),
    ("p4-create-max-100", {}, "POST", MOD, put(*(new_appointment() for _ in range(101))), 400, "LIMIT_EXCEEDED",
     None),
    # --- checklist 7: per-record results --------------------------------------------------------
    ("p10.7-mixed-batch-202", {}, "PUT", MOD,
     put({"id": S, "Additional_Information": "x"}, {"id": UNKNOWN, "Status": "Cancelled"}), 202, None, None),
    ("p10.7-all-fail-first-error-status", {}, "PUT", MOD,
     put({"id": C, "Status": "Cancelled"}, {"id": UNKNOWN, "Status": "Cancelled"}), 403, "NOT_ALLOWED", "Status"),
    # --- checklist 4 and 5: lists, reads, search -------------------------------------------------
    ("p10.4-fields-mandatory", {}, "GET", MOD, None, 400, "REQUIRED_PARAM_MISSING", None),
    ("p10.4-fields-at-most-50", {}, "GET", MOD + "?fields=" + ",".join(["id"] * 1 + [f"F{i}" for i in range(50)]),
     None, 400, "LIMIT_EXCEEDED", None),
    ("p10.4-sort-by-values", {}, "GET", MOD + "?fields=id&sort_by=Appointment_Name", None, 400, "INVALID_DATA",
     None),
    ("p10.4-discrete-pagination-2000", {}, "GET", MOD + "?fields=id&per_page=200&page=11", None, 400,
     "DISCRETE_PAGINATION_LIMIT_EXCEEDED", None),
    ("p10.4-page-with-page-token", {}, "GET", MOD + "?fields=id&page=1&page_token=abc", None, 400, "INVALID_DATA",
     None),
    ("p10.5-ids-at-most-100", {}, "GET", MOD + "?fields=id&ids=" + ",".join([S] * 101), None, 400,
     "LIMIT_EXCEEDED", None),
    ("p10.5-unknown-id-204", {}, "GET", f"{MOD}/{UNKNOWN}", None, 204, None, None),
    ("p10.5-unknown-ids-204", {}, "GET", f"{MOD}?fields=id&ids={UNKNOWN}", None, 204, None, None),
    ("p10.4-search-criteria-mandatory", {}, "GET", f"{MOD}/search", None, 400, "REQUIRED_PARAM_MISSING", None),
    ("p10.4-search-unsupported-field", {}, "GET", f"{MOD}/search?criteria=(Owner:equals:1)", None, 400,
     "INVALID_QUERY", "Owner"),
    ("p10.4-search-none-204", {}, "GET", f"{MOD}/search?criteria=(Syncd_Id:equals:apt_none)", None, 204, None,
     None),
    ("p10.4-deleted-type-values", {}, "GET", f"{MOD}/deleted?type=bin", None, 400, "INVALID_DATA", None),
    # --- checklist 13: watch ---------------------------------------------------------------------
    ("p10.13-watch-expiry-over-7-days", {}, "POST", "/crm/v7/actions/watch",
     {"watch": [{"channel_id": 1, "events": ["Appointments__s.all"], "channel_expiry": later(8),
                 "token": "t", "notify_url": "http://127.0.0.1:9/hook"}]}, 400, "INVALID_DATA", "channel_expiry"),
    ("p10.13-watch-expiry-in-past", {}, "POST", "/crm/v7/actions/watch",
     {"watch": [{"channel_id": 1, "events": ["Appointments__s.all"], "channel_expiry": later(-1),
                 "token": "t", "notify_url": "http://127.0.0.1:9/hook"}]}, 400, "INVALID_DATA", "channel_expiry"),
    ("p10.13-watch-token-max-50", {}, "POST", "/crm/v7/actions/watch",
     {"watch": [{"channel_id": 1, "events": ["Appointments__s.all"], "token": "t" * 51,
                 "notify_url": "http://127.0.0.1:9/hook"}]}, 400, "INVALID_DATA", "token"),
    ("p10.13-watch-ok-default-expiry", {}, "POST", "/crm/v7/actions/watch",
     {"watch": [{"channel_id": 1, "events": ["Appointments__s.all"], "token": "t",
                 "notify_url": "http://127.0.0.1:9/hook"}]}, 200, None, None),
]


@pytest.mark.parametrize(
    ("options", "method", "path", "body", "status", "code", "api_name"),
    [pytest.param(*case[1:], id=case[0]) for case in RULES],
)
async def test_rule(
    zoho: Zoho,
    options: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str | None,
    api_name: str | None,
) -> None:
    if options:
        await zoho.control("POST", "options", options)
    before = await zoho.records()
    got_status, got, _ = await zoho.call(method, path, body)
    assert got_status == status, got
    if status in (204, 304):
        assert got is None
        return
    if code is None:
        results = got.get("data") or got.get("watch") or []
        assert results and results[0]["status"] == "success", got
        return
    first = got
    for key in ("data", "watch"):
        if isinstance(got.get(key), list):
            first = next(r for r in got[key] if r["status"] == "error")
    assert first["code"] == code, got
    assert first["status"] == "error"
    assert set(first) == {"code", "details", "message", "status"}
    if api_name is not None:
        assert first["details"].get("api_name") == api_name, got
    if method in ("PUT", "POST") and got_status >= 400 and isinstance(got.get("data"), list):
        after = await zoho.records()
        assert {k: v["Modified_Time"] for k, v in after.items()} == {
            k: v["Modified_Time"] for k, v in before.items()
        }, "a failed record changes nothing"
