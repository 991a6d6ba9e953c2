"""The Dentally sandbox against docs/vendors/dentally.md (§1-§10) and the seed forum thread.

Every test drives the sandbox with hand-written HTTP requests (no connector code).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from connectors.dentally.sandbox import seed_body
from syncd.sandboxkit.seedgen import generate
from tests.sandboxes._dentally_support import (
    APPT,
    HEADERS,
    NOW,
    SITE,
    SITE_2,
    Env,
    Receiver,
    add_fault,
    appointment,
    call,
    running,
    seed,
)

SEED_422 = {
    "error": {
        "type": "invalid_request_error",
        "message": "The appointment could not be processed",
        "params": {
            "state": ["The appointment can not be updated as the current status is: Confirmed"],
            "patient_id": ["can not change patients"],
        },
    }
}
UA_403 = {"error": {"type": "invalid_access_error", "message": "A User-Agent header is required"}}
TOKEN_401 = {"error": {"type": "invalid_access_error", "message": "The access token is invalid"}}
DATE_400 = {
    "error": {
        "type": "invalid_request_error",
        "message": "A date filter is required",
        "params": {"date_filter": ["is required"]},
    }
}
NOT_FOUND = {"error": {"type": "not_found_error", "message": "Record not found"}}


def lock(state: str) -> str:
    return f"The appointment can not be updated as the current status is: {state}"


def params_422(params: dict[str, list[str]]) -> dict[str, Any]:
    message = "The appointment could not be processed"
    return {"error": {"type": "invalid_request_error", "message": message, "params": params}}


def new_appt(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_time": "2026-12-02T09:00:00Z",
        "finish_time": "2026-12-02T09:30:00Z",
        "practitioner_id": 52,
        "patient_id": 1014,
        "site_id": SITE,
        "reason": "Exam",
    }
    body.update(fields)
    return {"appointment": {k: v for k, v in body.items() if v is not ...}}


@dataclass(frozen=True)
class Case:
    """One rule: the record's state before, one request, and the documented answer."""

    method: str
    path: str
    body: Any = None
    state: str = "Pending"
    patient: int | None = 1013
    status: int = 200
    error: dict[str, Any] | None = None  # the exact error body
    check: Callable[[dict[str, Any]], bool] | None = None
    headers: dict[str, str] | None = None
    params: dict[str, str] | None = None
    skip_user_agent: bool = False


A = f"/v1/appointments/{APPT}"
L = "/v1/appointments"


def put(**fields: Any) -> dict[str, Any]:
    return {"appointment": fields}


