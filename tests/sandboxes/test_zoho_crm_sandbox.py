"""The Zoho CRM sandbox against docs/vendors/zoho_crm.md and the seed page, over the wire by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from connectors.zoho_crm.sandbox import seed_body
from syncd.sandboxkit import start_sandbox
from syncd.sandboxkit.seedgen import generate
from tests.sandboxes._zoho_crm_helpers import (
    ADMIN,
    CONTACT,
    MOD,
    NOW,
    OV,
    RUN,
    SERVICE,
    UNKNOWN,
    C,
    R,
    Receiver,
    S,
    X,
    Zoho,
    base_records,
    iso,
    new_appointment,
)


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
# fmt: off
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
     put({"id": OV, "Status": "Completed", "Cancellation_Reason": "By Team"}), 400, "DEPENDENT_MISMATCH", "Status"),
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
     put({"id": OV, "Status": "Completed", "Job_Sheet_Name": "Delivered",
          "Job_Sheet_Description__s": "Delivered on time"}), 200, None, None),
    ("seed:E4-overdue-to-scheduled-needs-reschedule", {}, "PUT", MOD, put({"id": OV, "Status": "Scheduled"}), 400,
     "DEPENDENT_MISMATCH", "Status"),
    ("seed:E1-overdue-rescheduled-to-future-ok", {}, "PUT", MOD,
     put({"id": OV, "Appointment_Start_Time": later(1, 5)}), 200, None, None),
    ("seed:E5-completed-not-allowed-when-auto", {"mark_as_complete": "auto"}, "PUT", MOD,
     put({"id": RUN, "Status": "Completed"}), 403, "NOT_ALLOWED", "Status"),
    ("seed:E6-job-sheet-mandated-name", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": OV, "Status": "Completed", "Job_Sheet_Description__s": "done"}), 400, "MANDATORY_NOT_FOUND",
     "Job_Sheet_Name"),
    ("seed:E6-job-sheet-mandated-description", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": OV, "Status": "Completed", "Job_Sheet_Name": "done"}), 400, "MANDATORY_NOT_FOUND",
     "Job_Sheet_Description__s"),
    ("seed:E6-job-sheet-mandated-ok", {"job_sheet_mandatory": True}, "PUT", MOD,
     put({"id": OV, "Status": "Completed", "Job_Sheet_Name": "a", "Job_Sheet_Description__s": "b"}), 200, None,
     None),
    ("p10.10-job-sheet-needs-completed", {}, "PUT", MOD, put({"id": OV, "Job_Sheet_Name": "a"}), 400,
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
    ("p4-path-id-and-body-id-differ", {}, "PUT", f"{MOD}/{S}", put({"id": OV, "Additional_Information": "x"}), 400,
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
    ("p10.4-fields-at-most-50", {}, "GET", MOD + "?fields=" + ",".join(["id"] + [f"F{i}" for i in range(50)]),
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
# fmt: on


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


# --- effects of allowed writes ------------------------------------------------------------------


async def test_reschedule_effects_and_history(zoho: Zoho) -> None:
    old = await zoho.get(S)
    status, body, _ = await zoho.call(
        "PUT", MOD, put({"id": S, "Appointment_Start_Time": later(1, 2), "Reschedule_Note": "moved"})
    )
    assert status == 200 and body["data"][0]["message"] == "record updated"
    assert set(body["data"][0]["details"]) == {"Modified_Time", "Modified_By", "Created_Time", "id", "Created_By"}
    new = await zoho.get(S)
    assert new["Reschedule_Count"] == 1
    assert new["Rescheduled_From"] == old["Appointment_Start_Time"]
    assert new["Reschedule_Reason"] == "By Customer"  # default
    assert new["Appointment_Start_Time"] == "2026-11-23T17:30:00+05:30"  # display_offset +05:30
    assert new["Appointment_End_Time"] == "2026-11-23T18:00:00+05:30"  # start + Duration 30
    dump = await zoho.records()
    assert len(dump[S]["_rescheduled_history"]) == 1
    assert dump[S]["_last_trigger"] == []
    assert dump[S]["_notifications"] == []


async def test_cancel_sets_defaults_and_overdue_reschedule_becomes_scheduled(zoho: Zoho) -> None:
    await zoho.call("PUT", MOD, put({"id": S, "Status": "Cancelled"}))
    rec = await zoho.get(S)
    assert (rec["Status"], rec["Cancellation_Reason"], rec["Cancellation_Note"]) == ("Cancelled", "By Customer", None)
    assert (await zoho.get(OV))["Status"] == "Overdue"
    await zoho.call("PUT", MOD, put({"id": OV, "Appointment_Start_Time": later(2)}))
    assert (await zoho.get(OV))["Status"] == "Scheduled"


async def test_create_sets_end_and_defaults(zoho: Zoho) -> None:
    status, body, _ = await zoho.call("POST", MOD, put(new_appointment()))
    assert status == 201 and body["data"][0]["message"] == "record added"
    rec = await zoho.get(body["data"][0]["details"]["id"])
    assert rec["Status"] == "Scheduled" and rec["Reschedule_Count"] == 0 and rec["Duration"] == 30
    assert rec["Appointment_End_Time"] == "2026-12-01T16:00:00+05:30"
    assert rec["Appointment_For"]["name"] == "Ana Ruiz" and rec["Syncd_Id"] == "apt_new_1"
    assert rec["id"].isdigit() and len(rec["id"]) == 19


async def test_trigger_absent_runs_workflow_email(zoho: Zoho) -> None:
    await zoho.call("PUT", MOD, {"data": [{"id": S, "Additional_Information": "x"}]})
    dump = await zoho.records()
    assert dump[S]["_last_trigger"] is None
    assert [n["type"] for n in dump[S]["_notifications"]] == ["workflow_email_alert"]


# --- versions (§8) --------------------------------------------------------------------------------


async def test_modified_time_bumps_strictly_and_noop_keeps_it(zoho: Zoho) -> None:
    v0 = (await zoho.get(S))["Modified_Time"]
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "a"}), headers={**zoho.auth(), "If-Match": "x"})
    v1 = (await zoho.get(S))["Modified_Time"]
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "b"}))
    v2 = (await zoho.get(S))["Modified_Time"]
    assert v0 < v1 < v2  # same wall-clock second: +1 s
    status, body, _ = await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "b"}))
    assert status == 200 and body["data"][0]["details"]["Modified_Time"] == v2
    assert (await zoho.get(S))["Modified_Time"] == v2


async def test_sandbox_records_overwrite_bumps_and_delete(zoho: Zoho) -> None:
    v0 = (await zoho.get(S))["Modified_Time"]
    await zoho.control("POST", "records", {"records": [{"id": S, "Additional_Information": "seeded"}], "delete": [R]})
    rec = await zoho.get(S)
    assert rec["Modified_Time"] > v0 and rec["Additional_Information"] == "seeded"
    status, _, _ = await zoho.call("GET", f"{MOD}/{R}")
    assert status == 204
    dump = await zoho.records()
    assert dump[R]["_deleted_at"] is not None and dump[S]["_deleted_at"] is None
    full = await zoho.control("GET", "records")
    assert {"records", "Contacts", "users", "services", "watch"} <= set(full)


# --- clock rules (checklist 12) -------------------------------------------------------------------


async def test_clock_scheduled_to_overdue_then_auto_completed(zoho: Zoho) -> None:
    assert (await zoho.get(S))["Status"] == "Scheduled"
    v0 = (await zoho.get(S))["Modified_Time"]
    zoho.running.sandbox.clock.advance(86400 + 60)
    await zoho.login()
    rec = await zoho.get(S)
    assert rec["Status"] == "Overdue" and rec["Modified_Time"] > v0
    await zoho.control("POST", "options", {"mark_as_complete": "auto"})
    await zoho.control("POST", "clock", {"now": later(1, 1)})
    assert (await zoho.get(S))["Status"] == "Completed"
    status, body, _ = await zoho.call("GET", "/crm/v7/settings/appointment_preferences")
    assert status == 200 and body == {
        "appointment_preferences": {"mark_as_complete": "auto", "job_sheet_mandatory": False}
    }


# --- auth (§1, checklist 1, 2) ---------------------------------------------------------------------


async def test_token_route(zoho: Zoho) -> None:
    body = await zoho.fetch_token()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["api_domain"] == zoho.url
    assert body["access_token"].startswith("1000.")
    assert await zoho.fetch_token(client_secret="wrong") == {"error": "invalid_client"}
    assert await zoho.fetch_token(client_id="wrong") == {"error": "invalid_client"}
    assert await zoho.fetch_token(refresh_token="wrong") == {"error": "invalid_code"}


async def test_auth_missing_bearer_expired_scope(zoho: Zoho) -> None:
    path = f"{MOD}/{S}"
    for headers in ({}, {"Authorization": f"Bearer {zoho.token}"}):
        status, body, _ = await zoho.call("GET", path, headers=headers)
        assert (status, body["code"]) == (401, "AUTHENTICATION_FAILURE")
    status, body, _ = await zoho.call("GET", path, headers=zoho.auth("1000.unknown.token"))
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
    assert body == {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
    zoho.running.sandbox.clock.advance(3599)
    assert (await zoho.call("GET", path))[0] == 200
    zoho.running.sandbox.clock.advance(2)
    status, body, _ = await zoho.call("GET", path)
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
    await zoho.control("POST", "options", {"scopes": ["ZohoCRM.modules.appointments.READ"]})
    await zoho.login()
    assert (await zoho.call("GET", path))[0] == 200
    status, body, _ = await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "x"}))
    assert (status, body["code"]) == (401, "OAUTH_SCOPE_MISMATCH")
    await zoho.control("POST", "options", {"scopes": ["ZohoCRM.modules.appointments.UPDATE"]})
    await zoho.login()
    assert (await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "x"})))[0] == 200


async def test_revoked_refresh_token(zoho: Zoho) -> None:
    async with zoho.http.post(zoho.url + "/oauth/v2/token/revoke", params={"token": "sandbox-refresh"}) as resp:
        assert resp.status == 200
    status, body, _ = await zoho.call("GET", f"{MOD}/{S}")
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
    assert await zoho.fetch_token() == {"error": "invalid_code"}


async def test_31st_token_invalidates_oldest(zoho: Zoho) -> None:
    first = zoho.token
    for _ in range(29):
        await zoho.fetch_token()
    assert (await zoho.call("GET", f"{MOD}/{S}", headers=zoho.auth(first)))[0] == 200
    await zoho.fetch_token()  # the 31st live token
    status, body, _ = await zoho.call("GET", f"{MOD}/{S}", headers=zoho.auth(first))
    assert (status, body["code"]) == (401, "INVALID_TOKEN")


# --- change detection (§2 b), deletions, search ---------------------------------------------------


async def _seed_many(zoho: Zoho, n: int, *, same_time: bool = False) -> list[str]:
    records = []
    ids = []
    for i in range(n):
        rid = f"55459740000030{i:05d}"
        ids.append(rid)
        modified = NOW - timedelta(hours=1) if same_time else NOW - timedelta(hours=1) + timedelta(seconds=i)
        records.append(
            {
                "id": rid,
                "Appointment_Name": "Check-up",
                "Appointment_For": {"module": "Contacts", "id": CONTACT},
                "Service_Name": {"id": SERVICE},
                "Owner": {"id": ADMIN},
                "Appointment_Start_Time": later(5),
                "Syncd_Id": f"bulk_{i}",
                "Created_Time": iso(modified),
                "Modified_Time": iso(modified),
            }
        )
    await zoho.control("POST", "records", {"records": records})
    return ids


async def test_incremental_poll_keyset_over_pages(zoho: Zoho) -> None:
    ids = await _seed_many(zoho, 450)
    since = iso(NOW - timedelta(hours=1))
    seen: list[str] = []
    params = {"fields": "id,Modified_Time", "per_page": "200", "sort_by": "Modified_Time", "sort_order": "asc"}
    cursor, ties = since, set[str]()
    for _ in range(10):
        status, body, _ = await zoho.call(
            "GET", MOD, params={**params, "page": "1"}, headers={**zoho.auth(), "If-Modified-Since": cursor}
        )
        if status == 304:
            break
        assert status == 200
        assert body["info"]["sort_by"] == "Modified_Time" and body["info"]["per_page"] == 200
        rows = [r for r in body["data"] if not (r["Modified_Time"] == cursor and r["id"] in ties)]
        times = [r["Modified_Time"] for r in body["data"]]
        assert times == sorted(times)
        seen.extend(r["id"] for r in rows)
        last = body["data"][-1]["Modified_Time"]
        ties = {r["id"] for r in body["data"] if r["Modified_Time"] == last} | (ties if last == cursor else set())
        cursor = last
        if not body["info"]["more_records"] and not rows:
            break
    assert set(ids) <= set(seen)
    # steady state: only the tie records come back, then 304 once the header passes them
    status, body, _ = await zoho.call(
        "GET", MOD, params={**params, "page": "1"}, headers={**zoho.auth(), "If-Modified-Since": cursor}
    )
    assert status == 200 and {r["id"] for r in body["data"]} <= ties | {S, OV, RUN}
    far = iso(NOW + timedelta(days=30))
    status, body, _ = await zoho.call("GET", MOD, params=params, headers={**zoho.auth(), "If-Modified-Since": far})
    assert (status, body) == (304, None)


async def test_page_token_beyond_2000(zoho: Zoho) -> None:
    await _seed_many(zoho, 2050, same_time=True)
    params = {"fields": "id", "per_page": "200", "sort_by": "id", "sort_order": "asc"}
    status, body, _ = await zoho.call("GET", MOD, params={**params, "page": "10"})
    assert status == 200 and body["info"]["more_records"] is True and body["info"]["page"] == 10
    token = body["info"]["next_page_token"]
    status, body, _ = await zoho.call("GET", MOD, params={**params, "page_token": token})
    assert status == 200 and body["info"]["count"] == 56 and body["info"]["more_records"] is False  # 2,056 in all
    status, body, _ = await zoho.call("GET", MOD, params={**params, "sort_order": "desc", "page_token": token})
    assert status == 400 and body["code"] == "INVALID_DATA"  # bound to the parameters


async def test_batch_read_and_single_read(zoho: Zoho) -> None:
    status, body, _ = await zoho.call("GET", MOD, params={"ids": f"{S},{UNKNOWN},{OV}", "fields": "id,Status"})
    assert status == 200 and [r["id"] for r in body["data"]] == [S, OV]
    assert set(body["data"][0]) == {"id", "Status"}
    rec = await zoho.get(S)
    assert list(rec)[:3] == ["id", "Appointment_Name", "Appointment_For"] and "Syncd_Id" in rec


async def test_deletion_feed(zoho: Zoho) -> None:
    status, body, _ = await zoho.call("DELETE", f"{MOD}/{S}")
    assert status == 200 and body["data"][0]["message"] == "record deleted"
    assert (await zoho.call("GET", f"{MOD}/{S}"))[0] == 204
    status, body, _ = await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "x"}))
    assert status == 400 and body["data"][0]["details"]["api_name"] == "id"
    status, body, _ = await zoho.call("GET", MOD, params={"fields": "id"})
    assert S not in {r["id"] for r in body["data"]}
    hdrs = {**zoho.auth(), "If-Modified-Since": iso(NOW)}
    status, body, _ = await zoho.call(
        "GET", f"{MOD}/deleted", params={"type": "all", "per_page": "200", "page": "1"}, headers=hdrs
    )
    assert status == 200
    entry = body["data"][0]
    assert entry["id"] == S and entry["type"] == "recycle" and entry["display_name"] == "Dental check-up"
    assert set(entry) == {"id", "display_name", "type", "deleted_by", "created_by", "deleted_time"}
    assert body["info"] == {"per_page": 200, "count": 1, "page": 1, "more_records": False}
    hdrs["If-Modified-Since"] = iso(NOW + timedelta(minutes=5))
    assert (await zoho.call("GET", f"{MOD}/deleted", params={"type": "all"}, headers=hdrs))[0] == 304


async def test_search_equals_and_between(zoho: Zoho) -> None:
    status, body, _ = await zoho.call("GET", f"{MOD}/search", params={"criteria": "(Syncd_Id:equals:apt_001)"})
    assert status == 200 and [r["id"] for r in body["data"]] == [S]
    crit = f"((Appointment_Start_Time:between:{later(0.5)},{later(2.5)})and(Status:equals:Scheduled))"
    status, body, _ = await zoho.call("GET", f"{MOD}/search", params={"criteria": crit})
    assert status == 200 and [r["id"] for r in body["data"]] == [S]


# --- watch notifications (§2 a, checklist 13) ----------------------------------------------------


async def _subscribe(zoho: Zoho, url: str, **extra: Any) -> dict[str, Any]:
    chan = {
        "channel_id": 1000000068001,
        "events": ["Appointments__s.all"],
        "channel_expiry": later(6),
        "token": "wh-7Rk2pQ9xLm4Zt",
        "notify_url": url,
        "notify_on_related_action": False,
        **extra,
    }
    status, body, _ = await zoho.call("POST", "/crm/v7/actions/watch", {"watch": [chan]})
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def _drain(zoho: Zoho) -> None:
    await zoho.running.sandbox.wait_webhooks()


async def test_watch_callbacks(zoho: Zoho, receiver: Receiver) -> None:
    body = await _subscribe(zoho, receiver.url)
    event = body["watch"][0]["details"]["events"][0]
    assert body["watch"][0]["message"] == "Successfully subscribed for actions-watch of the given module"
    assert event["resource_name"] == "Appointments__s" and event["channel_id"] == 1000000068001
    _, created, _ = await zoho.call("POST", MOD, put(new_appointment()))
    new_id = created["data"][0]["details"]["id"]
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "a"}, {"id": R, "Additional_Information": "b"}))
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "a"}))  # unchanged: no callback
    await zoho.call("DELETE", f"{MOD}/{new_id}")
    await _drain(zoho)
    ops = [(c["operation"], c["ids"]) for c in receiver.received]
    assert ops == [("insert", [new_id]), ("update", [S, R]), ("delete", [new_id])]
    example = {
        "server_time",
        "query_params",
        "module",
        "resource_uri",
        "ids",
        "affected_fields",
        "operation",
        "channel_id",
        "token",
    }  # the keys of the callback example of docs/vendors/zoho_crm.md §2
    for callback in receiver.received:
        assert set(callback) == example
        assert callback["token"] == "wh-7Rk2pQ9xLm4Zt" and callback["channel_id"] == 1000000068001
        assert callback["module"] == "Appointments__s" and callback["resource_uri"].endswith(MOD)


async def test_watch_clock_and_sandbox_writes_notify_and_expiry_stops(zoho: Zoho, receiver: Receiver) -> None:
    await _subscribe(zoho, receiver.url, channel_expiry=later(1, 1))
    await zoho.control("POST", "records", {"records": [{"id": S, "Additional_Information": "z"}]})
    zoho.running.sandbox.clock.advance(86400 + 60)  # S passes its start: clock rule → Overdue
    await zoho.login()
    await zoho.call("GET", f"{MOD}/{S}")
    await _drain(zoho)
    assert [(c["operation"], c["ids"]) for c in receiver.received] == [("update", [S]), ("update", [S])]
    receiver.received.clear()
    zoho.running.sandbox.clock.advance(3600)  # channel expired
    await zoho.login()
    await zoho.call("PUT", MOD, put({"id": R, "Additional_Information": "late"}))
    await _drain(zoho)
    assert receiver.received == []


async def test_watch_repost_replaces_channel(zoho: Zoho, receiver: Receiver) -> None:
    await _subscribe(zoho, "http://127.0.0.1:9/old")
    await _subscribe(zoho, receiver.url)
    status, body, _ = await zoho.call("GET", "/crm/v7/actions/watch")
    assert status == 200 and [c["notify_url"] for c in body["watch"]] == [receiver.url]


# --- faults: common kinds fire exactly `times` times ------------------------------------------------


async def _fault(zoho: Zoho, match: dict[str, str], action: dict[str, Any], times: int = 2) -> None:
    await zoho.control("POST", "faults", {"match": match, "action": action, "times": times})


async def test_fault_status_500_is_internal_error(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/*"}, {"type": "status", "status": 500})
    results = [await zoho.call("GET", f"{MOD}/{S}") for _ in range(3)]
    assert [r[0] for r in results] == [500, 500, 200]
    assert results[0][1] == {
        "code": "INTERNAL_ERROR",
        "details": {},
        "message": "Internal Server Error",
        "status": "error",
    }


async def test_fault_delay(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/*"}, {"type": "delay", "seconds": 0.05})
    loop = asyncio.get_running_loop()
    took = []
    for _ in range(3):
        t0 = loop.time()
        assert (await zoho.call("GET", f"{MOD}/{S}"))[0] == 200
        took.append(loop.time() - t0)
    assert took[0] >= 0.05 and took[1] >= 0.05
    assert (await zoho.control("GET", "faults"))["faults"] == []


async def test_fault_drop_after_apply(zoho: Zoho) -> None:
    # a POST create: aiohttp's client silently re-sends idempotent methods (PUT) whose connection dropped
    await _fault(zoho, {"method": "POST", "path": MOD}, {"type": "drop_after_apply"})
    for n in range(2):
        with pytest.raises(aiohttp.ClientError):
            await zoho.call("POST", MOD, put(new_appointment(Syncd_Id=f"apt_drop{n}")))
        params = {"criteria": f"(Syncd_Id:equals:apt_drop{n})"}
        status, body, _ = await zoho.call("GET", f"{MOD}/search", params=params)
        assert status == 200 and len(body["data"]) == 1  # applied, then the connection was closed
    assert (await zoho.call("POST", MOD, put(new_appointment(Syncd_Id="apt_drop2"))))[0] == 201


async def test_fault_rate_limit(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/*"}, {"type": "rate_limit", "retry_after": 3})
    results = [await zoho.call("GET", f"{MOD}/{S}") for _ in range(3)]
    assert [r[0] for r in results] == [429, 429, 200]
    assert results[0][1]["code"] == "TOO_MANY_REQUESTS" and results[0][2]["Retry-After"] == "3"


async def test_fault_mutate_before_batch(zoho: Zoho) -> None:
    await _fault(
        zoho, {"method": "PUT", "path": MOD}, {"type": "mutate_before", "changes": {"Address": "other"}}, times=1
    )
    v0 = (await zoho.get(S))["Modified_Time"]
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "a"}, {"id": R, "Additional_Information": "b"}))
    s, r = await zoho.get(S), await zoho.get(R)
    assert s["Address"] == "other" and r["Address"] == "other" and s["Modified_Time"] > v0
    await zoho.call("PUT", MOD, put({"id": OV, "Additional_Information": "c"}))
    assert (await zoho.get(OV))["Address"] is None  # fired once only


# --- faults: Zoho's own kinds --------------------------------------------------------------------------


async def test_fault_invalid_token(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "*", "path": f"{MOD}*"}, {"type": "invalid_token"})
    codes = [(await zoho.call("GET", f"{MOD}/{S}"))[1] for _ in range(3)]
    assert [c["code"] if c and "code" in c else "ok" for c in codes] == ["INVALID_TOKEN", "INVALID_TOKEN", "ok"]


async def test_fault_refresh_invalid_code(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "POST", "path": "/oauth/v2/token"}, {"type": "refresh_invalid_code"})
    answers = [await zoho.fetch_token() for _ in range(3)]
    assert answers[0] == answers[1] == {"error": "invalid_code"} and "access_token" in answers[2]


@pytest.mark.parametrize(
    ("ftype", "message", "retry"),
    [("credits_exhausted", "API credits exhausted", "60"), ("concurrency_limit", "concurrency limit exceeded", "1")],
)
async def test_fault_vendor_429s(zoho: Zoho, ftype: str, message: str, retry: str) -> None:
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/*"}, {"type": ftype})
    results = [await zoho.call("GET", f"{MOD}/{S}") for _ in range(3)]
    assert [r[0] for r in results] == [429, 429, 200]
    assert results[0][1]["message"] == message and results[0][2]["Retry-After"] == retry


async def test_fault_partial_batch(zoho: Zoho) -> None:
    await _fault(zoho, {"method": "PUT", "path": MOD}, {"type": "partial_batch", "ids": [R], "code": "INVALID_DATA"})
    for n in range(2):
        status, body, _ = await zoho.call(
            "PUT", MOD, put({"id": S, "Additional_Information": f"s{n}"}, {"id": R, "Additional_Information": f"r{n}"})
        )
        assert status == 202 and [d["status"] for d in body["data"]] == ["success", "error"]
    assert (await zoho.get(R))["Additional_Information"] is None
    status, _, _ = await zoho.call("PUT", MOD, put({"id": R, "Additional_Information": "r"}))
    assert status == 200


async def test_fault_channel_expired_and_notify_drop(zoho: Zoho, receiver: Receiver) -> None:
    await _subscribe(zoho, receiver.url)
    await _fault(zoho, {"method": "PUT", "path": MOD}, {"type": "notify_drop"})
    for note in ("a", "b", "c"):
        await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": note}))
    await _drain(zoho)
    assert len(receiver.received) == 1  # two dropped, then delivered again
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/*"}, {"type": "channel_expired"}, times=1)
    await zoho.call("GET", f"{MOD}/{S}")
    await zoho.call("PUT", MOD, put({"id": S, "Additional_Information": "d"}))
    await _drain(zoho)
    assert len(receiver.received) == 1
    assert (await zoho.call("GET", "/crm/v7/actions/watch"))[0] == 204


async def test_fault_search_lag(zoho: Zoho) -> None:
    await zoho.call("POST", MOD, put(new_appointment(Syncd_Id="apt_lag")))
    await _fault(zoho, {"method": "GET", "path": f"{MOD}/search"}, {"type": "search_lag", "seconds": 10})
    params = {"criteria": "(Syncd_Id:equals:apt_lag)"}
    statuses = [(await zoho.call("GET", f"{MOD}/search", params=params))[0] for _ in range(3)]
    assert statuses == [204, 204, 200]


# --- rate limits (§7) ---------------------------------------------------------------------------------


async def test_credits_per_day_rolling_window() -> None:
    running = await start_sandbox("zoho_crm", port=0, credits_per_day=3)
    try:
        async with aiohttp.ClientSession() as http:
            z = Zoho(running, http)
            await z.login()  # the token route costs nothing
            statuses = [(await z.call("GET", f"{MOD}/{S}"))[0] for _ in range(4)]
            assert statuses == [204, 204, 204, 429]
            _, body, headers = await z.call("GET", f"{MOD}/{S}")
            assert body["message"] == "API credits exhausted" and 86000 < int(headers["Retry-After"]) <= 86400
            running.sandbox.clock.advance(86400)
            await z.login()
            assert (await z.call("GET", f"{MOD}/{S}"))[0] == 204
    finally:
        await running.stop()


async def test_concurrency_limit() -> None:
    running = await start_sandbox("zoho_crm", port=0, concurrency=1)
    try:
        async with aiohttp.ClientSession() as http:
            z = Zoho(running, http)
            await z.login()
            await z.control(
                "POST",
                "faults",
                {
                    "match": {"method": "GET", "path": f"{MOD}/*"},
                    "action": {"type": "delay", "seconds": 0.3},
                    "times": 1,
                },
            )
            first = asyncio.create_task(z.call("GET", f"{MOD}/{S}"))
            await asyncio.sleep(0.1)
            status, body, headers = await z.call("GET", f"{MOD}/{S}")
            assert (status, body["message"], headers["Retry-After"]) == (429, "concurrency limit exceeded", "1")
            assert (await first)[0] == 204
    finally:
        await running.stop()


async def test_rate_limits_off() -> None:
    running = await start_sandbox("zoho_crm", port=0, credits_per_day=1, rate_limits=False)
    try:
        async with aiohttp.ClientSession() as http:
            z = Zoho(running, http)
            await z.login()
            assert [(await z.call("GET", f"{MOD}/{S}"))[0] for _ in range(5)] == [204] * 5
    finally:
        await running.stop()


# --- seeding from the shared dataset -------------------------------------------------------------------


async def test_seed_body_from_dataset(zoho: Zoho) -> None:
    dataset = generate(50, now=NOW)
    body, rows = seed_body(dataset)
    assert seed_body(dataset) == (body, rows)  # deterministic
    kinds = {k for k, _, _ in rows}
    assert kinds == {"patient", "practitioner", "location", "service", "appointment"}
    assert len([r for r in rows if r[0] == "appointment"]) == 50
    await zoho.control("POST", "records", body)
    appt_ids = [ext for kind, _, ext in rows if kind == "appointment"]
    status, got, _ = await zoho.call("GET", MOD, params={"ids": ",".join(appt_ids), "fields": "id,Syncd_Id,Status"})
    assert status == 200 and len(got["data"]) == 50
    by_key = {key: ext for kind, key, ext in rows if kind == "appointment"}
    first = dataset.appointments[0]
    status, found, _ = await zoho.call("GET", f"{MOD}/search", params={"criteria": f"(Syncd_Id:equals:{first.key})"})
    assert status == 200 and found["data"][0]["id"] == by_key[first.key]
    rec = found["data"][0]
    patient = next(ext for kind, key, ext in rows if kind == "patient" and key == first.patient)
    assert patient == f"Contacts:{rec['Appointment_For']['id']}"
    # a seeded appointment accepts writes through the vendor routes
    status, _, _ = await zoho.call("PUT", MOD, put({"id": rec["id"], "Status": "Cancelled"}))
    assert status == 200


async def test_control_options_unknown_rejected(zoho: Zoho) -> None:
    async with zoho.http.post(zoho.url + "/_sandbox/options", json={"nope": 1}) as resp:
        assert resp.status == 400
    opts = await zoho.control("GET", "options")
    assert opts["timezone"] == "Asia/Kolkata" and opts["display_offset"] == "+05:30"
    assert opts["credits_per_day"] == 5000 and opts["concurrency"] == 5 and opts["token_ttl_seconds"] == 3600


async def test_per_page_clamped_and_mutate_before_notifies(zoho: Zoho, receiver: Receiver) -> None:
    status, body, _ = await zoho.call("GET", MOD, params={"fields": "id", "per_page": "500"})
    assert status == 200 and body["info"]["per_page"] == 200
    await _subscribe(zoho, receiver.url)
    await _fault(
        zoho, {"method": "PUT", "path": f"{MOD}/*"}, {"type": "mutate_before", "changes": {"Address": "x"}}, times=1
    )
    await zoho.call("PUT", f"{MOD}/{S}", put({"Additional_Information": "mine"}))
    await _drain(zoho)
    assert [(c["operation"], c["ids"]) for c in receiver.received] == [("update", [S]), ("update", [S])]


async def test_seed_rejects_unknown_fields(zoho: Zoho) -> None:
    async with zoho.http.post(zoho.url + "/_sandbox/records", json={"records": [{"id": S, "Apointment": 1}]}) as resp:
        assert resp.status == 400
    async with zoho.http.post(zoho.url + "/_sandbox/records", json={"patients": []}) as resp:
        assert resp.status == 400
