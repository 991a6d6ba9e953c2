"""Vendor adapters and checks for the property-based convergence test (``test_convergence.py``).

Each adapter knows, for one vendor, how another user edits an appointment through the sandbox's
``/_sandbox/records`` (respecting the vendor's own state machine, docs/vendors/<type>.md §5), how to read a
stored record back as plain canonical values (an independent mapping, not syncd's), and where the
sandbox faults of the test go (docs/vendors/README.md "Sandbox control API").
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from syncd.sandboxkit.seedgen import SeedDataset

__all__ = ["ADAPTERS", "FaultSpot", "RecordView", "VendorAdapter", "expected_status"]

BUSINESS_OPEN, BUSINESS_CLOSE = 8, 18
"""Business hours (UTC) that reschedules stay inside, like the seed data."""


@dataclass(frozen=True)
class RecordView:
    """A vendor record read back as canonical values; references are the vendor's own ids."""

    external_id: str
    deleted: bool
    status: str
    start: datetime
    notes: str | None
    reference: str | None
    patient: str | None
    practitioner: str | None
    location: str | None
    service: str | None


@dataclass(frozen=True)
class FaultSpot:
    """Where a fault of one kind goes: the request method and path glob it matches."""

    method: str
    path: str


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("+0000", "+00:00")).astimezone(UTC)


