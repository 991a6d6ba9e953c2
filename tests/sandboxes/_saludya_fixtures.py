"""Shared data and helpers for the SaludYa sandbox tests (hand-written wire requests, no connector)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from syncd.sandboxkit import RunningSandbox

KEY = "sandbox-key"
DOC2_KEY = "doc2-key"
PAT = "pat_5x8y2z4a6b"
PAT2 = "pat_9q8w7e6r5t"
DOC = "doc_3j5k7m9n1p"
DOC2 = "doc_2b4d6f8h0j"
APT = "apt_7k3m9n2p4q"
APT_BUSY = "apt_8m4n1p5r7s"
APT_OTHER = "apt_2c4e6g8i0k"
NOW = "2026-03-06T11:45:30Z"

API_KEYS = {KEY: "*", DOC2_KEY: [DOC2]}

SEED_ERROR_400 = {
    "error": {
        "code": "VALIDATION_ERROR",
        "message": "Invalid request data",
        "details": {"status": "Cannot change status to 'completed' without providing diagnosis"},
    }
}
SEED_ERROR_401 = {"error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API token"}}
SEED_ERROR_403 = {"error": {"code": "FORBIDDEN", "message": "You don't have permission to modify this appointment"}}
SEED_ERROR_404 = {"error": {"code": "RESOURCE_NOT_FOUND", "message": "Appointment with ID 'apt_7k3m9n2p4q' not found"}}
SEED_ERROR_409 = {
    "error": {
        "code": "APPOINTMENT_CONFLICT",
        "message": "Doctor is not available at the requested time",
        "details": {"conflicting_appointment_id": "apt_8m4n1p5r7s", "suggested_times": ["10:30", "11:00", "11:30"]},
    }
}
SEED_ERROR_422 = {
    "error": {
        "code": "INVALID_STATE_TRANSITION",
        "message": "Cannot update a completed appointment. Contact support if you need to make changes.",
    }
}


def base_records(apt_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Patients, doctors and three appointments on 2026-03-12 (clinic wall clock)."""
    apt = {
        "id": APT,
        "patient_id": PAT,
        "doctor_id": DOC,
        "date": "2026-03-12",
        "time": "09:00",
        "duration_minutes": 30,
        "status": "scheduled",
        "reason": "Consulta de control cardiovascular",
        "notes": None,
        "created_at": "2026-03-05T14:22:10Z",
        "updated_at": "2026-03-05T14:22:10Z",
    }
    apt.update(apt_overrides or {})
    return {
        "patients": [
            {"id": PAT, "name": "Paciente Uno", "email": "p1@example.org", "phone": "+34 600 000 001"},
            {"id": PAT2, "name": "Paciente Dos", "email": "p2@example.org", "phone": "+34 600 000 002"},
        ],
        "doctors": [
            {"id": DOC, "name": "Dr. Uno", "specialty": "Cardiología"},
            {"id": DOC2, "name": "Dr. Dos", "specialty": "Pediatría"},
        ],
        "records": [
            apt,
            {
                "id": APT_BUSY, "patient_id": PAT2, "doctor_id": DOC, "date": "2026-03-12", "time": "10:00",
                "duration_minutes": 30, "status": "confirmed", "created_at": "2026-03-05T14:30:00Z",
            },
            {
                "id": APT_OTHER, "patient_id": PAT, "doctor_id": DOC2, "date": "2026-03-12", "time": "10:00",
                "duration_minutes": 30, "status": "scheduled", "created_at": "2026-03-05T15:00:00Z",
            },
        ],
    }  # fmt: skip


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Client:
    """A plain aiohttp session speaking SaludYa's wire protocol to one sandbox."""

    session: aiohttp.ClientSession
    running: RunningSandbox

    @property
    def url(self) -> str:
        return self.running.url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = KEY,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        hdrs = {"Accept": "application/json", "Accept-Language": "en"}
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        data: str | None = None
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        async with self.session.request(method, self.url + path, data=data, headers=hdrs, params=params) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except json.JSONDecodeError:
                parsed = text
            return Answer(resp.status, parsed, dict(resp.headers))

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as resp:
            payload = await resp.json()
            assert resp.status == 200, payload
            return payload

    async def seed(self, apt_overrides: dict[str, Any] | None = None) -> None:
        await self.control("POST", "/_sandbox/records", base_records(apt_overrides))

    async def record(self, rid: str) -> dict[str, Any]:
        dump = await self.control("GET", "/_sandbox/records")
        return next(r for r in dump["records"] if r["id"] == rid)
