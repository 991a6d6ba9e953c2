"""Contract kit for SaludYa, seeded through the sandbox's ``/_sandbox/*`` routes.

Records are seeded for tomorrow (clinic time), so that they sit in the hot window (today .. today+1)
the incremental scan covers, each with its own doctor so that no seeded slot clashes with another.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connectors.saludya.sandbox import seed_body
from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox
from syncd.sandboxkit.seedgen import generate
from syncd.secret import Secret
from tests.connectors.kit import KitDefaults, RuleCase, control

TIMEZONE = "America/Bogota"
API_KEY = "sandbox-key"
PATIENT = "pat_kitpatient01"
DOCTOR = "doc_kitdoctor01"
OTHER_DOCTOR = "doc_kitdoctor02"
SPECIALTY = "Cardiología"

_ids = itertools.count(1)



def tomorrow_local(hour: int, minute: int = 0) -> datetime:
    """Tomorrow in the clinic's zone at ``hour``:``minute``, as a UTC instant."""
    zone = ZoneInfo(TIMEZONE)
    day = datetime.now(zone).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)


def reference_data() -> dict[str, Any]:
    return {
        "patients": [{"id": PATIENT, "name": "Paciente Kit", "email": "kit@example.org", "phone": "+34 600 000 001"}],
        "doctors": [
            {"id": DOCTOR, "name": "Dr. Kit", "specialty": SPECIALTY},
            {"id": OTHER_DOCTOR, "name": "Dr. Kit Dos", "specialty": SPECIALTY},
        ],
    }


class SaludYaKit(KitDefaults):
    cancel_reason = "Paciente tuvo una emergencia"
    vendor = "saludya"
    three_pages = 2 * 100 + 1
    create_route = ("POST", "/api/appointments")
    read_route = ("GET", "/api/appointments/*")
    has_refresh = False
    token_route: str | None = None

    def sandbox_options(self) -> dict[str, Any]:
        return {"rate_limits": False, "timezone": TIMEZONE}

    def connector_config(self, base_url: str) -> ConnectorConfig:
        return ConnectorConfig(
            name="saludya",
            type="saludya",
            base_url=base_url,
            poll_interval=300.0,
            timezone=TIMEZONE,
            max_requests_per_second=500.0,
            auth={"api_key": Secret(API_KEY)},
        )

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        body, _rows = seed_body(generate(n, seed=11), timezone=TIMEZONE)
        day = tomorrow_local(10).astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%d")
        doctors = reference_data()["doctors"]
        ids: list[str] = []
        for record in body["records"]:
            serial = next(_ids)
            doctor = f"doc_kitseed{serial:05d}"
            doctors.append({"id": doctor, "name": f"Dr. Seed {serial}", "specialty": SPECIALTY})
            record.update({
                "id": f"apt_kit{serial:07d}",
                "doctor_id": doctor,
                "specialty": SPECIALTY,
                "date": day,
                "time": "09:00",
                "duration_minutes": 30,
                "status": "confirmed",
                "notes": f"seeded {serial}\n[syncd:seed_{serial}]",
            })
            ids.append(record["id"])
        body["patients"].extend(reference_data()["patients"])
        body["doctors"] = doctors
        await control(sb, "POST", "/_sandbox/records", body)
        return ids

    def new_appointment(self) -> Appointment:
        start = tomorrow_local(15)
        return Appointment(
            status=Status.BOOKED,
            start=start,
            end=start + timedelta(minutes=30),
            patient=PATIENT,
            practitioner=DOCTOR,
            description="Control",
            notes="first visit",
        )



    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        await control(sb, "POST", "/_sandbox/records",
                      {"records": [{"id": external_id, "notes": f"edited {next(_ids)}"}]})


    def rule_cases(self) -> list[RuleCase]:
        async def block_slot(sb: RunningSandbox, rec: VendorRecord) -> None:
            # another appointment of the same doctor two hours later (seed 409)
            assert rec.appointment is not None and rec.appointment.start is not None
            local = (rec.appointment.start + timedelta(hours=2)).astimezone(ZoneInfo(TIMEZONE))
            await control(sb, "POST", "/_sandbox/records", {"records": [{
                "id": f"apt_kitblock{next(_ids):05d}", "patient_id": PATIENT,
                "doctor_id": rec.appointment.practitioner, "date": local.strftime("%Y-%m-%d"),
                "time": local.strftime("%H:%M"), "duration_minutes": 30, "status": "confirmed",
            }]})

        def move_onto_block(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None and rec.appointment.start is not None
            assert rec.appointment.end is not None
            return rec.appointment.with_changes(start=rec.appointment.start + timedelta(hours=2),
                                                end=rec.appointment.end + timedelta(hours=2))

        async def start_visit(sb: RunningSandbox, rec: VendorRecord) -> None:
            await control(sb, "POST", "/_sandbox/records",
                          {"records": [{"id": rec.external_id, "status": "in_progress"}]})

        def cancel(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(status=Status.CANCELLED, cancellation_reason="Patient called")

        def no_show(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(status=Status.NOSHOW)

        def move(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None and rec.appointment.start is not None
            assert rec.appointment.end is not None
            return rec.appointment.with_changes(start=rec.appointment.start + timedelta(hours=1),
                                                end=rec.appointment.end + timedelta(hours=1))

        def unknown_patient(rec: VendorRecord) -> Appointment:
            return self.new_appointment().with_changes(patient="pat_doesnotexist")

        async def restrict_key(sb: RunningSandbox, rec: VendorRecord) -> None:
            await control(sb, "POST", "/_sandbox/options", {"api_keys": {API_KEY: [OTHER_DOCTOR]}})

        def create_for_doctor(rec: VendorRecord) -> Appointment:
            return self.new_appointment()

        return [
            # seed 409: the doctor is busy (a scheduling clash, not a concurrency conflict)
            RuleCase("doctor_busy", WriteKind.UPDATE, move_onto_block, "APPOINTMENT_CONFLICT", prepare=block_slot),
            # part 5 transition table: in_progress -> cancelled is not allowed
            RuleCase("in_progress_to_cancelled", WriteKind.CANCEL, cancel, "INVALID_STATE_TRANSITION",
                     prepare=start_visit),
            # part 5 transition table (part 9's example): no_show onto in_progress
            RuleCase("in_progress_to_no_show", WriteKind.UPDATE, no_show, "Cannot change status from 'in_progress'",
                     prepare=start_visit),
            # part 5 edit rules: date/time of an appointment in progress are locked
            RuleCase("in_progress_edit_lock", WriteKind.UPDATE, move,
                     "Cannot change date, time, duration or reason of an appointment in progress",
                     prepare=start_visit),
            # part 4: unknown patient_id on create -> 400 VALIDATION_ERROR
            RuleCase("create_unknown_patient", WriteKind.CREATE, unknown_patient, "VALIDATION_ERROR"),
            # seed 403: a key without access to the doctor (last: it restricts the key for the sandbox)
            RuleCase("forbidden_doctor", WriteKind.CREATE, create_for_doctor, "FORBIDDEN", prepare=restrict_key),
        ]

    async def expire_token(self, sb: RunningSandbox) -> None:
        raise AssertionError("SaludYa uses a static API key: there is no token to expire")

    async def revoke(self, sb: RunningSandbox) -> None:
        await control(sb, "POST", "/_sandbox/options", {"api_keys": {"another-key": "*"}})


KIT = SaludYaKit()
