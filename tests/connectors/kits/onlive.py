"""Contract kit for Onlive (Open API v2 appointments), seeded through the sandbox's ``/_sandbox/*`` routes."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.onlive.sandbox import seed_body
from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox
from syncd.sandboxkit.seedgen import generate
from syncd.secret import Secret
from tests.connectors.kit import KitDefaults, RuleCase, control

KEY_ID = "OLAK7Q2N4X9EXAMPLE"
SECRET = "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"
DEFAULT_CALENDAR = "c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d"
DEFAULT_SERVICE = "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"  # 30 minutes, on both default calendars
PATIENT = "new.patient@example.org"

_serial = itertools.count(1)



def iso(when: datetime) -> str:
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def future_slot(days: int = 3, hour: int = 10) -> datetime:
    base = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days)


def fresh_seed(n: int) -> dict[str, Any]:
    """A seed body with fresh calendar, service and appointment ids, so repeated seeding adds records
    that never share a calendar slot with earlier ones."""
    body, _rows = seed_body(generate(n, seed=7))
    calendars = {c["id"]: str(uuid.uuid4()) for c in body["calendars"]}
    services = {s["id"]: str(uuid.uuid4()) for s in body["services"]}
    for cal in body["calendars"]:
        cal["id"] = calendars[cal["id"]]
    for svc in body["services"]:
        svc["id"] = services[svc["id"]]
        svc["calendarIds"] = [calendars[c] for c in svc["calendarIds"]]
    for record in body["records"]:
        serial = next(_serial)
        record["id"] = str(uuid.uuid4())
        record["externalId"] = f"seed_{serial}"
        record["calendarIds"] = [calendars[c] for c in record["calendarIds"]]
        record["serviceId"] = services[record["serviceId"]]
    return body


class OnliveKit(KitDefaults):
    vendor = "onlive"
    three_pages = 2 * 100 + 1
    create_route = ("POST", "/api/v2/appointments")
    read_route = ("GET", "/api/v2/appointments/*")
    has_refresh = False
    token_route: str | None = None

    def sandbox_options(self) -> dict[str, Any]:
        return {}

    def connector_config(self, base_url: str) -> ConnectorConfig:
        return ConnectorConfig(
            name="onlive",
            type="onlive",
            base_url=base_url,
            poll_interval=60.0,
            timezone="UTC",
            max_requests_per_second=100.0,
            auth={"access_key_id": Secret(KEY_ID), "secret_access_key": Secret(SECRET)},
        )

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        body = fresh_seed(n)
        await control(sb, "POST", "/_sandbox/records", body)
        return [r["id"] for r in body["records"]]

    def new_appointment(self) -> Appointment:
        start = future_slot()
        return Appointment(
            status=Status.BOOKED,
            start=start,
            end=start + timedelta(minutes=30),
            patient=PATIENT,
            practitioner=DEFAULT_CALENDAR,
            location="Centro",
            service_type=DEFAULT_SERVICE,
            description="Video consultation",
            notes="first visit",
        )



    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        await control(sb, "POST", "/_sandbox/records",
                      {"records": [{"id": external_id, "comment": f"edited {next(_serial)}"}]})


    def rule_cases(self) -> list[RuleCase]:
        def appt(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None and rec.appointment.start is not None
            return rec.appointment

        def wrong_duration(rec: VendorRecord) -> Appointment:
            a = appt(rec)
            assert a.start is not None
            return a.with_changes(end=a.start + timedelta(minutes=7))

        def move_to_past(rec: VendorRecord) -> Appointment:
            a = appt(rec)
            assert a.start is not None and a.end is not None
            shift = a.start - (datetime.now(UTC) - timedelta(days=2))
            return a.with_changes(start=a.start - shift, end=a.end - shift)

        async def make_past(sb: RunningSandbox, rec: VendorRecord) -> None:
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
            a = appt(rec)
            assert a.duration is not None
            await control(sb, "POST", "/_sandbox/records", {"records": [
                {"id": rec.external_id, "startAt": iso(start), "endAt": iso(start + a.duration)}]})

        def edit_notes(rec: VendorRecord) -> Appointment:
            return appt(rec).with_changes(notes="too late to edit")

        def cancel(rec: VendorRecord) -> Appointment:
            return appt(rec).with_changes(status=Status.CANCELLED, cancellation_reason="patient request")

        async def block_next_hour(sb: RunningSandbox, rec: VendorRecord) -> None:
            a = appt(rec)
            assert a.start is not None and a.end is not None
            blocker = fresh_seed(1)["records"][0]
            blocker.update({"id": str(uuid.uuid4()), "calendarIds": [a.practitioner], "serviceId": a.service_type,
                            "startAt": iso(a.start + timedelta(hours=1)), "endAt": iso(a.end + timedelta(hours=1))})
            await control(sb, "POST", "/_sandbox/records", {"records": [blocker]})

        def move_one_hour(rec: VendorRecord) -> Appointment:
            a = appt(rec)
            assert a.start is not None and a.end is not None
            return a.with_changes(start=a.start + timedelta(hours=1), end=a.end + timedelta(hours=1))

        def change_service(rec: VendorRecord) -> Appointment:
            return appt(rec).with_changes(service_type=DEFAULT_SERVICE)

        def create_in_past(rec: VendorRecord) -> Appointment:
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
            return self.new_appointment().with_changes(start=start, end=start + timedelta(minutes=30))

        def create_outside_service(rec: VendorRecord) -> Appointment:
            # the seeded record's calendar does not offer the default service
            return self.new_appointment().with_changes(practitioner=appt(rec).practitioner)

        def create_on_taken_slot(rec: VendorRecord) -> Appointment:
            a = appt(rec)
            return self.new_appointment().with_changes(practitioner=a.practitioner, service_type=a.service_type,
                                                       start=a.start, end=a.end)

        return [
            # seed: "Must respect service duration (if applicable)"
            RuleCase("service_duration", WriteKind.UPDATE, wrong_duration, "SERVICE_DURATION_MISMATCH"),
            # seed: "Cannot modify past appointments" (moving the start into the past)
            RuleCase("move_into_past", WriteKind.UPDATE, move_to_past, "APPOINTMENT_IN_PAST"),
            # seed: "Cannot modify past appointments" (stored endAt <= now), PUT and cancel
            RuleCase("edit_past", WriteKind.UPDATE, edit_notes, "Past appointments cannot be modified",
                     prepare=make_past),
            RuleCase("cancel_past", WriteKind.CANCEL, cancel, "APPOINTMENT_IN_PAST", prepare=make_past),
            # seed: "Calendar availability checked" (update and create)
            RuleCase("slot_taken", WriteKind.UPDATE, move_one_hour, "SLOT_UNAVAILABLE", prepare=block_next_hour),
            RuleCase("create_slot_taken", WriteKind.CREATE, create_on_taken_slot, "SLOT_UNAVAILABLE"),
            # seed: "Service rules respected" (create: the calendar must offer the service)
            RuleCase("create_outside_service", WriteKind.CREATE, create_outside_service, "SERVICE_RULE_VIOLATION"),
            # part 4: create in the past
            RuleCase("create_in_past", WriteKind.CREATE, create_in_past, "APPOINTMENT_IN_PAST"),
            # part 4: serviceId cannot be updated
            RuleCase("service_immutable", WriteKind.UPDATE, change_service, "serviceId immutable"),
        ]

    async def expire_token(self, sb: RunningSandbox) -> None:
        # static key pair: the nearest thing is a clock more than 15 minutes away (REQUEST_EXPIRED)
        later = datetime.now(UTC) + timedelta(minutes=20)
        await control(sb, "POST", "/_sandbox/clock", {"now": later.strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def revoke(self, sb: RunningSandbox) -> None:
        await control(sb, "POST", "/_sandbox/options", {"access_keys": {}})


KIT = OnliveKit()
