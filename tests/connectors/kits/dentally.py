"""Contract kit for Dentally, seeded through the sandbox's ``/_sandbox/*`` routes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.dentally.sandbox import seed_body
from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox
from syncd.sandboxkit.seedgen import generate
from syncd.secret import Secret
from tests.connectors.kit import RuleCase, control

WEBHOOK_SECRET = "sandbox-webhook-secret"
TOKEN = "sandbox-token"
USER_AGENT = "syncd-contract-tests (dentally)"

_ids = itertools.count(1)



def _future_slot(days: int = 3, hour: int = 10) -> datetime:
    base = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days)


async def set_fields(sb: RunningSandbox, external_id: str, **fields: Any) -> None:
    """Change a record as another Dentally user would (bumps ``updated_at``)."""
    await control(sb, "POST", "/_sandbox/records", {"records": [{"id": int(external_id), **fields}]})


class DentallyKit:
    vendor = "dentally"
    three_pages = 2 * 100 + 1
    create_route = ("POST", "/v1/appointments")
    read_route = ("GET", "/v1/appointments/*")
    has_refresh = False
    token_route: str | None = None

    def __init__(self) -> None:
        self.site: str | None = None
        self.reason = "Check-up"
        self.patients: tuple[str, str] = ("1001", "1002")
        self.practitioner = "51"

    def sandbox_options(self) -> dict[str, Any]:
        return {"per_second": 1000}

    def connector_config(self, base_url: str) -> ConnectorConfig:
        return ConnectorConfig(
            name="dentally",
            type="dentally",
            base_url=base_url,
            poll_interval=60.0,
            timezone="Europe/London",
            webhook_secret=Secret(WEBHOOK_SECRET),
            max_requests_per_second=100.0,
            auth={"access_token": Secret(TOKEN), "user_agent": Secret(USER_AGENT)},
        )

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        body, _rows = seed_body(generate(n, seed=7))
        ids: list[str] = []
        for record in body["records"]:
            # unique ids per call, so that repeated seeding adds records
            serial = next(_ids)
            record["id"] = 758_000_000 + serial
            record.pop("uuid", None)
            ids.append(str(record["id"]))
        self.site = body["sites"][0]["id"]
        self.reason = body["appointment_reasons"][0]["reason"]
        self.patients = (str(body["patients"][0]["id"]), str(body["patients"][1]["id"]))
        self.practitioner = str(body["practitioners"][0]["id"])
        await control(sb, "POST", "/_sandbox/records", body)
        return ids

    def new_appointment(self) -> Appointment:
        start = _future_slot()
        return Appointment(
            status=Status.BOOKED,
            start=start,
            end=start + timedelta(minutes=30),
            patient=self.patients[0],
            practitioner=self.practitioner,
            location=self.site,
            service_type=self.reason,
            notes="first visit",
        )

    def update_of(self, current: Appointment) -> tuple[Appointment, frozenset[str]]:
        # only state and notes can change outside Pending: notes are editable in every state
        return current.with_changes(notes=f"updated by the contract suite {next(_ids)}"), frozenset({"notes"})

    def cancel_of(self, current: Appointment) -> Appointment:
        return current.with_changes(status=Status.CANCELLED, cancellation_reason="Cancelled by patient")

    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        await set_fields(sb, external_id, notes=f"edited at the front desk {next(_ids)}")

    async def delete(self, sb: RunningSandbox, external_id: str) -> None:
        await control(sb, "POST", "/_sandbox/records", {"delete": [int(external_id)]})

    def rule_cases(self) -> list[RuleCase]:
        def confirmed(sb: RunningSandbox, rec: VendorRecord) -> Any:
            return set_fields(sb, rec.external_id, state="Confirmed")

        def cancelled(sb: RunningSandbox, rec: VendorRecord) -> Any:
            return set_fields(sb, rec.external_id, state="Cancelled", cancellation_reason_id=2)

        def other_patient(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            other = self.patients[1] if rec.appointment.patient == self.patients[0] else self.patients[0]
            return rec.appointment.with_changes(patient=other)

        def no_patient(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(patient=None)

        def later(rec: VendorRecord) -> Appointment:
            a = rec.appointment
            assert a is not None and a.start is not None and a.end is not None
            return a.with_changes(start=a.start + timedelta(hours=1), end=a.end + timedelta(hours=1))

        def complete(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(status=Status.FULFILLED)

        def reopen(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(status=Status.BOOKED, cancellation_reason=None)

        def confirmed_without_patient(sb: RunningSandbox, rec: VendorRecord) -> Any:
            return set_fields(sb, rec.external_id, state="Confirmed", patient_id=None)

        def add_patient(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment.with_changes(patient=self.patients[0])

        def unknown_practitioner(rec: VendorRecord) -> Appointment:
            return self.new_appointment().with_changes(practitioner="999999")

        return [
            # seed: the patient of an appointment can never be changed ...
            RuleCase("patient_change", WriteKind.UPDATE, other_patient, "can not change patients"),
            # ... nor removed
            RuleCase("patient_removed", WriteKind.UPDATE, no_patient, "can not change patients"),
            # seed / part 5: after Confirmed only state and notes can be edited
            RuleCase("locked_after_confirmed", WriteKind.UPDATE, later,
                     "The appointment can not be updated as the current status is: Confirmed", prepare=confirmed),
            # part 5: a transition the state table does not allow
            RuleCase("transition_refused", WriteKind.UPDATE, complete,
                     "can not transition from Confirmed to Completed", prepare=confirmed),
            # part 5: terminal states accept no transition ...
            RuleCase("terminal_reopen", WriteKind.UPDATE, reopen, "can not transition from Cancelled to Confirmed",
                     prepare=cancelled),
            # ... and no field but notes
            RuleCase("terminal_locked", WriteKind.UPDATE, later,
                     "The appointment can not be updated as the current status is: Cancelled", prepare=cancelled),
            # part 4: a patient can be added only while the appointment is Pending
            RuleCase("patient_added_outside_pending", WriteKind.UPDATE, add_patient,
                     "The appointment can not be updated as the current status is: Confirmed",
                     prepare=confirmed_without_patient),
            # part 4: practitioner_id must name a practitioner
            RuleCase("create_unknown_practitioner", WriteKind.CREATE, unknown_practitioner, "does not exist"),
        ]

    async def expire_token(self, sb: RunningSandbox) -> None:
        raise AssertionError("Dentally has no refresh flow: a static bearer token")

    async def revoke(self, sb: RunningSandbox) -> None:
        await control(sb, "POST", "/_sandbox/options", {"revoked_tokens": [TOKEN]})


KIT = DentallyKit()