def rec(check: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda body: check(body["appointment"])


RULES: list[tuple[str, Case]] = [
    # -- seed thread ---------------------------------------------------------------------------
    ("seed:exact-422-confirmed-plus-patient",
     Case("PUT", A, put(state="Confirmed", patient_id=1014), state="Confirmed", status=422, error=SEED_422)),
    ("seed:patient-change-refused-in-pending",
     Case("PUT", A, put(patient_id=1014), status=422, error=params_422({"patient_id": ["can not change patients"]}))),
    ("seed:patient-removal-refused",
     Case("PUT", A, put(patient_id=None), status=422, error=params_422({"patient_id": ["can not change patients"]}))),
    ("seed:patient-added-when-none-in-pending",
     Case("PUT", A, put(patient_id=1014), patient=None, check=rec(lambda a: a["patient_id"] == 1014))),
    ("seed:same-patient-is-no-edit",
     Case("PUT", A, put(patient_id=1013, state="Confirmed"), state="Confirmed",
          check=rec(lambda a: a["state"] == "Confirmed"))),
    ("seed:confirmed-only-state-and-notes-start-locked",
     Case("PUT", A, put(start_time="2026-12-01T10:00:00Z"), state="Confirmed", status=422,
          error=params_422({"state": [lock("Confirmed")]}))),
    ("seed:confirmed-notes-editable",
     Case("PUT", A, put(notes="call before"), state="Confirmed", check=rec(lambda a: a["notes"] == "call before"))),
    ("seed:confirmed-state-editable",
     Case("PUT", A, put(state="Arrived"), state="Confirmed",
          check=rec(lambda a: a["state"] == "Arrived" and a["arrived_at"] is not None))),
    ("seed:cancel-booked-in-error",
     Case("PUT", A, put(state="Cancelled", cancellation_reason_id=1, notes="replaced by appointment 1"),
          state="Confirmed",
          check=rec(lambda a: a["state"] == "Cancelled" and a["cancellation_reason"] == "Booked in error"))),
    # -- part 10.1: headers and auth -------------------------------------------------------------
    ("p10.1-no-user-agent-403-before-token",
     Case("GET", A, headers={"Authorization": "Bearer wrong"}, skip_user_agent=True, status=403, error=UA_403)),
    ("p10.1-empty-user-agent-403",
     Case("GET", A, headers={**HEADERS, "User-Agent": ""}, skip_user_agent=True, status=403, error=UA_403)),
    ("p10.1-missing-token-401",
     Case("GET", A, headers={"User-Agent": "t"}, status=401, error=TOKEN_401)),
    ("p10.1-not-bearer-401",
     Case("GET", A, headers={"User-Agent": "t", "Authorization": "Token sandbox-token"}, status=401,
          error=TOKEN_401)),
    ("p10.1-unknown-token-401",
     Case("GET", A, headers={"User-Agent": "t", "Authorization": "Bearer nope"}, status=401, error=TOKEN_401)),
    # -- part 10.2: routes and wrapping -------------------------------------------------------------
    ("p10.2-unversioned-path-404", Case("GET", f"/appointments/{APPT}", status=404, error=NOT_FOUND)),
    ("p10.2-single-wrapped", Case("GET", A, check=lambda b: b["appointment"]["id"] == APPT)),
    ("p10.2-unknown-id-404", Case("GET", "/v1/appointments/1", status=404, error=NOT_FOUND)),
    ("p10.2-list-wrapped-with-meta",
     Case("GET", L, params={"after": "2026-12-01T00:00:00Z"},
          check=lambda b: [a["id"] for a in b["appointments"]] == [APPT]
          and b["meta"] == {"page": 1, "per_page": 25, "total": 1, "total_pages": 1})),
    # -- part 10.3: lists ------------------------------------------------------------------------
    ("p10.3-no-date-filter-400", Case("GET", L, params={"page": "1"}, status=400, error=DATE_400)),
    ("p10.3-per-page-clamped-to-100",
     Case("GET", L, params={"after": "2026-12-01", "per_page": "500"}, check=lambda b: b["meta"]["per_page"] == 100)),
    ("p10.3-page-past-end-empty",
     Case("GET", L, params={"after": "2026-12-01", "page": "3"}, check=lambda b: b["appointments"] == [])),
    ("p10.3-bad-sort-by-400",
     Case("GET", L, params={"after": "2026-12-01", "sort_by": "state"}, status=400,
          error={"error": {"type": "invalid_request_error", "message": "Invalid parameter",
                           "params": {"sort_by": ["is not included in the list"]}}})),
    ("p10.3-bad-sort-direction-400",
     Case("GET", L, params={"after": "2026-12-01", "sort_direction": "up"}, status=400,
          check=lambda b: "sort_direction" in b["error"]["params"])),
    ("p2b-updated-since-refused",
     Case("GET", L, params={"updated_since": "2026-11-22T00:00:00Z"}, status=400,
          check=lambda b: "updated_since" in b["error"]["params"])),
    ("p10.3-updated-after-unparseable-400",
     Case("GET", L, params={"updated_after": "yesterday"}, status=400,
          error={"error": {"type": "invalid_request_error", "message": "Invalid parameter",
                           "params": {"updated_after": ["is invalid"]}}})),
    ("p10.3-on-local-day", Case("GET", L, params={"on": "2026-12-01"}, check=lambda b: b["meta"]["total"] == 1)),
    ("p10.3-before-excludes-start",
     Case("GET", L, params={"before": "2026-12-01T09:00:00Z"}, check=lambda b: b["meta"]["total"] == 0)),
    ("p10.3-after-is-inclusive",
     Case("GET", L, params={"after": "2026-12-01T09:00:00Z"}, check=lambda b: b["meta"]["total"] == 1)),
    # -- part 10.4: create ---------------------------------------------------------------------------
    ("p10.4-create-201-pending",
     Case("POST", L, new_appt(), status=201,
          check=rec(lambda a: a["state"] == "Pending" and a["pending_at"] is not None and a["duration"] == 30
                    and a["updated_at"] == a["created_at"]))),
    ("p10.4-create-confirmed", Case("POST", L, new_appt(state="Confirmed"), status=201,
                                    check=rec(lambda a: a["confirmed_at"] is not None))),
    ("p10.4-create-with-duration",
     Case("POST", L, new_appt(finish_time=..., duration=45), status=201,
          check=rec(lambda a: a["finish_time"] == "2026-12-02T09:45:00.000Z"))),
    ("p10.4-create-without-patient", Case("POST", L, new_appt(patient_id=...), status=201,
                                          check=rec(lambda a: a["patient_id"] is None))),
    ("p10.4-overlap-allowed",
     Case("POST", L, new_appt(start_time="2026-12-01T09:00:00Z", finish_time="2026-12-01T09:30:00Z"), status=201)),
    ("p10.4-missing-start-422",
     Case("POST", L, new_appt(start_time=...), status=422, error=params_422({"start_time": ["can't be blank"]}))),
    ("p10.4-missing-practitioner-422",
     Case("POST", L, new_appt(practitioner_id=...), status=422,
          error=params_422({"practitioner_id": ["can't be blank"]}))),
    ("p10.4-missing-finish-and-duration-422",
     Case("POST", L, new_appt(finish_time=...), status=422,
          check=lambda b: list(b["error"]["params"]) == ["finish_time"])),
    ("p10.4-time-without-offset-422",
     Case("POST", L, new_appt(start_time="2026-12-02T09:00:00"), status=422,
          error=params_422({"start_time": ["must include a UTC offset"]}))),
    ("p10.4-finish-not-after-start-422",
     Case("POST", L, new_appt(finish_time="2026-12-02T09:00:00Z"), status=422,
          error=params_422({"finish_time": ["must be after start_time"]}))),
    ("p10.4-metadata-three-pairs-ok",
     Case("POST", L, new_appt(metadata={"syncd_id": "a", "syncd_replaces": "1", "k": "v" * 500}), status=201)),
    ("p10.4-metadata-four-pairs-422",
     Case("POST", L, new_appt(metadata={"a": "1", "b": "2", "c": "3", "d": "4"}), status=422,
          error=params_422({"metadata": ["can have at most 3 pairs"]}))),
    ("p10.4-metadata-key-over-40-422",
     Case("POST", L, new_appt(metadata={"k" * 41: "1"}), status=422,
          error=params_422({"metadata": ["key is too long (maximum is 40 characters)"]}))),
    ("p10.4-metadata-value-over-500-422",
     Case("POST", L, new_appt(metadata={"k": "v" * 501}), status=422,
          error=params_422({"metadata": ["value is too long (maximum is 500 characters)"]}))),
    ("p10.4-create-state-arrived-refused",
     Case("POST", L, new_appt(state="Arrived"), status=422,
          check=lambda b: list(b["error"]["params"]) == ["state"])),
    ("p10.4-create-unknown-state-422",
     Case("POST", L, new_appt(state="pending"), status=422,
          error=params_422({"state": ["is not included in the list"]}))),
    ("p10.4-create-cancellation-reason-not-accepted",
     Case("POST", L, new_appt(cancellation_reason_id=1), status=422,
          check=lambda b: list(b["error"]["params"]) == ["cancellation_reason_id"])),
    ("p10.4-create-unknown-practitioner-422",
     Case("POST", L, new_appt(practitioner_id=999), status=422,
          error=params_422({"practitioner_id": ["does not exist"]}))),
    ("p10.4-create-needs-appointment-wrapper-400",
     Case("POST", L, {"start_time": "2026-12-02T09:00:00Z"}, status=400,
          check=lambda b: b["error"]["params"] == {"appointment": ["is required"]})),
    # -- part 10.5 / 10.6: patient rule and state lock ------------------------------------------------
    ("p10.5-patient-set-from-null-outside-pending-locked",
     Case("PUT", A, put(patient_id=1014), state="Confirmed", patient=None, status=422,
          error=params_422({"state": [lock("Confirmed")]}))),
    ("p10.6-pending-every-field-editable",
     Case("PUT", A, put(start_time="2026-12-01T10:00:00+01:00", duration=45, practitioner_id=53, site_id=SITE_2,
                        reason="Hygiene", metadata={"syncd_id": "x"}, state="Confirmed"),
          check=rec(lambda a: a["start_time"] == "2026-12-01T09:00:00.000Z"
                    and a["finish_time"] == "2026-12-01T09:45:00.000Z" and a["practitioner_id"] == 53
                    and a["site_id"] == SITE_2 and a["metadata"] == {"syncd_id": "x"} and a["state"] == "Confirmed"))),
    ("p10.6-start-move-keeps-duration",
     Case("PUT", A, put(start_time="2026-12-03T08:00:00Z"),
          check=rec(lambda a: a["finish_time"] == "2026-12-03T08:30:00.000Z" and a["duration"] == 30))),
    ("p10.6-arrived-reason-locked",
     Case("PUT", A, put(reason="Hygiene"), state="Arrived", status=422,
          error=params_422({"state": [lock("Arrived")]}))),
    ("p10.6-in-surgery-practitioner-locked",
     Case("PUT", A, put(practitioner_id=53), state="In surgery", status=422,
          error=params_422({"state": [lock("In surgery")]}))),
    ("p10.6-confirmed-metadata-locked",
     Case("PUT", A, put(metadata={"syncd_id": "other"}), state="Confirmed", status=422,
          error=params_422({"state": [lock("Confirmed")]}))),
    ("p10.6-current-value-is-no-edit",
     Case("PUT", A, put(start_time="2026-12-01T09:00:00Z", finish_time="2026-12-01T09:30:00.000+00:00",
                        reason="Exam", practitioner_id=52), state="Confirmed")),
    ("p10.6-read-only-fields-ignored",
     Case("PUT", A, put(id=1, uuid="x", created_at="2020-01-01T00:00:00Z", cancellation_reason="x"),
          state="Confirmed", check=rec(lambda a: a["id"] == APPT))),
    ("p10.6-lock-and-bad-value-merged",
     Case("PUT", A, put(finish_time="2026-12-01T08:00:00Z"), state="Confirmed", status=422,
          error=params_422({"state": [lock("Confirmed")], "finish_time": ["must be after start_time"]}))),
    # -- part 10.7: transitions ------------------------------------------------------------------------
    ("p10.7-confirmed-to-completed-refused",
     Case("PUT", A, put(state="Completed"), state="Confirmed", status=422,
          error=params_422({"state": ["can not transition from Confirmed to Completed"]}))),
    ("p10.7-pending-to-in-surgery-refused",
     Case("PUT", A, put(state="In surgery"), status=422,
          error=params_422({"state": ["can not transition from Pending to In surgery"]}))),
    ("p10.7-confirmed-to-pending-ok",
     Case("PUT", A, put(state="Pending"), state="Confirmed", check=rec(lambda a: a["state"] == "Pending"))),
    ("p10.7-pending-to-did-not-attend-ok",
     Case("PUT", A, put(state="Did not attend"),
          check=rec(lambda a: a["state"] == "Did not attend" and a["did_not_attend_at"] is not None))),
    ("p10.7-arrived-to-in-surgery-ok",
     Case("PUT", A, put(state="In surgery"), state="Arrived", check=rec(lambda a: a["in_surgery_at"] is not None))),
    ("p10.7-in-surgery-to-completed-ok",
     Case("PUT", A, put(state="Completed"), state="In surgery", check=rec(lambda a: a["completed_at"] is not None))),
    ("p10.7-arrived-to-pending-refused",
     Case("PUT", A, put(state="Pending"), state="Arrived", status=422,
          error=params_422({"state": ["can not transition from Arrived to Pending"]}))),
    ("p10.7-unknown-state-value",
     Case("PUT", A, put(state="Booked"), status=422, error=params_422({"state": ["is not included in the list"]}))),
    ("p10.7-state-is-case-sensitive",
     Case("PUT", A, put(state="cancelled", cancellation_reason_id=2), status=422,
          check=lambda b: b["error"]["params"]["state"] == ["is not included in the list"])),
    ("p10.7-cancel-needs-reason-id",
     Case("PUT", A, put(state="Cancelled"), state="Confirmed", status=422,
          error=params_422({"cancellation_reason_id": ["can't be blank"]}))),
    ("p10.7-cancel-unknown-reason-id",
     Case("PUT", A, put(state="Cancelled", cancellation_reason_id=99), status=422,
          error=params_422({"cancellation_reason_id": ["is not included in the list"]}))),
    ("p10.7-cancel-sets-reason-and-time",
     Case("PUT", A, put(state="Cancelled", cancellation_reason_id=2),
          check=rec(lambda a: a["cancellation_reason"] == "Cancelled by patient" and a["cancelled_at"] is not None))),
    ("p10.7-reason-id-only-when-cancelling",
     Case("PUT", A, put(cancellation_reason_id=2), state="Confirmed", status=422,
          check=lambda b: list(b["error"]["params"]) == ["cancellation_reason_id"])),
    ("p10.7-terminal-notes-editable",
     Case("PUT", A, put(notes="n\n[syncd] replaced by appointment 2"), state="Cancelled",
          check=rec(lambda a: a["notes"].endswith("appointment 2")))),
    ("p10.7-terminal-state-refused",
     Case("PUT", A, put(state="Pending"), state="Completed", status=422,
          error=params_422({"state": ["can not transition from Completed to Pending"]}))),
    ("p10.7-terminal-fields-locked",
     Case("PUT", A, put(start_time="2026-12-05T09:00:00Z"), state="Did not attend", status=422,
          error=params_422({"state": [lock("Did not attend")]}))),
    ("p10.7-resending-current-state-allowed",
     Case("PUT", A, put(state="Completed"), state="Completed", check=rec(lambda a: a["state"] == "Completed"))),
    ("p4-patch-behaves-as-put",
     Case("PATCH", A, put(patient_id=1014), state="Confirmed", status=422, error=params_422(
         {"state": [lock("Confirmed")], "patient_id": ["can not change patients"]}))),
    # -- part 10.13 ------------------------------------------------------------------------------------
    ("p10.13-cancellation-reasons",
     Case("GET", "/v1/appointment_cancellation_reasons",
          check=lambda b: b == {"appointment_cancellation_reasons": [
              {"id": 1, "reason": "Booked in error"}, {"id": 2, "reason": "Cancelled by patient"},
              {"id": 3, "reason": "Cancelled by practice"}, {"id": 4, "reason": "Other"}]})),
    ("p10.13-if-match-ignored",
     Case("PUT", A, put(notes="x"), headers={**HEADERS, "If-Match": '"stale"'},
          check=rec(lambda a: a["notes"] == "x"))),
]  # fmt: skip


@pytest.mark.parametrize("case", [c for _, c in RULES], ids=[i for i, _ in RULES])
async def test_rule(case: Case) -> None:
    async with running(rate_limits=False) as (sb, client):
        await seed(client, sb.url, appointment(state=case.state, patient_id=case.patient))
        before = sb.sandbox.appointments[APPT]["updated_at"]
        events = len(sb.sandbox.events)
        status, body, headers = await call(
            client, sb.url, case.method, case.path, body=case.body, params=case.params,
            headers=case.headers, skip_user_agent=case.skip_user_agent,
        )  # fmt: skip
        assert status == case.status, body
        if case.error is not None:
            assert body == case.error
        if case.check is not None:
            assert case.check(body), body
        assert "X-RateLimit-Remaining" in headers and "X-RateLimit-Reset" in headers
        if status >= 400 or case.method == "GET":
            # a refused or read-only request changes nothing and notifies nobody
            assert sb.sandbox.appointments[APPT]["updated_at"] == before
            assert len(sb.sandbox.events) == events


async def test_scope_and_scopes_header() -> None:
    async with running(rate_limits=False, token_scopes="patient:read user:read") as (sb, client):
        status, body, headers = await call(client, sb.url, "GET", L, params={"on": "2026-12-01"})
        assert status == 403
        assert body == {
            "error": {
                "type": "invalid_access_error",
                "message": "The access token does not have the required scope: appointment",
            }
        }
        assert headers["X-OAuth-Scopes"] == "patient:read user:read"


async def test_auth_expired_and_revoked() -> None:
    async with running(rate_limits=False) as (sb, client):
        await seed(client, sb.url, appointment())
        assert (await call(client, sb.url, "GET", A))[0] == 200
        # use keeps the token alive: two 13-day gaps are fine
        for _ in range(2):
            sb.sandbox.clock.advance(13 * 86400)
            assert (await call(client, sb.url, "GET", A))[0] == 200
        # idle for more than 14 days of sandbox clock: dead for good
        sb.sandbox.clock.advance(14 * 86400 + 5)
        status, body, _ = await call(client, sb.url, "GET", A)
        assert (status, body) == (401, TOKEN_401)
        sb.sandbox.clock.advance(-14 * 86400)
        assert (await call(client, sb.url, "GET", A))[0] == 401
    async with running(rate_limits=False) as (sb, client):
        assert (await call(client, sb.url, "GET", "/v1/appointment_cancellation_reasons"))[0] == 200
        resp = await client.post(sb.url + "/_sandbox/options", json={"revoked_tokens": ["sandbox-token"]})
        assert resp.status == 200
        status, body, _ = await call(client, sb.url, "GET", "/v1/appointment_cancellation_reasons")
        assert (status, body) == (401, TOKEN_401)


async def _page_through(client: aiohttp.ClientSession, base: str, params: dict[str, str]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    page = 1
    while True:
        status, body, _ = await call(client, base, "GET", L, params={**params, "page": str(page)})
        assert status == 200, body
        seen.extend(body["appointments"])
        if len(body["appointments"]) < int(params.get("per_page", "25")):
            return seen
        page += 1


async def test_change_detection_pages_and_strict_cursor() -> None:
    async with running(rate_limits=False) as (sb, client):
        records = [
            appointment(id=800000 + i, uuid=f"u{i}", start_time=f"2026-12-{1 + i % 20:02d}T09:00:00Z",
                        finish_time=f"2026-12-{1 + i % 20:02d}T09:30:00Z", metadata={})
            for i in range(130)
        ]  # fmt: skip
        await seed(client, sb.url, *records)
        since = "2026-11-22T09:00:00Z"
        got = await _page_through(
            client, sb.url,
            {"updated_after": since, "sort_by": "updated_at", "sort_direction": "desc", "per_page": "50"},
        )  # fmt: skip
        assert len(got) == 130 and len({a["id"] for a in got}) == 130
        stamps = [(a["updated_at"], a["id"]) for a in got]
        assert stamps == sorted(stamps, reverse=True)
        # default page size 25, meta.total and total_pages
        status, body, _ = await call(client, sb.url, "GET", L, params={"updated_after": since})
        assert len(body["appointments"]) == 25 and body["meta"] == {
            "page": 1, "per_page": 25, "total": 130, "total_pages": 6,
        }  # fmt: skip
        # default sort start_time asc, ties by id
        keys = [(a["start_time"], a["id"]) for a in body["appointments"]]
        assert keys == sorted(keys)
        # strictness: a record whose updated_at equals the cursor is not returned
        newest = got[0]
        status, body, _ = await call(client, sb.url, "GET", L, params={"updated_after": newest["updated_at"]})
        assert newest["id"] not in [a["id"] for a in body["appointments"]]
        # a change after the cursor shows up once, with a bumped updated_at
        sb.sandbox.clock.advance(2)
        status, changed, _ = await call(client, sb.url, "PUT", f"/v1/appointments/{800007}", body=put(notes="x"))
        assert status == 200 and changed["appointment"]["updated_at"] > newest["updated_at"]
        status, body, _ = await call(client, sb.url, "GET", L, params={"updated_after": newest["updated_at"]})
        assert [a["id"] for a in body["appointments"]] == [800007]
        # sort by id desc
        status, body, _ = await call(
            client, sb.url, "GET", L, params={"updated_after": since, "sort_by": "id", "sort_direction": "desc"}
        )
        assert body["appointments"][0]["id"] == 800129


async def test_window_filters_and_other_filters() -> None:
    async with running(rate_limits=False, timezone="Europe/London") as (sb, client):
        await seed(
            client, sb.url,
            appointment(id=1, uuid="a", start_time="2026-06-30T23:30:00Z", finish_time="2026-07-01T00:00:00Z"),
            appointment(id=2, uuid="b", start_time="2026-07-01T10:00:00Z", finish_time="2026-07-01T10:30:00Z",
                        practitioner_id=53, state="Confirmed"),
            appointment(id=3, uuid="c", start_time="2026-07-02T10:00:00Z", finish_time="2026-07-02T10:30:00Z"),
        )  # fmt: skip

        async def ids(**params: str) -> list[int]:
            status, body, _ = await call(client, sb.url, "GET", L, params=params)
            assert status == 200, body
            return [a["id"] for a in body["appointments"]]

        # on= is a practice-local day: 23:30Z on 30 June is 00:30 BST on 1 July
        assert await ids(on="2026-07-01") == [1, 2]
        assert await ids(after="2026-07-01T00:00:00Z", before="2026-07-02T00:00:00Z") == [2]
        assert await ids(after="2026-06-01T00:00:00Z", practitioner_id="53") == [2]
        assert await ids(after="2026-06-01T00:00:00Z", state="Pending") == [1, 3]


async def test_version_bumps_and_noop_writes() -> None:
    async with running(rate_limits=False) as (sb, client):
        await seed(client, sb.url, appointment())
        sb.sandbox.clock.set(NOW)
        status, first, _ = await call(client, sb.url, "GET", A)
        stamps = [first["appointment"]["updated_at"]]
        sb.sandbox.clock.advance(-0.5)  # even with the clock stepping back, updated_at only grows
        for i in range(5):
            status, body, _ = await call(client, sb.url, "PUT", A, body=put(notes=f"n{i}"))
            assert status == 200
            stamps.append(body["appointment"]["updated_at"])
        assert stamps == sorted(set(stamps)) and len(stamps) == 6
        events = len(sb.sandbox.events)
        status, body, _ = await call(client, sb.url, "PUT", A, body=put(notes="n4", state="Pending", patient_id=1013))
        assert status == 200 and body["appointment"]["updated_at"] == stamps[-1]
        assert len(sb.sandbox.events) == events
        # overwrite through /_sandbox/records bumps too
        await seed(client, sb.url, {"id": APPT, "notes": "from reception"})
        status, body, _ = await call(client, sb.url, "GET", A)
        assert body["appointment"]["updated_at"] > stamps[-1] and body["appointment"]["notes"] == "from reception"


async def test_delete_and_records_dump() -> None:
    async with running(rate_limits=False) as (sb, client):
        await seed(client, sb.url, appointment(), appointment(id=2, uuid="b"))
        status, body, _ = await call(client, sb.url, "DELETE", A)
        assert status == 204 and body is None
        for method, payload in (("GET", None), ("PUT", put(notes="x")), ("DELETE", None)):
            status, body, _ = await call(client, sb.url, method, A, body=payload)
            assert (status, body) == (404, NOT_FOUND)
        status, body, _ = await call(client, sb.url, "GET", L, params={"after": "2026-01-01"})
        assert [a["id"] for a in body["appointments"]] == [2]
        await seed(client, sb.url, delete=[2])
        dump = await (await client.get(sb.url + "/_sandbox/records")).json()
        by_id = {r["id"]: r for r in dump["records"]}
        assert by_id[APPT]["_deleted_at"] is not None and by_id[2]["_deleted_at"] is not None
        assert by_id[APPT]["_notifications"] == [] and by_id[APPT]["_last_trigger"] == "api"
        assert {p["id"] for p in dump["patients"]} == {1013, 1014}
        assert len(dump["appointment_cancellation_reasons"]) == 4 and dump["webhook_active"] is True
        events = [e["event"] for e in sb.sandbox.events]
        assert events.count("appointment.deleted") == 2


async def test_end_of_day_completion_in_practice_zone() -> None:
    async with running(rate_limits=False) as (sb, client):
        sb.sandbox.clock.set(NOW.replace(month=7, day=1, hour=14))
        await seed(client, sb.url, appointment(start_time="2026-07-01T13:30:00Z", finish_time="2026-07-01T14:00:00Z",
                                               state="Arrived"))  # fmt: skip
        status, body, _ = await call(client, sb.url, "PUT", A, body=put(state="In surgery"))
        assert body["appointment"]["state"] == "In surgery"
        # London is on BST: local midnight is 23:00 UTC
        sb.sandbox.clock.set(NOW.replace(month=7, day=1, hour=22, minute=59, second=59))
        status, body, _ = await call(client, sb.url, "GET", A)
        assert status == 200 and body["appointment"]["state"] == "In surgery"
        sb.sandbox.clock.set(NOW.replace(month=7, day=1, hour=23, minute=0, second=1))
        _, body, _ = await call(client, sb.url, "GET", A)
        assert body["appointment"]["state"] == "Completed"
        assert body["appointment"]["completed_at"] == "2026-07-01T23:00:00.000Z"
        assert body["appointment"]["updated_at"] == "2026-07-01T23:00:00.000Z"
        assert sb.sandbox.events[-1]["event"] == "appointment.updated"
        assert (await call(client, sb.url, "PUT", A, body=put(state="Arrived")))[0] == 422  # terminal now
        # setting the clock through the control API is enough: no vendor request needed
        await seed(
            client, sb.url, appointment(id=2, uuid="b", state="In surgery", in_surgery_at="2026-07-02T09:00:00Z")
        )
        resp = await client.post(sb.url + "/_sandbox/clock", json={"now": "2026-07-02T23:00:00Z"})
        assert resp.status == 200
        assert sb.sandbox.appointments[2]["state"] == "Completed"


# -- faults -------------------------------------------------------------------------------------------
Probe = Callable[[aiohttp.ClientSession, Env], Awaitable[bool]]


async def _probe_status(client: aiohttp.ClientSession, sb: Env) -> bool:
    status, body, _ = await call(client, sb.url, "GET", A)
    return status == 503 and body == {"error": {"type": "api_error", "message": "Internal server error"}}


async def _probe_delay(client: aiohttp.ClientSession, sb: Env) -> bool:
    started = time.monotonic()
    status, _, _ = await call(client, sb.url, "GET", A)
    return status == 200 and time.monotonic() - started >= 0.2


async def _probe_drop(client: aiohttp.ClientSession, sb: Env) -> bool:
    # POST, because aiohttp silently re-sends an idempotent request (PUT, GET) once when the server drops
    # the connection, which would consume a second fault
    count = len(sb.sandbox.appointments)
    try:
        await call(client, sb.url, "POST", L, body=new_appt())
        dropped = False
    except aiohttp.ClientError:
        dropped = True
    assert len(sb.sandbox.appointments) == count + 1  # applied either way
    return dropped


async def _probe_rate_limit(client: aiohttp.ClientSession, sb: Env) -> bool:
    status, body, headers = await call(client, sb.url, "GET", A)
    return (
        status == 429
        and headers.get("Retry-After") == "3"
        and body == {"error": {"type": "rate_limit_error", "message": "Too many requests"}}
    )


async def _probe_mutate(client: aiohttp.ClientSession, sb: Env) -> bool:
    before = len(sb.sandbox.events)
    status, body, _ = await call(client, sb.url, "PUT", A, body=put(notes="syncd"))
    assert status == 200 and body["appointment"]["notes"] == "syncd"
    return len(sb.sandbox.events) - before == 2  # the other user's edit, then ours


async def _probe_auto_confirm(client: aiohttp.ClientSession, sb: Env) -> bool:
    status, body, _ = await call(client, sb.url, "PUT", A, body=put(state="Confirmed", patient_id=1014))
    assert status == 422
    if body == SEED_422:  # the seed thread's race, reproduced: confirmed by SMS between GET and PUT
        await seed(client, sb.url, {"id": APPT, "state": "Pending"})
        return True
    assert body == params_422({"patient_id": ["can not change patients"]})  # still Pending
    return False


async def _probe_hourly(client: aiohttp.ClientSession, sb: Env) -> bool:
    status, body, headers = await call(client, sb.url, "GET", A)
    return (
        status == 403
        and body == {"error": {"type": "invalid_access_error", "message": "Rate limit exceeded"}}
        and headers["X-RateLimit-Remaining"] == "0"
        and "Retry-After" not in headers
    )


async def _probe_total_pages(client: aiohttp.ClientSession, sb: Env) -> bool:
    _, body, _ = await call(client, sb.url, "GET", L, params={"after": "2026-01-01"})
    return "total_pages" not in body["meta"]


async def _probe_ignore_before(client: aiohttp.ClientSession, sb: Env) -> bool:
    _, body, _ = await call(client, sb.url, "GET", L, params={"after": "2026-01-01", "before": "2026-11-01"})
    return body["meta"]["total"] == 1


async def _probe_reject_updated_after(client: aiohttp.ClientSession, sb: Env) -> bool:
    status, body, _ = await call(client, sb.url, "GET", L, params={"updated_after": "2026-11-01T00:00:00Z"})
    return status == 400 and list(body["error"]["params"]) == ["updated_after"]


async def _probe_hang(client: aiohttp.ClientSession, sb: Env) -> bool:
    # the request is held unanswered and never applied; the caller giving up ends it
    count = len(sb.sandbox.appointments)
    try:
        await asyncio.wait_for(call(client, sb.url, "POST", L, body=new_appt()), 0.3)
        held = False
    except (aiohttp.ClientError, TimeoutError):
        held = True
    await asyncio.sleep(0.2)
    assert len(sb.sandbox.appointments) == count + (0 if held else 1)
    return held


FAULTS: list[tuple[str, str, str, dict[str, Any], Probe]] = [
    ("status", "GET", "/v1/appointments/*",
     {"type": "status", "status": 503, "body": {"error": {"type": "api_error", "message": "Internal server error"}}},
     _probe_status),
    ("delay", "GET", "/v1/appointments/*", {"type": "delay", "seconds": 0.25}, _probe_delay),
    ("drop_after_apply", "POST", "/v1/appointments", {"type": "drop_after_apply"}, _probe_drop),
    ("hang", "POST", "/v1/appointments", {"type": "hang", "seconds": 30}, _probe_hang),
    ("rate_limit", "GET", "/v1/appointments/*", {"type": "rate_limit", "retry_after": 3}, _probe_rate_limit),
    ("mutate_before", "PUT", "/v1/appointments/*", {"type": "mutate_before", "changes": {"notes": "reception"}},
     _probe_mutate),
    ("auto_confirm", "PUT", "/v1/appointments/*", {"type": "auto_confirm"}, _probe_auto_confirm),
    ("rate_limit_hourly", "*", "/v1/*", {"type": "rate_limit_hourly"}, _probe_hourly),
    ("omit_total_pages", "GET", "/v1/appointments", {"type": "omit_total_pages"}, _probe_total_pages),
    ("ignore_before", "GET", "/v1/appointments", {"type": "ignore_before"}, _probe_ignore_before),
    ("reject_updated_after", "GET", "/v1/appointments", {"type": "reject_updated_after"},
     _probe_reject_updated_after),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "action", "probe"), [f[1:] for f in FAULTS], ids=[f"fault-{f[0]}" for f in FAULTS]
)
async def test_fault_fires_exactly_times(method: str, path: str, action: dict[str, Any], probe: Probe) -> None:
    async with running(rate_limits=False) as (sb, client):
        await seed(client, sb.url, appointment())
        await add_fault(client, sb.url, method, path, action, times=2)
        outcomes = [await probe(client, sb) for _ in range(3)]
        assert outcomes == [True, True, False]
        faults = await (await client.get(sb.url + "/_sandbox/faults")).json()
        assert faults["faults"] == [] and faults["fired"][action["type"]] == 2


async def test_unknown_fault_type_refused() -> None:
    async with running(rate_limits=False) as (sb, client):
        resp = await client.post(sb.url + "/_sandbox/faults", json={"match": {}, "action": {"type": "nope"}})
        assert resp.status == 400


# -- rate limits --------------------------------------------------------------------------------------
async def test_rate_limits_burst_and_hourly() -> None:
    async with running(per_second=3, per_hour=5) as (sb, client):
        await seed(client, sb.url, appointment())
        results = [await call(client, sb.url, "GET", A) for _ in range(4)]
        assert [r[0] for r in results] == [200, 200, 200, 429]
        assert results[3][1] == {"error": {"type": "rate_limit_error", "message": "Too many requests"}}
        assert results[3][2]["Retry-After"] == "1"
        assert [r[2]["X-RateLimit-Remaining"] for r in results] == ["4", "3", "2", "2"]
        reset = int(results[0][2]["X-RateLimit-Reset"])
        assert reset == int(sb.sandbox.hour_start or 0) + 3600
        sb.sandbox.clock.advance(1.5)
        assert [(await call(client, sb.url, "GET", A))[0] for _ in range(2)] == [200, 200]
        sb.sandbox.clock.advance(1.5)
        status, body, headers = await call(client, sb.url, "GET", A)
        assert status == 403 and body == {"error": {"type": "invalid_access_error", "message": "Rate limit exceeded"}}
        assert "Retry-After" not in headers and headers["X-RateLimit-Remaining"] == "0"
        sb.sandbox.clock.advance(3600)
        status, _, headers = await call(client, sb.url, "GET", A)
        assert status == 200 and headers["X-RateLimit-Remaining"] == "4"
        # headers on every answer, errors included
        status, _, headers = await call(client, sb.url, "GET", "/v1/appointments/1")
        assert status == 404 and headers["X-RateLimit-Limit"] == "5"


async def test_rate_limits_off() -> None:
    async with running(rate_limits=False, per_second=1, per_hour=2) as (sb, client):
        statuses = [(await call(client, sb.url, "GET", "/v1/appointment_cancellation_reasons"))[0] for _ in range(6)]
        assert statuses == [200] * 6


# -- webhooks -----------------------------------------------------------------------------------------
def _verify(headers: dict[str, str], body: bytes, secret: str = "sandbox-webhook-secret") -> bool:
    stamp = headers["X-Syncd-Timestamp"]
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Syncd-Signature"], f"v1={expected}")


async def test_signature_worked_example() -> None:
    async with running(rate_limits=False) as (sb, _):
        body = b'{"ids":["08pxx0000004KGGAA2"]}'
        assert len(body) == 30
        assert sb.sandbox.sign(1795345200, body) == (
            "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"
        )


async def test_webhooks_delivered_and_signed() -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with running(rate_limits=False, webhook_url=receiver.url) as (sb, client):
            await seed(client, sb.url, appointment())
            _, created, _ = await call(client, sb.url, "POST", L, body=new_appt())
            new_id = created["appointment"]["id"]
            await call(client, sb.url, "PUT", A, body=put(notes="a"))
            await call(client, sb.url, "PUT", A, body=put(notes="a"))  # no change: no webhook
            await add_fault(client, sb.url, "GET", "/v1/appointments/*",
                            {"type": "mutate_before", "changes": {"state": "Confirmed"}})  # fmt: skip
            await call(client, sb.url, "GET", A)
            await call(client, sb.url, "DELETE", f"/v1/appointments/{new_id}")
            await sb.sandbox.wait_webhooks()
            seen = [(e["event"], e["data"]["id"]) for e in receiver.events()]
            assert sorted(seen) == sorted([
                ("appointment.created", APPT), ("appointment.created", new_id), ("appointment.updated", APPT),
                ("appointment.updated", APPT), ("appointment.deleted", new_id),
            ])  # fmt: skip
            for headers, body in receiver.posts:
                assert _verify(headers, body)
                assert abs(int(headers["X-Syncd-Timestamp"]) - sb.sandbox.clock.timestamp()) < 5
                event = json.loads(body)
                assert set(event) == {"id", "event", "created_at", "data"}
                assert set(event["data"]) == {"id", "uuid"} and event["created_at"].endswith("Z")
    finally:
        await receiver.stop()


async def test_webhook_retries_same_id_fresh_signature() -> None:
    receiver = Receiver(statuses=[500, 503])
    await receiver.start()
    try:
        async with running(
            rate_limits=False, webhook_url=receiver.url, webhook_retry_base_seconds=0.05, webhook_retry_cap_seconds=0.1
        ) as (sb, client):
            await seed(client, sb.url, appointment())
            while len(receiver.posts) < 3:
                receiver.got.clear()
                await asyncio.wait_for(receiver.got.wait(), 5)
                sb.sandbox.clock.advance(10)  # the next attempt carries a new timestamp
            await sb.sandbox.wait_webhooks()
            assert len(receiver.posts) == 3
            ids = {json.loads(body)["id"] for _, body in receiver.posts}
            stamps = {headers["X-Syncd-Timestamp"] for headers, _ in receiver.posts}
            assert len(ids) == 1 and len(stamps) == 3
            assert all(_verify(headers, body) for headers, body in receiver.posts)
            assert [w["status"] for w in sb.sandbox.webhooks_sent] == [500, 503, 200]
    finally:
        await receiver.stop()


async def test_webhook_deactivated_after_50_failures_and_drop_fault() -> None:
    receiver = Receiver(statuses=[500] * 60)
    await receiver.start()
    try:
        async with running(
            rate_limits=False, webhook_url=receiver.url, webhook_retry_base_seconds=0.001,
            webhook_retry_cap_seconds=0.002,
        ) as (sb, client):  # fmt: skip
            await seed(client, sb.url, appointment())
            await sb.sandbox.wait_webhooks()
            assert len(receiver.posts) == 50
            dump = await (await client.get(sb.url + "/_sandbox/records")).json()
            assert dump["webhook_active"] is False
            await call(client, sb.url, "PUT", A, body=put(notes="later"))
            await sb.sandbox.wait_webhooks()
            assert len(receiver.posts) == 50
            # an admin turns it back on; webhook_drop then skips exactly `times` deliveries
            receiver.statuses.clear()
            await seed(client, sb.url, webhook_active=True)
            await add_fault(client, sb.url, "*", "*", {"type": "webhook_drop"}, times=2)
            for i in range(3):
                status, _, _ = await call(client, sb.url, "PUT", A, body=put(notes=f"n{i}"))
                assert status == 200  # the webhook_drop fault never touches requests
            await sb.sandbox.wait_webhooks()
            assert len(receiver.posts) == 51
            faults = await (await client.get(sb.url + "/_sandbox/faults")).json()
            assert faults["faults"] == [] and faults["fired"]["webhook_drop"] == 2
    finally:
        await receiver.stop()


# -- seeding from the shared data set ----------------------------------------------------------------
async def test_seed_body_from_dataset() -> None:
    dataset = generate(50, now=NOW)
    body, rows = seed_body(dataset)
    assert (body, rows) == seed_body(generate(50, now=NOW))  # deterministic
    kinds = {kind for kind, _, _ in rows}
    assert kinds == {"patient", "practitioner", "location", "service", "appointment"}
    appointment_rows = {key: ext for kind, key, ext in rows if kind == "appointment"}
    assert len(appointment_rows) == 50
    async with running(rate_limits=False) as (sb, client):
        resp = await client.post(sb.url + "/_sandbox/records", json=body)
        assert resp.status == 200, await resp.text()
        listed = await _page_through(
            client, sb.url, {"after": "2026-11-01T00:00:00Z", "before": "2027-03-01T00:00:00Z", "per_page": "100"}
        )
        assert {str(a["id"]) for a in listed} == set(appointment_rows.values())
        by_key = {a.key: a for a in dataset.appointments}
        for key, ext in list(appointment_rows.items())[:10]:
            status, got, _ = await call(client, sb.url, "GET", f"/v1/appointments/{ext}")
            assert status == 200
            a = got["appointment"]
            src = by_key[key]
            assert a["start_time"] == src.start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            assert a["state"] == {"booked": "Confirmed", "pending": "Pending"}[src.status]
            assert a["duration"] == (src.end - src.start) // timedelta(minutes=1)
            patient_ext = next(e for k, kk, e in rows if k == "patient" and kk == src.patient)
            assert str(a["patient_id"]) == patient_ext
            status, _, _ = await call(client, sb.url, "GET", f"/v1/patients/{patient_ext}")
            assert status == 200
        # a seeded Confirmed record obeys the seed rule like any other
        confirmed = next(a for a in listed if a["state"] == "Confirmed")
        status, err, _ = await call(
            client, sb.url, "PUT", f"/v1/appointments/{confirmed['id']}",
            body=put(state="Confirmed", patient_id=confirmed["patient_id"] + 1),
        )  # fmt: skip
        assert status == 422 and err == SEED_422
