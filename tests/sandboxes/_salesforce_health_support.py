"""Fixtures data and a tiny wire client for the Salesforce Health Cloud sandbox tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.salesforce_health.sandbox.wire import make_id

V = "/services/data/v65.0"
CONNECT = f"{V}/connect/health/appointment-management/appointment"
SA = f"{V}/sobjects/ServiceAppointment"


def _mk(prefix: str, n: int) -> str:
    return make_id(prefix, "Ts", n)


PATIENT = _mk("001", 1)
PATIENT2 = _mk("001", 2)
FACILITY = _mk("0Hh", 1)
DR = _mk("0Hn", 1)
DR2 = _mk("0Hn", 2)
DR_EXT = _mk("0Hn", 3)
WT = _mk("08q", 1)
WT_CHANNEL = _mk("08q", 2)
CHANNEL = _mk("0eF", 1)
DEVICE = _mk("02i", 1)
MISSING = _mk("08p", 999)

# one appointment per status (Status label -> id)
APPT = {
    "None": _mk("08p", 1),
    "Scheduled": _mk("08p", 2),
    "Dispatched": _mk("08p", 3),
    "In Progress": _mk("08p", 4),
    "Completed": _mk("08p", 5),
    "Cannot Complete": _mk("08p", 6),
    "Canceled": _mk("08p", 7),
}
SCHED = APPT["Scheduled"]
TAKEN = _mk("08p", 8)  # Scheduled, Syncd_Id__c already set
SEED_STAMP = "2026-11-20T10:00:00.000+0000"


def reference_records() -> list[dict[str, Any]]:
    return [
        {"attributes": {"type": "Account"}, "Id": PATIENT, "LastName": "Uno"},
        {"attributes": {"type": "Account"}, "Id": PATIENT2, "LastName": "Dos"},
        {"attributes": {"type": "ServiceTerritory"}, "Id": FACILITY, "Name": "Centro"},
        {"attributes": {"type": "ServiceResource"}, "Id": DR, "Name": "Dr A"},
        {"attributes": {"type": "ServiceResource"}, "Id": DR2, "Name": "Dr B"},
        {"attributes": {"type": "ServiceResource"}, "Id": DR_EXT, "Name": "Dr EHR", "external": True},
        {"attributes": {"type": "WorkType"}, "Id": WT, "Name": "Check-up"},
        {"attributes": {"type": "WorkType"}, "Id": WT_CHANNEL, "Name": "Video", "channel_required": True},
        {"attributes": {"type": "EngagementChannelType"}, "Id": CHANNEL, "Name": "Video"},
        {"attributes": {"type": "Asset"}, "Id": DEVICE, "Name": "X-ray"},
    ]


def appointment(rid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "attributes": {"type": "ServiceAppointment"},
        "Id": rid,
        "Status": status,
        "SchedStartTime": "2026-12-10T09:00:00.000+0000",
        "SchedEndTime": "2026-12-10T09:30:00.000+0000",
        "ParentRecordId": PATIENT,
        "WorkTypeId": WT,
        "ServiceTerritoryId": FACILITY,
        "Comments": "first",
        "LastModifiedDate": SEED_STAMP,
        "SystemModstamp": SEED_STAMP,
        "_assigned_resources": [DR],
        **extra,
    }


def base_seed() -> dict[str, Any]:
    records = reference_records()
    records += [appointment(rid, status) for status, rid in APPT.items()]
    records.append(appointment(TAKEN, "Scheduled", Syncd_Id__c="apt_taken"))
    return {"records": records}


def participants(*refs: str) -> list[dict[str, Any]]:
    return [{"reference": r} for r in refs]


def ls_body(rid: str | None = SCHED, **changes: Any) -> dict[str, Any]:
    """The seed's LS form (update body); ``rid=None`` leaves ``id`` out (create)."""
    body: dict[str, Any] = {
        "workTypeId": WT,
        "startDate": "2026-12-10T10:00:00Z",
        "endDate": "2026-12-10T10:30:00Z",
        "timeZone": "Europe/Madrid",
        "comment": "moved",
        "participants": [
            {"reference": f"Patient/{PATIENT}"},
            {"reference": f"Practitioner/{DR}", "isReferenceRequired": True},
            {"reference": f"Facility/{FACILITY}"},
        ],
    }
    if rid is not None:
        body["id"] = rid
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def ehr_body(rid: str | None = SCHED, **changes: Any) -> dict[str, Any]:
    """The seed's External EHR form."""
    body: dict[str, Any] = {
        "startDate": "2026-12-10T09:00:00Z",
        "endDate": "2026-12-10T11:00:00Z",
        "sourceSystem": "cerner",
        "comment": "Update the current appointment with new date",
        "appointmentTypes": ["FOLLOWUP"],
        "serviceCategories": ["serviceCategoryCode1", "serviceCategoryCode2"],
        "serviceTypes": ["serviceTypeCode1", "serviceTypeCode2"],
        "specialties": ["specialityCode"],
        "slots": [{"id": "24477854-21304876-62852027-2", "reference": DR_EXT}],
        "participants": [
            {"reference": f"Patient/{PATIENT}"},
            {"reference": f"Facility/{FACILITY}"},
            {"reference": f"Practitioner/{DR_EXT}", "isReferenceRequired": True},
        ],
    }
    if rid is not None:
        body["id"] = rid
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


_DROP: Any = _Drop()
DROP: Any = _DROP


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Wire:
    """Hand-written requests against the sandbox (no connector code)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.token: str | None = None

    async def login(self, **form: str) -> Answer:
        data = {
            "grant_type": "refresh_token",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "refresh_token": "sandbox-refresh",
            **form,
        }
        answer = await self.raw("POST", "/services/oauth2/token", data=data, auth=False)
        if answer.status == 200:
            self.token = answer.body["access_token"]
        return answer

    async def raw(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        params: dict[str, str] | None = None,
    ) -> Answer:
        hdrs = {"Accept": "application/json", **(headers or {})}
        if auth and self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        elif data is not None:
            kwargs["data"] = data
        if params is not None:
            kwargs["params"] = params
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except json.JSONDecodeError:
                body = text
            return Answer(resp.status, body, dict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.raw("GET", path, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Answer:
        return await self.raw("PUT", path, json_body=body, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> Answer:
        return await self.raw("PATCH", path, json_body=body, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Answer:
        return await self.raw("POST", path, json_body=body, **kw)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = await self.raw(method, path, json_body=body, auth=False)
        assert answer.status == 200, answer
        return answer.body

    async def record(self, rid: str) -> dict[str, Any]:
        answer = await self.get(f"{SA}/{rid}")
        assert answer.status == 200, answer
        result: dict[str, Any] = answer.body
        return result