def _norm_notes(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def later_start(start: datetime, end: datetime, hours: int) -> datetime:
    """``start`` moved ``hours`` later, kept inside business hours (the next day when it would spill over)."""
    length = end - start
    moved = start + timedelta(hours=hours)
    close = moved.replace(hour=BUSINESS_CLOSE, minute=0, second=0, microsecond=0)
    if moved.hour < BUSINESS_OPEN or moved + length > close:
        moved = start + timedelta(days=1)
    return moved


class VendorAdapter(ABC):
    vendor: ClassVar[str]
    terminal_statuses: ClassVar[frozenset[str]] = frozenset({"fulfilled", "cancelled", "noshow", "entered-in-error"})
    create: ClassVar[FaultSpot]
    update: ClassVar[FaultSpot]
    read: ClassVar[FaultSpot]
    any_write: ClassVar[tuple[FaultSpot, ...]]
    rate_limit_ok: ClassVar[bool] = True
    """False where the sandbox's ``rate_limit`` fault is a signal syncd waits out for seconds (Salesforce: 5 s)."""
    notes_key: ClassVar[str]

    def external_id(self, rec: Mapping[str, Any]) -> str:
        return str(rec.get("id", rec.get("Id")))

    def is_appointment(self, rec: Mapping[str, Any]) -> bool:
        return True

    @abstractmethod
    def view(self, rec: Mapping[str, Any]) -> RecordView:
        """Per vendor."""

    def can_reschedule(self, rec: Mapping[str, Any]) -> bool:
        return not self.is_terminal(rec)

    def is_terminal(self, rec: Mapping[str, Any]) -> bool:
        return self.view(rec).status in self.terminal_statuses

    @abstractmethod
    def reschedule(self, rec: Mapping[str, Any], hours: int) -> dict[str, Any]:
        """Per vendor."""

    def notes(self, text: str) -> dict[str, Any]:
        return {self.notes_key: text}

    @abstractmethod
    def cancel(self) -> dict[str, Any]:
        """Per vendor."""

    def new_record(self, dataset: SeedDataset, key: str) -> dict[str, Any]:
        """The record another user creates for seed appointment ``key``: no ids, no syncd reference."""
        module = importlib.import_module(f"connectors.{self.vendor}.sandbox")
        body, _rows = module.seed_body(dataset)
        index = [a.key for a in dataset.appointments].index(key)
        appointments = [r for r in body["records"] if self.is_appointment(r)]
        return self.strip_new(dict(appointments[index]))

    @abstractmethod
    def strip_new(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Per vendor."""


class ZohoAdapter(VendorAdapter):
    vendor = "zoho_crm"
    create = FaultSpot("POST", "/crm/v7/Appointments__s")
    update = FaultSpot("PUT", "/crm/v7/Appointments__s*")
    read = FaultSpot("GET", "/crm/v7/Appointments__s*")
    any_write = (create, update)
    notes_key = "Additional_Information"

    def view(self, rec: Mapping[str, Any]) -> RecordView:
        native = rec.get("Status")
        note = str(rec.get("Cancellation_Note") or "").lower()
        if rec.get("_deleted_at"):
            status = "entered-in-error"
        elif native in ("Scheduled", "Overdue"):
            status = "booked"
        elif native == "Completed":
            status = "fulfilled"
        elif note == "no-show":
            status = "noshow"
        elif note == "entered in error":
            status = "entered-in-error"
        else:
            status = "cancelled"
        who = rec.get("Appointment_For") or {}
        return RecordView(
            external_id=self.external_id(rec), deleted=bool(rec.get("_deleted_at")), status=status,
            start=_utc(str(rec["Appointment_Start_Time"])), notes=_norm_notes(rec.get("Additional_Information")),
            reference=rec.get("Syncd_Id"), patient=f"{who.get('module')}:{who.get('id')}" if who else None,
            practitioner=(rec.get("Owner") or {}).get("id"), location=rec.get("Location"),
            service=(rec.get("Service_Name") or {}).get("id"),
        )

    def reschedule(self, rec: Mapping[str, Any], hours: int) -> dict[str, Any]:
        start = _utc(str(rec["Appointment_Start_Time"]))
        end = _utc(str(rec["Appointment_End_Time"]))
        new = later_start(start, end, hours)
        fmt = "%Y-%m-%dT%H:%M:%S+00:00"
        return {"Appointment_Start_Time": new.strftime(fmt),
                "Appointment_End_Time": (new + (end - start)).strftime(fmt)}

    def cancel(self) -> dict[str, Any]:
        return {"Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Patient request"}

    def strip_new(self, rec: dict[str, Any]) -> dict[str, Any]:
        rec.pop("id", None)
        rec.pop("Syncd_Id", None)
        return rec


class DentallyAdapter(VendorAdapter):
    vendor = "dentally"
    create = FaultSpot("POST", "/v1/appointments")
    update = FaultSpot("PUT", "/v1/appointments/*")
    read = FaultSpot("GET", "/v1/appointments*")
    any_write = (create, update)
    notes_key = "notes"

    def view(self, rec: Mapping[str, Any]) -> RecordView:
        state = rec.get("state")
        if rec.get("_deleted_at"):
            status = "entered-in-error"
        else:
            status = {
                "Pending": "pending", "Confirmed": "booked", "Arrived": "arrived", "In surgery": "arrived",
                "Completed": "fulfilled", "Did not attend": "noshow",
            }.get(str(state), "")
            if state == "Cancelled":
                reason = str(rec.get("cancellation_reason") or "").lower()
                status = "entered-in-error" if reason == "booked in error" else "cancelled"
        metadata = rec.get("metadata") or {}
        return RecordView(
            external_id=self.external_id(rec), deleted=bool(rec.get("_deleted_at")), status=status,
            start=_utc(str(rec["start_time"])), notes=_norm_notes(rec.get("notes")),
            reference=metadata.get("syncd_id"),
            patient=str(rec["patient_id"]) if rec.get("patient_id") is not None else None,
            practitioner=str(rec["practitioner_id"]) if rec.get("practitioner_id") is not None else None,
            location=rec.get("site_id"), service=rec.get("reason"),
        )

    def can_reschedule(self, rec: Mapping[str, Any]) -> bool:
        # "After an appointment is Confirmed, only the state and notes can be edited" (seed)
        return rec.get("state") == "Pending" and not rec.get("_deleted_at")

    def reschedule(self, rec: Mapping[str, Any], hours: int) -> dict[str, Any]:
        start, end = _utc(str(rec["start_time"])), _utc(str(rec["finish_time"]))
        new = later_start(start, end, hours)
        fmt = "%Y-%m-%dT%H:%M:%S.000Z"
        return {"start_time": new.strftime(fmt), "finish_time": (new + (end - start)).strftime(fmt)}

    def cancel(self) -> dict[str, Any]:
        return {"state": "Cancelled", "cancellation_reason_id": 2}  # "Cancelled by patient"

    def strip_new(self, rec: dict[str, Any]) -> dict[str, Any]:
        for key in ("id", "uuid"):
            rec.pop(key, None)
        rec["metadata"] = {}
        return rec


class SalesforceAdapter(VendorAdapter):
    vendor = "salesforce_health"
    create = FaultSpot("POST", "/services/data/*/connect/health/appointment-management/appointment")
    update = FaultSpot("PUT", "/services/data/*/connect/health/appointment-management/appointment/*")
    read = FaultSpot("GET", "/services/data/*")
    any_write = (create, update, FaultSpot("PATCH", "/services/data/*"))
    rate_limit_ok = False
    notes_key = "Comments"

    def is_appointment(self, rec: Mapping[str, Any]) -> bool:
        return (rec.get("attributes") or {}).get("type") == "ServiceAppointment"

    def view(self, rec: Mapping[str, Any]) -> RecordView:
        category = rec.get("StatusCategory")
        if rec.get("_deleted_at"):
            status = "entered-in-error"
        elif category == "Canceled":
            reason = str(rec.get("CancellationReason") or "").lower()
            status = "entered-in-error" if reason == "entered in error" else "cancelled"
        else:
            status = {
                "None": "pending" if rec.get("SchedStartTime") else "proposed", "Scheduled": "booked",
                "Dispatched": "booked", "InProgress": "arrived", "Completed": "fulfilled", "CannotComplete": "noshow",
            }.get(str(category), "")
        assigned = rec.get("_assigned_resources") or rec.get("_assigned") or []
        return RecordView(
            external_id=self.external_id(rec), deleted=bool(rec.get("_deleted_at")), status=status,
            start=_utc(str(rec["SchedStartTime"])), notes=_norm_notes(rec.get("Comments")),
            reference=rec.get("Syncd_Id__c"), patient=rec.get("ParentRecordId"),
            practitioner=assigned[0] if len(assigned) == 1 else None,
            location=rec.get("ServiceTerritoryId"), service=rec.get("WorkTypeId"),
        )

    def can_reschedule(self, rec: Mapping[str, Any]) -> bool:
        return rec.get("StatusCategory") in ("None", "Scheduled", "Dispatched") and not rec.get("_deleted_at")

    def reschedule(self, rec: Mapping[str, Any], hours: int) -> dict[str, Any]:
        start, end = _utc(str(rec["SchedStartTime"])), _utc(str(rec["SchedEndTime"]))
        new = later_start(start, end, hours)
        fmt = "%Y-%m-%dT%H:%M:%S.000+0000"
        return {"SchedStartTime": new.strftime(fmt), "SchedEndTime": (new + (end - start)).strftime(fmt)}

    def cancel(self) -> dict[str, Any]:
        return {"Status": "Canceled", "CancellationReason": "Patient request"}

    def strip_new(self, rec: dict[str, Any]) -> dict[str, Any]:
        for key in ("Id", "AppointmentNumber"):
            rec.pop(key, None)
        rec["Syncd_Id__c"] = None
        return rec


ADAPTERS: dict[str, VendorAdapter] = {
    a.vendor: a for a in (ZohoAdapter(), DentallyAdapter(), SalesforceAdapter())
}


def expected_status(vendor: str, canonical: str) -> str:
    """The canonical status a vendor record reads back as when it holds ``canonical`` (docs/vendors/<type>.md §9)."""
    if vendor == "zoho_crm" and canonical in ("proposed", "pending", "booked", "arrived", "checked-in"):
        return "booked"  # Scheduled (or Overdue) is Zoho's only open status
    if vendor in ("dentally", "salesforce_health") and canonical == "proposed":
        return "pending"
    if vendor == "dentally" and canonical == "checked-in":
        return "arrived"
    if vendor == "salesforce_health" and canonical == "checked-in":
        return "arrived"
    return canonical
