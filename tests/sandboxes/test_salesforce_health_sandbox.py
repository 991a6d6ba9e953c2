"""The Salesforce Health Cloud sandbox against docs/vendors/salesforce_health.md (§1-§10) and the seed document.

Every request is hand-written with aiohttp: these tests check the sandbox's wire protocol, not a connector.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from connectors.salesforce_health.sandbox import seed_body
from syncd.sandboxkit import start_sandbox
from syncd.sandboxkit.seedgen import generate
from tests.sandboxes._salesforce_health_support import (
    APPT,
    CHANNEL,
    CONNECT,
    DEVICE,
    DR,
    DR2,
    DROP,
    FACILITY,
    MISSING,
    PATIENT,
    PATIENT2,
    SA,
    SCHED,
    TAKEN,
    WT,
    WT_CHANNEL,
    V,
    Wire,
    appointment,
    base_seed,
    ehr_body,
    ls_body,
    participants,
)

FIELDS = "Id,Status,StatusCategory,SchedStartTime,SystemModstamp,Syncd_Id__c"


@pytest.fixture
async def env() -> AsyncIterator[tuple[Any, Wire]]:
    running = await start_sandbox("salesforce_health", port=0)
    async with aiohttp.ClientSession() as session:
        wire = Wire(session, running.url)
        await wire.control("POST", "/_sandbox/records", base_seed())
        login = await wire.login()
        assert login.status == 200
        yield running, wire
    await running.stop()


def feed_params(start: datetime, end: datetime) -> str:
    def enc(t: datetime) -> str:
        return quote(t.strftime("%Y-%m-%dT%H:%M:%S+00:00"), safe="")

    return f"?start={enc(start)}&end={enc(end)}"


# ---------------------------------------------------------------------------------------------
# the rule table
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    method: str
    path: str
    body: Any = None
    status: int = 200
    code: str | None = None  # errorCode (array body, or Connect error[0]); None = success
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # raw body text instead of JSON


def ok_put(rid: str = SCHED, **kw: Any) -> Case:
    return Case("PUT", f"{CONNECT}/{rid}", ls_body(rid, **kw))


def bad_put(code: str, status: int = 200, rid: str = SCHED, **kw: Any) -> Case:
    return Case("PUT", f"{CONNECT}/{rid}", ls_body(rid, **kw), status, code)


def cancel(rid: str, http: int = 200, code: str | None = None, **kw: Any) -> Case:
    body = {"id": rid, "status": "Canceled", "cancellationReason": "Patient request", **kw}
    return Case("PATCH", f"{CONNECT}/{rid}", {k: v for k, v in body.items() if v is not DROP}, http, code)


def spatch(rid: str, body: dict[str, Any], status: int = 204, code: str | None = None, **headers: str) -> Case:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return Case("PATCH", f"{SA}/{rid}", body, status, code, headers=hdrs)


def q(soql: str, status: int = 200, code: str | None = None) -> Case:
    return Case("GET", f"{V}/query?q={quote(soql)}", None, status, code)


PRAC = {"reference": f"Practitioner/{DR}"}
PAT = {"reference": f"Patient/{PATIENT}"}
FAC = {"reference": f"Facility/{FACILITY}"}

CASES: list[tuple[str, Case]] = [
    # seed: both body forms
    ("seed:put-ls-form", ok_put()),
    ("seed:put-ehr-form", Case("PUT", f"{CONNECT}/{SCHED}", ehr_body())),
    ("seed:put-v66-resource-example", Case("PUT", f"/services/data/v66.0{CONNECT[len(V) :]}/{SCHED}", ls_body())),
    (
        "seed:available-version-65-only",
        Case("PUT", f"/services/data/v64.0{CONNECT[len(V) :]}/{SCHED}", ls_body(), 404, "NOT_FOUND"),
    ),
    ("seed:id-required", bad_put("MISSING_REQUIRED_FIELD", id=DROP)),
    ("seed:startDate-required", bad_put("MISSING_REQUIRED_FIELD", startDate=DROP)),
    ("seed:endDate-required", bad_put("MISSING_REQUIRED_FIELD", endDate=DROP)),
    ("seed:participants-required", bad_put("MISSING_REQUIRED_FIELD", participants=DROP)),
    ("seed:participants-patient-required", bad_put("MISSING_REQUIRED_FIELD", participants=[PRAC, FAC])),
    ("seed:participants-facility-required", bad_put("MISSING_REQUIRED_FIELD", participants=[PAT, PRAC])),
    ("seed:participants-provider-or-device-required", bad_put("MISSING_REQUIRED_FIELD", participants=[PAT, FAC])),
    ("seed:participants-device-only", ok_put(participants=[PAT, FAC, {"reference": f"Device/{DEVICE}"}])),
    ("seed:participants-provider-and-device", ok_put(participants=[PAT, FAC, PRAC, {"reference": f"Device/{DEVICE}"}])),
    ("seed:participants-multi-provider", ok_put(participants=[PAT, FAC, PRAC, {"reference": f"Practitioner/{DR2}"}])),
    (
        "seed:participants-one-patient",
        bad_put("INVALID_REFERENCE", participants=[PAT, {"reference": f"Patient/{PATIENT2}"}, FAC, PRAC]),
    ),
    ("seed:isReferenceRequired-optional", ok_put(participants=[PAT, FAC, PRAC])),
    ("seed:service-field-required", bad_put("MISSING_REQUIRED_FIELD", workTypeId=DROP)),
    (
        "seed:appointmentTypes-needs-sourceSystem",
        bad_put("MISSING_REQUIRED_FIELD", workTypeId=DROP, appointmentTypes=["FOLLOWUP"]),
    ),
    (
        "seed:appointmentTypes-with-sourceSystem",
        ok_put(workTypeId=DROP, appointmentTypes=["FOLLOWUP"], sourceSystem="cerner"),
    ),
    ("seed:serviceTypes-with-sourceSystem", ok_put(workTypeId=DROP, serviceTypes=["st1"], sourceSystem="cerner")),
    (
        "seed:serviceCategories-needs-sourceSystem",
        bad_put("MISSING_REQUIRED_FIELD", workTypeId=DROP, serviceCategories=["sc1"]),
    ),
    (
        "seed:serviceCategories-with-sourceSystem",
        ok_put(workTypeId=DROP, serviceCategories=["sc1"], sourceSystem="cerner"),
    ),
    ("seed:workTypeId-without-sourceSystem", ok_put(sourceSystem=DROP)),
    ("seed:channelId-required-for-visit-type", bad_put("MISSING_REQUIRED_FIELD", workTypeId=WT_CHANNEL)),
    ("seed:channelId-given-for-visit-type", ok_put(workTypeId=WT_CHANNEL, channelId=CHANNEL)),
    ("seed:channelId-optional-otherwise", ok_put(channelId=DROP)),
    (
        "seed:slots-required-external-resource",
        Case("PUT", f"{CONNECT}/{SCHED}", ehr_body(slots=DROP), 200, "MISSING_REQUIRED_FIELD"),
    ),
    (
        "seed:slots-reference-matches-practitioner",
        Case("PUT", f"{CONNECT}/{SCHED}", ehr_body(slots=[{"id": "s1", "reference": DR}]), 200, "INVALID_REFERENCE"),
    ),
    ("seed:optional-comment-specialties-timezone", ok_put(comment=DROP, timeZone=DROP, specialties=["cardio"])),
    # part 10 item 3: references must name seeded records of the right type
    (
        "p10.3-unknown-patient",
        bad_put("INVALID_REFERENCE", participants=[{"reference": f"Patient/{PATIENT2[:-4]}ZZZZ"}, FAC, PRAC]),
    ),
    (
        "p10.3-patient-of-wrong-type",
        bad_put("INVALID_REFERENCE", participants=[{"reference": f"Patient/{FACILITY}"}, FAC, PRAC]),
    ),
    (
        "p10.3-unknown-facility",
        bad_put("INVALID_REFERENCE", participants=[PAT, {"reference": f"Facility/{PATIENT}"}, PRAC]),
    ),
    (
        "p10.3-unknown-practitioner",
        bad_put("INVALID_REFERENCE", participants=[PAT, FAC, {"reference": f"Practitioner/{WT}"}]),
    ),
    ("p10.3-unknown-work-type", bad_put("INVALID_REFERENCE", workTypeId=CHANNEL)),
    ("p10.3-unknown-channel", bad_put("INVALID_REFERENCE", channelId=WT)),
    ("p10.3-malformed-reference", bad_put("INVALID_REFERENCE", participants=[{"reference": "Patient"}, FAC, PRAC])),
    ("p10.3-create-new-08p-id", Case("POST", CONNECT, ls_body(None), 201)),
    # part 10 items 4-5 on create
    (
        "p10.4-create-missing-participants",
        Case("POST", CONNECT, ls_body(None, participants=DROP), 200, "MISSING_REQUIRED_FIELD"),
    ),
    ("p10.4-create-ehr-form", Case("POST", CONNECT, ehr_body(None), 201)),
    (
        "p10.4-create-channel-required",
        Case("POST", CONNECT, ls_body(None, workTypeId=WT_CHANNEL), 200, "MISSING_REQUIRED_FIELD"),
    ),
    ("p10.5-id-differs-from-path", bad_put("INVALID_INPUT", status=400, id=APPT["None"])),
    ("p10.5-end-before-start", bad_put("INVALID_TIME_RANGE", endDate="2026-12-10T09:00:00Z")),
    ("p10.5-end-equals-start", bad_put("INVALID_TIME_RANGE", endDate="2026-12-10T10:00:00Z")),
    ("p10.5-timezone-iana", bad_put("INVALID_INPUT", status=400, timeZone="CET+1")),
    ("p10.5-offsetless-time", ok_put(startDate="2026-12-10T10:00:00", endDate="2026-12-10T10:30:00")),
    ("p6-malformed-json", Case("PUT", f"{CONNECT}/{SCHED}", None, 400, "JSON_PARSER_ERROR", raw="{not json")),
    ("p6-unknown-connect-field", bad_put("JSON_PARSER_ERROR", status=400, Status="Completed")),
    ("p6-unknown-id-404", Case("PUT", f"{CONNECT}/{MISSING}", ls_body(MISSING), 404, "NOT_FOUND")),
    # part 10 item 7: state table on PUT
    ("p10.7-put-on-none", ok_put(APPT["None"])),
    ("p10.7-put-on-dispatched", ok_put(APPT["Dispatched"])),
    ("p10.7-put-on-in-progress", bad_put("INVALID_STATE", rid=APPT["In Progress"])),
    ("p10.7-put-on-completed", bad_put("INVALID_STATE", rid=APPT["Completed"])),
    ("p10.7-put-on-cannot-complete", bad_put("INVALID_STATE", rid=APPT["Cannot Complete"])),
    ("p10.7-put-on-canceled", bad_put("INVALID_STATE", rid=APPT["Canceled"])),
    # cancel
    ("p10.7-cancel-scheduled", cancel(SCHED)),
    ("p10.7-cancel-none", cancel(APPT["None"])),
    ("p10.7-cancel-dispatched", cancel(APPT["Dispatched"])),
    ("p10.7-cancel-status-case-insensitive", cancel(SCHED, status="CANCELED")),
    ("p10.7-cancel-needs-canceled-category", cancel(SCHED, code="INVALID_STATUS", status="Completed")),
    ("p10.7-cancel-british-spelling-refused", cancel(SCHED, code="INVALID_STATUS", status="Cancelled")),
    ("p10.7-cancel-status-required", cancel(SCHED, code="MISSING_REQUIRED_FIELD", status=DROP)),
    ("p10.7-cancel-id-required", cancel(SCHED, code="MISSING_REQUIRED_FIELD", id=DROP)),
    ("p10.7-cancel-id-differs", cancel(SCHED, http=400, code="INVALID_INPUT", id=APPT["None"])),
    ("p10.7-cancel-already-canceled-noop", cancel(APPT["Canceled"])),
    ("p10.7-cancel-completed", cancel(APPT["Completed"], code="INVALID_STATE")),
    ("p10.7-cancel-cannot-complete", cancel(APPT["Cannot Complete"], code="INVALID_STATE")),
    ("p10.7-cancel-in-progress", cancel(APPT["In Progress"], code="INVALID_STATE")),
    # sObject PATCH
    ("p10.7-patch-scheduled-to-dispatched", spatch(SCHED, {"Status": "Dispatched"})),
    ("p10.7-patch-scheduled-to-none", spatch(SCHED, {"Status": "None"})),
    ("p10.7-patch-none-to-scheduled", spatch(APPT["None"], {"Status": "Scheduled"})),
    (
        "p10.7-patch-none-to-completed",
        spatch(APPT["None"], {"Status": "Completed"}, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ),
    ("p10.7-patch-dispatched-to-in-progress", spatch(APPT["Dispatched"], {"Status": "In Progress"})),
    (
        "p10.7-patch-dispatched-to-none",
        spatch(APPT["Dispatched"], {"Status": "None"}, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ),
    ("p10.7-patch-in-progress-to-completed", spatch(APPT["In Progress"], {"Status": "Completed"})),
    ("p10.7-patch-in-progress-to-cannot-complete", spatch(APPT["In Progress"], {"Status": "Cannot Complete"})),
    (
        "p10.7-patch-in-progress-to-canceled",
        spatch(APPT["In Progress"], {"Status": "Canceled"}, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ),
    (
        "p10.7-patch-completed-to-scheduled",
        spatch(APPT["Completed"], {"Status": "Scheduled"}, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ),
    (
        "p10.7-patch-canceled-to-scheduled",
        spatch(APPT["Canceled"], {"Status": "Scheduled"}, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ),
    ("p10.7-patch-same-status-noop", spatch(APPT["Completed"], {"Status": "Completed"})),
    (
        "p10.7-patch-unknown-status-value",
        spatch(SCHED, {"Status": "Booked"}, 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ),
    ("p10.7-patch-comments-any-state", spatch(APPT["Completed"], {"Comments": "late note"})),
    ("p10.7-patch-description-any-state", spatch(APPT["Canceled"], {"Description": "d"})),
    ("p10.7-patch-cancellation-reason", spatch(APPT["Canceled"], {"CancellationReason": "Other"})),
    (
        "p10.7-patch-other-field",
        spatch(SCHED, {"SchedStartTime": "2026-12-10T10:00:00Z"}, 400, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ),
    ("p10.7-patch-unknown-field", spatch(SCHED, {"Foo__c": "x"}, 400, "INVALID_FIELD_FOR_INSERT_UPDATE")),
    ("p10.7-patch-syncd-id-set-once", spatch(SCHED, {"Syncd_Id__c": "apt_new"})),
    ("p10.7-patch-syncd-id-same-value", spatch(TAKEN, {"Syncd_Id__c": "apt_taken"})),
    (
        "p10.7-patch-syncd-id-change-refused",
        spatch(TAKEN, {"Syncd_Id__c": "apt_other"}, 400, "FIELD_INTEGRITY_EXCEPTION"),
    ),
    ("p10.7-patch-syncd-id-unique", spatch(SCHED, {"Syncd_Id__c": "apt_taken"}, 400, "DUPLICATE_VALUE")),
    (
        "p10.7-if-unmodified-since-stale",
        spatch(
            SCHED, {"Comments": "x"}, 412, "PRECONDITION_FAILED", If_Unmodified_Since="Thu, 19 Nov 2026 10:00:00 GMT"
        ),
    ),
    (
        "p10.7-if-unmodified-since-current",
        spatch(SCHED, {"Comments": "x"}, If_Unmodified_Since="Fri, 20 Nov 2026 10:00:00 GMT"),
    ),
    ("p6-patch-unknown-id", spatch(MISSING, {"Comments": "x"}, 404, "NOT_FOUND")),
    ("p6-patch-malformed-json", Case("PATCH", f"{SA}/{SCHED}", None, 400, "JSON_PARSER_ERROR", raw="[1,")),
    # reads
    ("p3-get-one", Case("GET", f"{SA}/{SCHED}?fields={FIELDS}")),
    ("p3-get-one-15-char-id", Case("GET", f"{SA}/{SCHED[:15]}")),
    ("p3-get-one-unknown", Case("GET", f"{SA}/{MISSING}", status=404, code="NOT_FOUND")),
    ("p3-get-one-bad-field", Case("GET", f"{SA}/{SCHED}?fields=Id,Nope", status=400, code="INVALID_FIELD")),
    (
        "p10.10-composite-ok",
        Case("GET", f"{V}/composite/sobjects/ServiceAppointment?ids={SCHED},{MISSING}&fields={FIELDS}"),
    ),
    (
        "p10.10-composite-ids-required",
        Case("GET", f"{V}/composite/sobjects/ServiceAppointment?fields={FIELDS}", status=400, code="MISSING_ARGUMENT"),
    ),
    (
        "p10.10-composite-fields-required",
        Case("GET", f"{V}/composite/sobjects/ServiceAppointment?ids={SCHED}", status=400, code="MISSING_ARGUMENT"),
    ),
    (
        "p10.10-composite-over-200-ids",
        Case(
            "GET",
            f"{V}/composite/sobjects/ServiceAppointment?ids=" + ",".join([SCHED] * 201) + f"&fields={FIELDS}",
            status=400,
            code="LIMIT_EXCEEDED",
        ),
    ),
    (
        "p10.10-composite-200-ids",
        Case("GET", f"{V}/composite/sobjects/ServiceAppointment?ids=" + ",".join([SCHED] * 200) + f"&fields={FIELDS}"),
    ),
    (
        "p10.10-composite-unknown-field",
        Case(
            "GET",
            f"{V}/composite/sobjects/ServiceAppointment?ids={SCHED}&fields=Id,Bogus",
            status=400,
            code="INVALID_FIELD",
        ),
    ),
    # queries (part 10 item 11)
    (
        "p10.11-window-query",
        q(
            "SELECT Id, SystemModstamp FROM ServiceAppointment WHERE SchedStartTime >= "
            "2026-11-15T00:00:00Z AND SchedStartTime < 2027-02-21T00:00:00Z ORDER BY Id"
        ),
    ),
    (
        "p10.11-window-query-extra-fields-any-case",
        q(
            "select Id,SystemModstamp,Status from serviceappointment\n where "
            "SchedStartTime>=2026-11-15T00:00:00Z and SchedStartTime<"
            "2027-02-21T00:00:00Z order by Id"
        ),
    ),
    (
        "p10.11-assigned-resource-query",
        q(
            f"SELECT ServiceAppointmentId, ServiceResourceId FROM AssignedResource "
            f"WHERE ServiceAppointmentId IN ('{SCHED}','{APPT['None']}')"
        ),
    ),
    ("p10.11-syncd-id-query", q("SELECT Id FROM ServiceAppointment WHERE Syncd_Id__c = 'apt_taken'")),
    (
        "p10.11-orphan-create-query",
        q(
            f"SELECT Id, Syncd_Id__c FROM ServiceAppointment WHERE ParentRecordId = "
            f"'{PATIENT}' AND SchedStartTime = 2026-12-10T09:00:00Z AND Syncd_Id__c = null"
        ),
    ),
    ("p10.11-other-shape", q("SELECT Id FROM ServiceAppointment", 400, "MALFORMED_QUERY")),
    ("p10.11-other-where", q("SELECT Id FROM ServiceAppointment WHERE Status = 'Scheduled'", 400, "MALFORMED_QUERY")),
    (
        "p10.11-missing-shape-field",
        q(
            "SELECT Id FROM ServiceAppointment WHERE SchedStartTime >= "
            "2026-11-15T00:00:00Z AND SchedStartTime < 2027-02-21T00:00:00Z",
            400,
            "MALFORMED_QUERY",
        ),
    ),
    (
        "p10.11-unknown-field",
        q("SELECT Id, Nope__c FROM ServiceAppointment WHERE Syncd_Id__c = 'x'", 400, "INVALID_FIELD"),
    ),
    ("p10.11-other-object", q("SELECT Id FROM Account WHERE Syncd_Id__c = 'x'", 400, "MALFORMED_QUERY")),
    (
        "p9-idempotency-search-as-documented",
        Case("GET", f"{V}/query?q=SELECT+Id+FROM+ServiceAppointment+WHERE+Syncd_Id__c+%3D+%27apt_taken%27"),
    ),
    # delete (part 10 item 12)
    ("p10.12-delete", Case("DELETE", f"{SA}/{SCHED}", status=204)),
    ("p10.12-delete-unknown", Case("DELETE", f"{SA}/{MISSING}", status=404, code="NOT_FOUND")),
    # auth header form (part 1)
    (
        "p1-authorization-not-bearer",
        Case("GET", f"{SA}/{SCHED}", status=401, code="INVALID_AUTH_HEADER", headers={"Authorization": "Basic abc"}),
    ),
    (
        "p1-unknown-token",
        Case("GET", f"{SA}/{SCHED}", status=401, code="INVALID_SESSION_ID", headers={"Authorization": "Bearer nope"}),
    ),
    (
        "p1-media-type",
        Case(
            "PATCH",
            f"{SA}/{SCHED}",
            None,
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            raw="Comments=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ),
]


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[i for i, _ in CASES])
async def test_rule(env: tuple[Any, Wire], case: Case) -> None:
    _, wire = env
    if case.raw is not None:
        headers = {"Content-Type": "application/json", **case.headers}
        answer = await wire.raw(case.method, case.path, data=case.raw, headers=headers)
    else:
        answer = await wire.raw(case.method, case.path, json_body=case.body, headers=case.headers)
    assert answer.status == case.status, answer
    assert "Sforce-Limit-Info" in answer.headers
    if answer.status >= 400:
        assert isinstance(answer.body, list) and answer.body[0]["errorCode"] == case.code, answer.body
        assert isinstance(answer.body[0]["message"], str)
        return
    if "/connect/" in case.path:
        assert set(answer.body) == {"id", "isSuccess", "status", "error"}
        if case.code is None:
            assert answer.body["isSuccess"] is True, answer.body
            assert answer.body["error"] == []
            assert answer.body["id"].startswith("08p") and len(answer.body["id"]) == 18
        else:
            assert answer.body["isSuccess"] is False, answer.body
            assert answer.body["error"][0]["errorCode"] == case.code, answer.body
    else:
        assert case.code is None


# ---------------------------------------------------------------------------------------------
# write semantics
# ---------------------------------------------------------------------------------------------
async def test_put_replaces_scheduling_data_and_keeps_status(env: tuple[Any, Wire]) -> None:
    running, wire = env
    running.sandbox.clock.set(datetime(2026, 11, 22, 10, 15, 3, tzinfo=UTC))
    body = ls_body(
        SCHED,
        participants=participants(f"Patient/{PATIENT2}", f"Facility/{FACILITY}", f"Practitioner/{DR2}"),
        channelId=CHANNEL,
    )
    answer = await wire.put(f"{CONNECT}/{SCHED}", body)
    assert answer.body == {"id": SCHED, "isSuccess": True, "status": "scheduled", "error": []}
    rec = await wire.record(SCHED)
    assert rec["SchedStartTime"] == "2026-12-10T10:00:00.000+0000"
    assert rec["ParentRecordId"] == PATIENT2
    assert rec["EngagementChannelTypeId"] == CHANNEL
    assert rec["Comments"] == "moved"
    assert rec["Status"] == "Scheduled"
    assert rec["SystemModstamp"] == rec["LastModifiedDate"] == "2026-11-22T10:15:03.000+0000"
    ar = await wire.get(
        f"{V}/query",
        params={
            "q": f"SELECT ServiceAppointmentId, ServiceResourceId FROM "
            f"AssignedResource WHERE ServiceAppointmentId IN ('{SCHED}')"
        },
    )
    assert [r["ServiceResourceId"] for r in ar.body["records"]] == [DR2]
    # a field left out is cleared; an identical PUT bumps nothing
    running.sandbox.clock.advance(5)
    body.pop("comment")
    await wire.put(f"{CONNECT}/{SCHED}", body)
    rec2 = await wire.record(SCHED)
    assert rec2["Comments"] is None and rec2["SystemModstamp"] == "2026-11-22T10:15:08.000+0000"
    running.sandbox.clock.advance(5)
    again = await wire.put(f"{CONNECT}/{SCHED}", body)
    assert again.body["isSuccess"] is True
    assert (await wire.record(SCHED))["SystemModstamp"] == "2026-11-22T10:15:08.000+0000"


async def test_offsetless_time_read_in_time_zone(env: tuple[Any, Wire]) -> None:
    _, wire = env
    body = ls_body(SCHED, startDate="2026-12-10T10:00:00", endDate="2026-12-10T10:30:00", timeZone="Europe/Madrid")
    assert (await wire.put(f"{CONNECT}/{SCHED}", body)).body["isSuccess"] is True
    assert (await wire.record(SCHED))["SchedStartTime"] == "2026-12-10T09:00:00.000+0000"
    body.pop("timeZone")
    await wire.put(f"{CONNECT}/{SCHED}", body)
    assert (await wire.record(SCHED))["SchedStartTime"] == "2026-12-10T10:00:00.000+0000"


async def test_create_then_syncd_id_and_search(env: tuple[Any, Wire]) -> None:
    _, wire = env
    created = await wire.post(CONNECT, ls_body(None))
    assert created.status == 201 and created.body["status"] == "scheduled"
    new_id = created.body["id"]
    rec = await wire.record(new_id)
    assert rec["Status"] == "Scheduled" and rec["StatusCategory"] == "Scheduled" and rec["Syncd_Id__c"] is None
    orphan = await wire.get(
        f"{V}/query",
        params={
            "q": (
                f"SELECT Id, Syncd_Id__c FROM ServiceAppointment WHERE ParentRecordId = '{PATIENT}' "
                "AND SchedStartTime = 2026-12-10T10:00:00Z AND Syncd_Id__c = null"
            )
        },
    )
    assert [r["Id"] for r in orphan.body["records"]] == [new_id]
    assert (await wire.patch(f"{SA}/{new_id}", {"Syncd_Id__c": "apt_01JD5K8Q2M"})).status == 204
    found = await wire.get(
        f"{V}/query", params={"q": "SELECT Id FROM ServiceAppointment WHERE Syncd_Id__c = 'apt_01JD5K8Q2M'"}
    )
    assert found.body == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "attributes": {"type": "ServiceAppointment", "url": f"{V}/sobjects/ServiceAppointment/{new_id}"},
                "Id": new_id,
            }
        ],
    }
    # case-sensitive
    other = await wire.get(
        f"{V}/query", params={"q": "SELECT Id FROM ServiceAppointment WHERE Syncd_Id__c = 'APT_01JD5K8Q2M'"}
    )
    assert other.body["totalSize"] == 0


async def test_cancel_stores_reason_and_is_noop_when_canceled(env: tuple[Any, Wire]) -> None:
    running, wire = env
    running.sandbox.clock.set(datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC))
    answer = await wire.patch(
        f"{CONNECT}/{SCHED}",
        {"id": SCHED, "status": "Canceled", "cancellationReason": "Patient request", "comment": "bye"},
    )
    assert answer.body == {"id": SCHED, "isSuccess": True, "status": "canceled", "error": []}
    rec = await wire.record(SCHED)
    assert (rec["Status"], rec["StatusCategory"], rec["CancellationReason"], rec["Comments"]) == (
        "Canceled",
        "Canceled",
        "Patient request",
        "bye",
    )
    running.sandbox.clock.advance(30)
    again = await wire.patch(f"{CONNECT}/{SCHED}", {"id": SCHED, "status": "Canceled", "cancellationReason": "X"})
    assert again.body["isSuccess"] is True
    rec2 = await wire.record(SCHED)
    assert rec2["SystemModstamp"] == rec["SystemModstamp"] and rec2["CancellationReason"] == "Patient request"


async def test_same_second_writes_share_a_version(env: tuple[Any, Wire]) -> None:
    running, wire = env
    running.sandbox.clock.set(datetime(2026, 11, 22, 10, 15, 3, 100000, tzinfo=UTC))
    await wire.patch(f"{SA}/{SCHED}", {"Comments": "a"})
    first = (await wire.record(SCHED))["SystemModstamp"]
    await wire.patch(f"{SA}/{SCHED}", {"Description": "b"})
    second = await wire.record(SCHED)
    assert first == second["SystemModstamp"] == "2026-11-22T10:15:03.000+0000"
    running.sandbox.clock.advance(1)
    await wire.patch(f"{SA}/{SCHED}", {"Comments": "c"})
    assert (await wire.record(SCHED))["SystemModstamp"] == "2026-11-22T10:15:04.000+0000"
    # a PATCH that changes nothing bumps nothing
    running.sandbox.clock.advance(10)
    await wire.patch(f"{SA}/{SCHED}", {"Comments": "c", "Status": "Scheduled"})
    assert (await wire.record(SCHED))["SystemModstamp"] == "2026-11-22T10:15:04.000+0000"


async def test_delete_then_reads_and_writes(env: tuple[Any, Wire]) -> None:
    _, wire = env
    assert (await wire.raw("DELETE", f"{SA}/{SCHED}")).status == 204
    assert (await wire.get(f"{SA}/{SCHED}")).body[0]["errorCode"] == "NOT_FOUND"
    again = await wire.raw("DELETE", f"{SA}/{SCHED}")
    assert again.status == 404 and again.body[0]["errorCode"] == "ENTITY_IS_DELETED"
    patched = await wire.patch(f"{SA}/{SCHED}", {"Comments": "x"})
    assert patched.status == 404 and patched.body[0]["errorCode"] == "ENTITY_IS_DELETED"
    composite = await wire.get(f"{V}/composite/sobjects/ServiceAppointment?ids={SCHED},{TAKEN}&fields=Id")
    assert composite.body[0] is None and composite.body[1]["Id"] == TAKEN
    put = await wire.put(f"{CONNECT}/{SCHED}", ls_body())
    assert put.status == 404 and put.body[0]["errorCode"] == "NOT_FOUND"
    dump = await wire.control("GET", "/_sandbox/records")
    rec = next(r for r in dump["records"] if r.get("Id") == SCHED)
    assert rec["_deleted_at"] is not None and rec["_notifications"] == []


# ---------------------------------------------------------------------------------------------
# auth (part 1, part 10 item 1)
# ---------------------------------------------------------------------------------------------
async def test_token_answer_shape(env: tuple[Any, Wire]) -> None:
    running, wire = env
    answer = await wire.login()
    assert answer.status == 200
    assert set(answer.body) == {"access_token", "instance_url", "id", "token_type", "issued_at", "signature", "scope"}
    assert answer.body["instance_url"] == running.url and answer.body["token_type"] == "Bearer"
    assert "Sforce-Limit-Info" not in answer.headers


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_id": "nope"}, "invalid_client_id"),
        ({"client_secret": "nope"}, "invalid_client"),
        ({"refresh_token": "nope"}, "invalid_grant"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
    ids=["p1-bad-client-id", "p1-bad-client-secret", "p1-revoked-refresh-token", "p1-grant-type"],
)
async def test_token_errors(env: tuple[Any, Wire], form: dict[str, str], error: str) -> None:
    _, wire = env
    answer = await wire.login(**form)
    assert answer.status == 400 and answer.body["error"] == error and answer.body["error_description"]


async def test_missing_expired_revoked_credentials(env: tuple[Any, Wire]) -> None:
    running, wire = env
    session_error = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    missing = await wire.raw("GET", f"{SA}/{SCHED}", auth=False)
    assert (missing.status, missing.body) == (401, session_error)
    # expiry: token_ttl_seconds of sandbox clock; every earlier token stays valid until then
    first = wire.token
    running.sandbox.clock.advance(3600)
    await wire.login()
    second = wire.token
    assert (await wire.get(f"{SA}/{SCHED}", headers={"Authorization": f"Bearer {first}"})).status == 200
    running.sandbox.clock.advance(3601)
    expired = await wire.get(f"{SA}/{SCHED}", headers={"Authorization": f"Bearer {first}"})
    assert (expired.status, expired.body) == (401, session_error)
    assert (await wire.get(f"{SA}/{SCHED}")).status == 200  # the second is still young
    # revoked through the OAuth revoke endpoint
    revoke = await wire.raw("POST", "/services/oauth2/revoke", data={"token": second}, auth=False)
    assert revoke.status == 200
    revoked = await wire.get(f"{SA}/{SCHED}")
    assert (revoked.status, revoked.body) == (401, session_error)


async def test_refresh_token_rotation(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await wire.control("POST", "/_sandbox/options", {"rotate_refresh_tokens": True})
    old_token = wire.token
    first = await wire.login()
    new_refresh = first.body["refresh_token"]
    assert new_refresh != "sandbox-refresh"
    assert (await wire.login()).body["error"] == "invalid_grant"  # the old refresh token is dead
    assert (await wire.login(refresh_token=new_refresh)).status == 200
    # a refresh does not revoke earlier access tokens
    assert (await wire.get(f"{SA}/{SCHED}", headers={"Authorization": f"Bearer {old_token}"})).status == 200


# ---------------------------------------------------------------------------------------------
# faults: each fires exactly `times` times
# ---------------------------------------------------------------------------------------------
async def add_fault(wire: Wire, method: str, path: str, action: dict[str, Any], times: int = 2) -> None:
    await wire.control(
        "POST", "/_sandbox/faults", {"match": {"method": method, "path": path}, "times": times, "action": action}
    )


async def test_fault_status(env: tuple[Any, Wire]) -> None:
    _, wire = env
    body = [{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}]
    await add_fault(wire, "GET", f"{SA}/*", {"type": "status", "status": 503, "body": body})
    assert [(await wire.get(f"{SA}/{SCHED}")).status for _ in range(3)] == [503, 503, 200]


async def test_fault_delay(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "GET", f"{SA}/*", {"type": "delay", "seconds": 0.3})
    durations = []
    for _ in range(3):
        t0 = asyncio.get_running_loop().time()
        assert (await wire.get(f"{SA}/{SCHED}")).status == 200
        durations.append(asyncio.get_running_loop().time() - t0)
    assert durations[0] >= 0.3 and durations[1] >= 0.3 and durations[2] < 0.25


async def test_fault_drop_after_apply(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "PATCH", f"{SA}/*", {"type": "drop_after_apply"})
    for text in ("one", "two"):
        with pytest.raises(aiohttp.ClientError):
            await wire.patch(f"{SA}/{SCHED}", {"Comments": text})
        assert (await wire.record(SCHED))["Comments"] == text  # applied
    assert (await wire.patch(f"{SA}/{SCHED}", {"Comments": "three"})).status == 204


async def test_fault_rate_limit(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "GET", f"{SA}/*", {"type": "rate_limit", "retry_after": 3})
    answers = [await wire.get(f"{SA}/{SCHED}") for _ in range(3)]
    assert [a.status for a in answers] == [403, 403, 200]
    assert answers[0].body == [
        {"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert "Retry-After" not in answers[0].headers


async def test_fault_mutate_before(env: tuple[Any, Wire]) -> None:
    running, wire = env
    running.sandbox.clock.set(datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC))
    await add_fault(wire, "PATCH", f"{SA}/*", {"type": "mutate_before", "changes": {"Status": "Completed"}}, times=1)
    stale = await wire.patch(
        f"{SA}/{SCHED}", {"Status": "Dispatched"}, headers={"If-Unmodified-Since": "Fri, 20 Nov 2026 10:00:00 GMT"}
    )
    assert stale.status == 412 and stale.body[0]["errorCode"] == "PRECONDITION_FAILED"
    rec = await wire.record(SCHED)
    assert rec["Status"] == "Completed" and rec["StatusCategory"] == "Completed"
    assert rec["SystemModstamp"] == "2026-11-22T10:00:00.000+0000"
    # fired once: the next one changes nothing behind our back
    assert (await wire.patch(f"{SA}/{APPT['None']}", {"Comments": "x"})).status == 204
    assert (await wire.record(APPT["None"]))["Status"] == "None"


async def test_fault_session_expired(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "GET", f"{SA}/{SCHED}", {"type": "session_expired"})
    for _ in range(2):
        answer = await wire.get(f"{SA}/{SCHED}")
        assert answer.status == 401 and answer.body[0]["errorCode"] == "INVALID_SESSION_ID"
        assert (await wire.get(f"{SA}/{TAKEN}")).status == 401  # the token is dead for good
        await wire.login()
    assert (await wire.get(f"{SA}/{SCHED}")).status == 200


async def test_fault_refresh_invalid_grant(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "POST", "/services/oauth2/token", {"type": "refresh_invalid_grant"})
    answers = [await wire.login() for _ in range(3)]
    assert [a.status for a in answers] == [400, 400, 200]
    assert answers[0].body["error"] == "invalid_grant"


async def test_fault_not_success(env: tuple[Any, Wire]) -> None:
    _, wire = env
    errors = [{"errorCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record"}]
    await add_fault(wire, "PUT", f"{CONNECT}/*", {"type": "not_success", "errors": errors})
    for _ in range(2):
        answer = await wire.put(f"{CONNECT}/{SCHED}", ls_body())
        assert answer.body == {"id": SCHED, "isSuccess": False, "status": "scheduled", "error": errors}
        assert (await wire.record(SCHED))["Comments"] == "first"  # applied nothing
    assert (await wire.put(f"{CONNECT}/{SCHED}", ls_body())).body["isSuccess"] is True
    assert (await wire.record(SCHED))["Comments"] == "moved"
    # the same fault on a standard sObject write: 400 with the usual error array, nothing applied
    await add_fault(wire, "PATCH", f"{SA}/*", {"type": "not_success", "errors": errors}, times=1)
    refused = await wire.patch(f"{SA}/{SCHED}", {"Comments": "x"})
    assert refused.status == 400 and refused.body[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert (await wire.record(SCHED))["Comments"] == "moved"
    assert (await wire.patch(f"{SA}/{SCHED}", {"Comments": "x"})).status == 204


async def test_fault_ehr_reject(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "POST", CONNECT, {"type": "ehr_reject"})
    for _ in range(2):
        answer = await wire.post(CONNECT, ls_body(None))
        assert answer.status == 200
        assert answer.body["isSuccess"] is False and answer.body["status"] == "rejected"
        assert answer.body["error"] == [{"errorCode": "SLOT_UNAVAILABLE", "message": "The slot is no longer available"}]
    assert (await wire.post(CONNECT, ls_body(None))).status == 201
    dump = await wire.control("GET", "/_sandbox/records")
    assert sum(1 for r in dump["records"] if r["attributes"]["type"] == "ServiceAppointment") == len(APPT) + 2


async def test_fault_concurrent_limit(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await add_fault(wire, "*", f"{V}/*", {"type": "concurrent_limit"})
    answers = [await wire.get(f"{SA}/{SCHED}") for _ in range(3)]
    assert [a.status for a in answers] == [403, 403, 200]
    assert answers[0].body[0]["message"] == "ConcurrentPerOrgLongTxn Limit exceeded."


async def test_fault_coverage_lag(env: tuple[Any, Wire]) -> None:
    running, wire = env
    now = datetime(2026, 11, 22, 10, 5, 30, tzinfo=UTC)
    running.sandbox.clock.set(now)
    await add_fault(wire, "GET", f"{SA}/*", {"type": "coverage_lag", "minutes": 2})
    params = feed_params(now - timedelta(minutes=5), now + timedelta(minutes=5))
    covered = [
        (await wire.get(f"{SA}/updated/{params}")).body["latestDateCovered"],
        (await wire.get(f"{SA}/deleted/{params}")).body["latestDateCovered"],
        (await wire.get(f"{SA}/updated/{params}")).body["latestDateCovered"],
    ]
    assert covered == ["2026-11-22T10:03:00.000+0000", "2026-11-22T10:03:00.000+0000", "2026-11-22T10:05:00.000+0000"]


async def test_unknown_fault_type_refused(env: tuple[Any, Wire]) -> None:
    _, wire = env
    answer = await wire.raw("POST", "/_sandbox/faults", json_body={"match": {}, "action": {"type": "nope"}}, auth=False)
    assert answer.status == 400


# ---------------------------------------------------------------------------------------------
# rate limits (part 7)
# ---------------------------------------------------------------------------------------------
async def test_daily_limit_and_limit_info() -> None:
    running = await start_sandbox("salesforce_health", port=0, daily_limit=3)
    try:
        async with aiohttp.ClientSession() as session:
            wire = Wire(session, running.url)
            await wire.control("POST", "/_sandbox/records", base_seed())
            await wire.login()
            await wire.login()  # token calls do not count
            infos = []
            for _ in range(3):
                answer = await wire.get(f"{SA}/{SCHED}")
                assert answer.status == 200
                infos.append(answer.headers["Sforce-Limit-Info"])
            assert infos == ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]
            spent = await wire.get(f"{SA}/{SCHED}")
            assert spent.status == 403
            assert spent.body == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            connect = await wire.put(f"{CONNECT}/{SCHED}", ls_body())
            assert connect.status == 403  # Connect calls count too
            running.sandbox.clock.advance(86400)  # rolling 24 h
            assert (await wire.login()).status == 200
            assert (await wire.get(f"{SA}/{SCHED}")).status == 200
            await wire.control("POST", "/_sandbox/options", {"rate_limits": False})
            for _ in range(5):
                assert (await wire.get(f"{SA}/{SCHED}")).status == 200
    finally:
        await running.stop()


async def test_concurrent_long_requests() -> None:
    running = await start_sandbox("salesforce_health", port=0, concurrent_long_limit=1)
    try:
        async with aiohttp.ClientSession() as session:
            wire = Wire(session, running.url)
            await wire.control("POST", "/_sandbox/records", base_seed())
            await wire.login()
            await add_fault(wire, "GET", f"{SA}/{SCHED}", {"type": "delay", "seconds": 0.5}, times=1)
            slow = asyncio.create_task(wire.get(f"{SA}/{SCHED}"))
            await asyncio.sleep(0.1)
            assert (await wire.get(f"{SA}/{TAKEN}")).status == 200  # not yet 20 s old
            running.sandbox.clock.advance(21)  # the slow one has now run >= long_request_seconds
            refused = await wire.get(f"{SA}/{TAKEN}")
            assert refused.status == 403
            assert refused.body[0]["message"] == "ConcurrentPerOrgLongTxn Limit exceeded."
            assert (await slow).status == 200
            assert (await wire.get(f"{SA}/{TAKEN}")).status == 200
    finally:
        await running.stop()


async def test_rate_limits_off() -> None:
    running = await start_sandbox("salesforce_health", port=0, rate_limits=False, daily_limit=1)
    try:
        async with aiohttp.ClientSession() as session:
            wire = Wire(session, running.url)
            await wire.control("POST", "/_sandbox/records", base_seed())
            await wire.login()
            for _ in range(3):
                assert (await wire.get(f"{SA}/{SCHED}")).status == 200
    finally:
        await running.stop()


# ---------------------------------------------------------------------------------------------
# change detection (part 2, part 10 item 9)
# ---------------------------------------------------------------------------------------------
async def test_replication_feeds_with_cursors(env: tuple[Any, Wire]) -> None:
    running, wire = env
    clock = running.sandbox.clock
    t0 = datetime(2026, 11, 22, 10, 0, 20, tzinfo=UTC)
    clock.set(t0)
    await wire.patch(f"{SA}/{SCHED}", {"Comments": "a"})  # stamp 10:00:20
    cursor = datetime(2026, 11, 22, 9, 55, tzinfo=UTC)
    clock.set(datetime(2026, 11, 22, 10, 1, 5, tzinfo=UTC))
    await wire.patch(f"{SA}/{TAKEN}", {"Comments": "b"})  # stamp 10:01:05: not covered yet
    end = datetime(2026, 11, 22, 10, 1, 50, tzinfo=UTC)  # truncated to 10:01
    first = await wire.get(f"{SA}/updated/{feed_params(cursor, end)}")
    assert first.body == {"ids": [SCHED], "latestDateCovered": "2026-11-22T10:01:00.000+0000"}
    clock.set(datetime(2026, 11, 22, 10, 2, 30, tzinfo=UTC))
    assert (await wire.raw("DELETE", f"{SA}/{APPT['None']}")).status == 204  # deleted 10:02:30
    await wire.put(f"{CONNECT}/{APPT['Dispatched']}", ls_body(APPT["Dispatched"]))  # 10:02:30
    cursor = datetime(2026, 11, 22, 10, 1, tzinfo=UTC)
    end = datetime(2026, 11, 22, 10, 10, tzinfo=UTC)  # beyond now: latestDateCovered = now truncated
    second = await wire.get(f"{SA}/updated/{feed_params(cursor, end)}")
    assert second.body["latestDateCovered"] == "2026-11-22T10:02:00.000+0000"
    assert second.body["ids"] == [TAKEN]
    clock.set(datetime(2026, 11, 22, 10, 3, 1, tzinfo=UTC))
    third = await wire.get(f"{SA}/updated/{feed_params(datetime(2026, 11, 22, 10, 2, tzinfo=UTC), end)}")
    assert third.body == {"ids": [APPT["Dispatched"]], "latestDateCovered": "2026-11-22T10:03:00.000+0000"}
    deleted = await wire.get(f"{SA}/deleted/{feed_params(datetime(2026, 11, 22, 10, 0, tzinfo=UTC), end)}")
    assert deleted.body["deletedRecords"] == [{"id": APPT["None"], "deletedDate": "2026-11-22T10:02:30.000+0000"}]
    assert deleted.body["latestDateCovered"] == "2026-11-22T10:03:00.000+0000"
    assert deleted.body["earliestDateAvailable"] == "2026-11-07T10:03:00.000+0000"


async def test_replication_date_rules(env: tuple[Any, Wire]) -> None:
    running, wire = env
    now = datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC)
    running.sandbox.clock.set(now)

    async def code(feed: str, start: datetime, end: datetime) -> str | None:
        answer = await wire.get(f"{SA}/{feed}/{feed_params(start, end)}")
        return None if answer.status == 200 else answer.body[0]["errorCode"]

    # start < end after truncation to the minute
    same_minute = (now.replace(second=5), now.replace(second=50))
    assert await code("updated", *same_minute) == "INVALID_REPLICATION_DATE"
    assert await code("updated", now - timedelta(days=31), now) == "INVALID_REPLICATION_DATE"
    assert await code("updated", now - timedelta(days=29), now) is None
    assert await code("deleted", now - timedelta(days=16), now) == "INVALID_REPLICATION_DATE"
    assert await code("deleted", now - timedelta(days=14), now) is None
    missing = await wire.get(f"{SA}/updated/?start=2026-11-22T10:00:00%2B00:00")
    assert missing.status == 400
    # '+' sent unencoded arrives as a space: refused, as the real parser does
    plus = await wire.get(f"{SA}/updated/?start=2026-11-22T09:00:00+00:00&end=2026-11-22T10:00:00+00:00")
    assert plus.status == 400 and plus.body[0]["errorCode"] == "INVALID_REPLICATION_DATE"


async def test_deleted_feed_not_before_reset() -> None:
    running = await start_sandbox("salesforce_health", port=0)
    try:
        async with aiohttp.ClientSession() as session:
            wire = Wire(session, running.url)
            await wire.control("POST", "/_sandbox/records", base_seed())
            await wire.login()
            now = running.sandbox.now()
            early = await wire.get(f"{SA}/deleted/{feed_params(now - timedelta(days=2), now)}")
            assert early.status == 400 and early.body[0]["errorCode"] == "INVALID_REPLICATION_DATE"
            recent = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
            answer = await wire.get(f"{SA}/deleted/{feed_params(recent, now + timedelta(minutes=1))}")
            assert answer.status == 200
    finally:
        await running.stop()


async def test_query_pages_by_2000(env: tuple[Any, Wire]) -> None:
    _, wire = env
    records = [appointment(f"08pTq{n:010d}", "Scheduled") for n in range(2100)]
    for rec in records:
        rec["Id"] = rec["Id"][:15]  # 15-character ids are accepted and extended
    await wire.control("POST", "/_sandbox/records", {"records": records})
    soql = (
        "SELECT Id, SystemModstamp FROM ServiceAppointment WHERE SchedStartTime >= 2026-12-01T00:00:00Z "
        "AND SchedStartTime < 2026-12-31T00:00:00Z ORDER BY Id"
    )
    page1 = await wire.get(f"{V}/query", params={"q": soql})
    total = len(APPT) + 1 + 2100
    assert page1.body["totalSize"] == total and page1.body["done"] is False
    assert len(page1.body["records"]) == 2000
    page2 = await wire.get(page1.body["nextRecordsUrl"])
    assert page2.body["done"] is True and "nextRecordsUrl" not in page2.body
    ids = [r["Id"] for r in page1.body["records"] + page2.body["records"]]
    assert len(ids) == total and ids == sorted(ids) and all(len(i) == 18 for i in ids)
    bad = await wire.get(f"{V}/query/01gZZZZZZZZZZZZZZZ-2000")
    assert bad.status == 400 and bad.body[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


async def test_request_counts_by_route_template(env: tuple[Any, Wire]) -> None:
    _, wire = env
    await wire.put(f"{CONNECT}/{SCHED}", ls_body())
    await wire.put(f"{CONNECT}/{SCHED}", ls_body())
    counts = await wire.control("GET", "/_sandbox/requests")
    assert {"method": "PUT", "route": f"{CONNECT}/{{id}}", "count": 2} in counts["requests"]


# ---------------------------------------------------------------------------------------------
# webhooks (part 2 (a), part 10 item 12)
# ---------------------------------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, dict[str, str]]] = []
        self.event = asyncio.Event()
        self.status = 202

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((await request.read(), dict(request.headers)))
        self.event.set()
        return web.Response(status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rec, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


async def test_webhook_worked_example(env: tuple[Any, Wire], receiver: tuple[Receiver, str]) -> None:
    running, wire = env
    rec, url = receiver
    await wire.control("POST", "/_sandbox/records", {"records": [appointment("08pxx0000004KGGAA2", "Scheduled")]})
    await wire.control("POST", "/_sandbox/options", {"webhook_url": url})
    running.sandbox.clock.set(datetime.fromtimestamp(1795345200.2, tz=UTC))
    assert (await wire.patch(f"{SA}/08pxx0000004KGGAA2", {"Comments": "x"})).status == 204
    await running.sandbox.wait_webhooks()
    body, headers = rec.got[0]
    assert body == b'{"ids":["08pxx0000004KGGAA2"]}' and len(body) == 30
    assert headers["X-Syncd-Timestamp"] == "1795345200"
    assert headers["X-Syncd-Signature"] == "v1=6e7f31c084733e5e3912217cb42b510a80421d474619b651cd9f8ccd34a7f675"


WRITES: list[tuple[str, Callable[[Wire, Any], Any]]] = [
    ("connect-create", lambda w, s: w.post(CONNECT, ls_body(None))),
    ("connect-update", lambda w, s: w.put(f"{CONNECT}/{SCHED}", ls_body())),
    ("connect-cancel", lambda w, s: w.patch(f"{CONNECT}/{SCHED}", {"id": SCHED, "status": "Canceled"})),
    ("sobject-patch", lambda w, s: w.patch(f"{SA}/{SCHED}", {"Comments": "n"})),
    (
        "sandbox-records",
        lambda w, s: w.control("POST", "/_sandbox/records", {"records": [appointment(SCHED, "Dispatched")]}),
    ),
    ("mutate-before", lambda w, s: s.mutate(SCHED, {"Comments": "other user"})),
]


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[f"p10.12-webhook-{i}" for i, _ in WRITES])
async def test_webhook_on_each_write(
    env: tuple[Any, Wire], receiver: tuple[Receiver, str], write: Callable[[Wire, Any], Any]
) -> None:
    running, wire = env
    rec, url = receiver
    rec.status = 500  # no retry even on failure
    await wire.control("POST", "/_sandbox/options", {"webhook_url": url})
    await write(wire, running.sandbox)
    await running.sandbox.wait_webhooks()
    await asyncio.sleep(0.05)
    assert len(rec.got) == 1
    body, headers = rec.got[0]
    ids = json.loads(body)["ids"]
    assert len(ids) == 1 and ids[0].startswith("08p")
    assert headers["X-Syncd-Signature"] == expected_signature(
        "sandbox-webhook-secret", headers["X-Syncd-Timestamp"], body
    )


async def test_no_webhook_for_delete_or_refused_write(env: tuple[Any, Wire], receiver: tuple[Receiver, str]) -> None:
    running, wire = env
    rec, url = receiver
    await wire.control("POST", "/_sandbox/options", {"webhook_url": url})
    await wire.raw("DELETE", f"{SA}/{TAKEN}")
    await wire.put(f"{CONNECT}/{APPT['Completed']}", ls_body(APPT["Completed"]))
    await wire.patch(f"{SA}/{APPT['Completed']}", {"Status": "Scheduled"})
    await running.sandbox.wait_webhooks()
    assert rec.got == []


# ---------------------------------------------------------------------------------------------
# control API and shared seed data
# ---------------------------------------------------------------------------------------------
async def test_control_records_round_trip_and_delete(env: tuple[Any, Wire]) -> None:
    running, wire = env
    running.sandbox.clock.set(datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC))
    dump = await wire.control("GET", "/_sandbox/records")
    # appointments under "records", reference data under its own keys (one per sObject type)
    assert {r["attributes"]["type"] for r in dump["records"]} == {"ServiceAppointment"}
    types = {r["attributes"]["type"] for key, rows in dump.items() if key != "records" for r in rows}
    assert types == {
        "AssignedResource",
        "Account",
        "ServiceTerritory",
        "ServiceResource",
        "WorkType",
        "EngagementChannelType",
        "Asset",
    }
    # overwrite bumps version and modified time
    await wire.control(
        "POST",
        "/_sandbox/records",
        {"records": [{"attributes": {"type": "ServiceAppointment"}, "Id": SCHED, "Status": "Dispatched"}]},
    )
    rec = await wire.record(SCHED)
    assert rec["StatusCategory"] == "Dispatched" and rec["SystemModstamp"] == "2026-11-22T10:00:00.000+0000"
    await wire.control("POST", "/_sandbox/records", {"delete": [SCHED]})
    assert (await wire.get(f"{SA}/{SCHED}")).status == 404
    bad = await wire.raw(
        "POST", "/_sandbox/records", json_body={"records": [{"attributes": {"type": "Lead"}}]}, auth=False
    )
    assert bad.status == 400
    await wire.control("POST", "/_sandbox/reset")
    assert (await wire.control("GET", "/_sandbox/records")) == {"records": [], "AssignedResource": []}


async def test_seed_body_from_shared_dataset(env: tuple[Any, Wire]) -> None:
    _, wire = env
    dataset = generate(50, now=datetime(2026, 11, 22, tzinfo=UTC))
    body, rows = seed_body(dataset)
    assert seed_body(dataset) == (body, rows)  # deterministic
    kinds = {kind for kind, _, _ in rows}
    assert kinds == {"patient", "practitioner", "location", "service", "appointment"}
    assert len(rows) == (
        len(dataset.patients)
        + len(dataset.practitioners)
        + len(dataset.locations)
        + len(dataset.services)
        + len(dataset.appointments)
    )
    assert all(len(ext) == 18 for _, _, ext in rows)
    await wire.control("POST", "/_sandbox/reset")
    await wire.control("POST", "/_sandbox/records", body)
    await wire.login()
    xwalk = {(kind, key): ext for kind, key, ext in rows}
    appts = [a for a in dataset.appointments]
    ids = [xwalk[("appointment", a.key)] for a in appts]
    read = await wire.get(
        f"{V}/composite/sobjects/ServiceAppointment",
        params={
            "ids": ",".join(ids),
            "fields": "Id,Status,SchedStartTime,ParentRecordId,WorkTypeId,ServiceTerritoryId,Comments",
        },
    )
    assert read.status == 200 and len(read.body) == 50
    for a, rec in zip(appts, read.body, strict=True):
        assert rec["Status"] == ("Scheduled" if a.status == "booked" else "None")
        assert rec["SchedStartTime"] == a.start.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        assert rec["ParentRecordId"] == xwalk[("patient", a.patient)]
        assert rec["WorkTypeId"] == xwalk[("service", a.service)]
        assert rec["ServiceTerritoryId"] == xwalk[("location", a.location)]
        assert rec["Comments"] == a.notes
    ar = await wire.get(
        f"{V}/query",
        params={
            "q": "SELECT ServiceAppointmentId, ServiceResourceId FROM "
            "AssignedResource WHERE ServiceAppointmentId IN (" + ",".join(f"'{i}'" for i in ids) + ")"
        },
    )
    by_sa = {r["ServiceAppointmentId"]: r["ServiceResourceId"] for r in ar.body["records"]}
    assert all(by_sa[xwalk[("appointment", a.key)]] == xwalk[("practitioner", a.practitioner)] for a in appts)
    # a seeded appointment can be updated through the Connect API with seeded references
    a = appts[0]
    put = ls_body(
        xwalk[("appointment", a.key)],
        workTypeId=xwalk[("service", a.service)],
        participants=participants(
            f"Patient/{xwalk[('patient', a.patient)]}",
            f"Facility/{xwalk[('location', a.location)]}",
            f"Practitioner/{xwalk[('practitioner', a.practitioner)]}",
        ),
    )
    answer = await wire.put(f"{CONNECT}/{xwalk[('appointment', a.key)]}", put)
    assert answer.body["isSuccess"] is True, answer.body


async def test_unknown_option_refused(env: tuple[Any, Wire]) -> None:
    _, wire = env
    answer = await wire.raw("POST", "/_sandbox/options", json_body={"nope": 1}, auth=False)
    assert answer.status == 400
    options = await wire.control("GET", "/_sandbox/options")
    assert options["token_ttl_seconds"] == 7200 and options["daily_limit"] == 100000
    assert options["long_request_seconds"] == 20 and options["concurrent_long_limit"] == 25
