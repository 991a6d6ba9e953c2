"""Zoho CRM <-> canonical conversions (docs/vendors/zoho_crm.md §9), driven by ``mappings/zoho_crm.toml``.

The functions registered in :data:`FUNCTIONS` are the named conversions the mapping file refers to;
:class:`ZohoMapper` applies the whole mapping to one record (read) or one desired appointment (write).
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.connectorkit.mapper import MapperBase
from syncd.errors import MappingError
from syncd.mapping import VendorMapping, offset_time_to_utc
from syncd.model import Appointment, Status

__all__ = [
    "FUNCTIONS",
    "NATIVE_STATUSES",
    "StatusWrite",
    "ZohoMapper",
    "patient_to_zoho_lookup",
    "utc_to_zoho_time",
    "zoho_cancellation_who",
    "zoho_lookup_to_patient",
    "zoho_time_to_utc",
]

NATIVE_STATUSES = ("Scheduled", "Overdue", "Completed", "Cancelled")



def zoho_time_to_utc(value: Any, field: str = "datetime") -> datetime | None:
    """A Zoho ISO 8601 datetime with offset (e.g. ``2026-12-01T14:30:00+05:30``) as a UTC instant."""
    return offset_time_to_utc(value, vendor="zoho_crm", field=field)


def utc_to_zoho_time(value: datetime) -> str:
    """A UTC instant as Zoho wants it written: second precision, ``+00:00`` offset (no fraction, no ``Z``)."""
    if value.tzinfo is None:
        raise MappingError("zoho_crm: a naive datetime cannot be written", field="start")
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def zoho_lookup_to_patient(value: Any) -> str | None:
    """``Appointment_For`` lookup -> patient external id ``<module>:<id>``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value.get("id") or not value.get("module"):
        raise MappingError("zoho_crm: Appointment_For lacks its module or id", field="patient")
    return f"{value['module']}:{value['id']}"


def patient_to_zoho_lookup(value: str) -> dict[str, str]:
    """Patient external id ``<module>:<id>`` -> the ``Appointment_For`` lookup to write."""
    module, sep, rid = value.partition(":")
    if not sep or not module or not rid or ":" in rid:
        raise MappingError("zoho_crm: patient id must look like <module>:<id>", field="patient")
    return {"module": module, "id": rid}


def zoho_cancellation_who(text: str, words: tuple[str, ...] = ("patient", "customer")) -> str:
    """``Cancellation_Reason`` for a cancellation text: ``By Customer`` when it names the patient/customer."""
    lowered = text.lower()
    return "By Customer" if any(word in lowered for word in words) else "By Team"


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "zoho_time_to_utc": zoho_time_to_utc,
    "utc_to_zoho_time": utc_to_zoho_time,
    "zoho_lookup_to_patient": zoho_lookup_to_patient,
    "patient_to_zoho_lookup": patient_to_zoho_lookup,
    "zoho_cancellation_who": zoho_cancellation_who,
}


def _lookup_id(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        rid = value.get("id")
        return str(rid) if rid not in (None, "") else None
    raise MappingError(f"zoho_crm: {field} is not a lookup", field=field)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """What a status change needs on the wire (empty ``values``: nothing to write)."""

    values: dict[str, Any]
    conflict: str | None = None
    """Set when the change would move a terminal native status: syncd records a conflict instead."""


class ZohoMapper(MapperBase):
    """The mapping file applied to Zoho records and canonical appointments."""

    def __init__(self, mapping: VendorMapping) -> None:
        super().__init__(mapping)
        self.terminal = frozenset(self.options["terminal"])
        self.open = frozenset(self.options["open"])
        self.no_status_write = frozenset(Status(s) for s in self.options["no_status_write"])
        self.cancel_notes = {k.lower(): Status(v) for k, v in dict(self.options["cancel_notes"]).items()}
        self.cancel_out = {Status(k): dict(v) for k, v in dict(self.options["cancel_out"]).items()}
        self.customer_words = tuple(self.options.get("customer_words", ("patient", "customer")))
        self.replace_prefix = str(self.defaults["replace_reason"])

    # -- read ----------------------------------------------------------------------------------
    def time_in(self, raw: Mapping[str, Any], key: str) -> datetime | None:
        result: datetime | None = self.mapping.fn("time_in")(raw.get(self.fields[key]), key)
        return result

    def version(self, raw: Mapping[str, Any]) -> str | None:
        """The record's version: ``Modified_Time`` normalised to UTC (an opaque string to the core)."""
        when = self.time_in(raw, "version")
        return utc_to_zoho_time(when) if when is not None else None

    def external_id(self, raw: Mapping[str, Any]) -> str:
        return str(raw.get(self.fields["external_id"]) or "")

    def native_status(self, raw: Mapping[str, Any]) -> str:
        return str(raw.get(self.fields["status"]) or "")

    def canonical_status(self, raw: Mapping[str, Any]) -> Status:
        native = self.native_status(raw)
        status = self.mapping.to_canonical(native)
        if native == "Cancelled":
            note_value = raw.get(self.fields["cancellation_reason"])
            note = note_value.strip().lower() if isinstance(note_value, str) else ""
            status = self.cancel_notes.get(note, status)
        return status

    def to_appointment(self, raw: Mapping[str, Any]) -> Appointment:
        """One Zoho record -> canonical appointment (vendor-id references); :class:`MappingError` if it cannot be."""
        status = self.canonical_status(raw)
        start = self.time_in(raw, "start")
        end = self.time_in(raw, "end")
        duration = raw.get(self.fields["duration"])
        if start is not None and end is None and isinstance(duration, int) and duration > 0:
            try:
                end = start + timedelta(minutes=duration)
            except OverflowError:
                raise MappingError("zoho_crm: Duration is out of range", field="end") from None
        if (start is None) != (end is None):
            raise MappingError("zoho_crm: record has a start without an end (or the reverse)", field="end")
        reason: str | None = None
        if status in (Status.CANCELLED, Status.ENTERED_IN_ERROR):
            reason = raw.get(self.fields["cancellation_reason"]) or raw.get(self.fields["cancellation_who"]) or None
        service = raw.get(self.fields["service_type"])
        extra: dict[str, Any] = {}
        if isinstance(service, Mapping) and service.get("name"):
            extra["service_name"] = str(service["name"])
        if isinstance(duration, int):
            extra["duration"] = duration
        return self.appointment(
            None,
            status=status,
            start=start,
            end=end,
            patient=self.mapping.fn("patient_in")(raw.get(self.fields["patient"])),
            practitioner=_lookup_id(raw.get(self.fields["practitioner"]), "practitioner"),
            location=raw.get(self.fields["location"]) or None,
            service_type=_lookup_id(service, "service_type"),
            description=self.description_in(raw),
            notes=raw.get(self.fields["notes"]) or None,
            cancellation_reason=reason,
            native_status=self.native_status(raw),
            extra=extra,
        )

    def description_in(self, raw: Mapping[str, Any]) -> str | None:
        """``Appointment_Name`` is mandatory, so syncd fills it with the service name (or a placeholder)
        when the appointment has no description: that filler reads back as "no description"."""
        name = raw.get(self.fields["description"]) or None
        service = raw.get(self.fields["service_type"])
        service_name = service.get("name") if isinstance(service, Mapping) else None
        if name is not None and name in (service_name, str(self.defaults["appointment_name"])):
            return None
        return str(name) if name is not None else None

    def syncd_id(self, raw: Mapping[str, Any]) -> str | None:
        value = raw.get(self.fields["reference"])
        return str(value) if value else None

    # -- write ---------------------------------------------------------------------------------
    def source(self, desired: Appointment) -> str:
        return str(desired.extra.get("source_system") or self.defaults["source_fallback"])

    def appointment_name(self, desired: Appointment) -> str:
        if desired.description:
            return desired.description
        return str(desired.extra.get("service_name") or self.defaults["appointment_name"])

    def location_out(self, value: str | None, *, creating: bool, has_address: bool = False) -> str:
        location = value or str(self.defaults["default_location"])
        if location not in self.options["locations"]:
            raise MappingError("zoho_crm: location must be Business Address or Client Address", field="location")
        if location not in self.options["creatable_locations"] and (creating or not has_address):
            raise MappingError("zoho_crm: Client Address needs an address", field="location")
        return location

    def cancellation(self, desired: Appointment, *, new_id: str | None = None) -> dict[str, Any]:
        """Status, ``Cancellation_Reason`` and note for a cancelled / no-show / entered-in-error appointment."""
        fixed = self.cancel_out.get(desired.status)
        if fixed is not None:
            who, note = str(fixed["who"]), str(fixed["note"])
        else:
            note = desired.cancellation_reason or str(self.defaults["sync_cancel_reason"])
            if note.startswith(self.replace_prefix) and new_id is not None:
                note = str(self.defaults["replaced_note"]).format(new_id=new_id)
                who = str(self.defaults["replaced_who"])
            else:
                if note.strip().lower() in self.cancel_notes:
                    raise MappingError("zoho_crm: this cancellation text would read back as another status",
                                       field="cancellation_reason")
                who = self.mapping.fn("cancellation_who")(note, self.customer_words)
        return {
            self.fields["status"]: self.mapping.to_native(desired.status),
            self.fields["cancellation_who"]: who,
            self.fields["cancellation_reason"]: note,
        }

    def completion(self, desired: Appointment) -> dict[str, Any]:
        return {
            self.fields["status"]: self.mapping.to_native(Status.FULFILLED),
            self.fields["job_sheet_name"]: str(self.defaults["job_sheet_name"]),
            self.fields["job_sheet_description"]: str(self.defaults["job_sheet_description"]).format(
                source=self.source(desired)
            ),
        }

    def status_write(
        self, native: str, current: Appointment | None, desired: Appointment, *, auto_complete: bool,
        new_id: str | None = None,
    ) -> StatusWrite:
        """The status fields to write to move a record in ``native`` status to ``desired.status``."""
        status = desired.status
        if status in self.no_status_write:
            return StatusWrite({})
        if status in (Status.PROPOSED, Status.PENDING, Status.BOOKED):
            if desired.start is None:
                raise MappingError(f"zoho_crm: no native status fits {status.value!r} without times", field="status")
            self.mapping.to_native(status)
            if native in self.terminal:
                return StatusWrite({}, conflict=f"the Zoho record is {native} (terminal)")
            return StatusWrite({})
        native_target = self.mapping.to_native(status)  # MappingError for waitlist
        if status is Status.FULFILLED:
            if native == native_target:
                return StatusWrite({})
            if native in self.terminal:
                return StatusWrite({}, conflict=f"the Zoho record is {native} (terminal)")
            if auto_complete:
                return StatusWrite({})  # Zoho completes it at Appointment_End_Time itself
            return StatusWrite(self.completion(desired))
        values = self.cancellation(desired, new_id=new_id)
        if native in self.terminal:
            if native == native_target and current is not None and current.status == status and (
                current.cancellation_reason == values[self.fields["cancellation_reason"]]
                or status in self.cancel_out
            ):
                return StatusWrite({})
            return StatusWrite({}, conflict=f"the Zoho record is {native} (terminal)")
        return StatusWrite(values)

    def create_body(self, desired: Appointment, canonical_id: str) -> dict[str, Any]:
        """The record for ``POST /Appointments__s`` (docs/vendors/zoho_crm.md §4 create column)."""
        if not desired.status.creatable:
            raise MappingError(f"zoho_crm: an appointment is not created in status {desired.status.value!r}",
                               field="status")
        if desired.start is None:
            raise MappingError("zoho_crm: Appointment_Start_Time is mandatory", field="start")
        for name in ("patient", "practitioner", "service_type"):
            if not getattr(desired, name):
                raise MappingError(f"zoho_crm: {name} is mandatory on create", field=name)
        assert desired.patient is not None and desired.service_type is not None
        body: dict[str, Any] = {
            self.fields["description"]: self.appointment_name(desired),
            self.fields["patient"]: self.mapping.fn("patient_out")(desired.patient),
            self.fields["service_type"]: {"id": desired.service_type},
            self.fields["practitioner"]: {"id": desired.practitioner},
            self.fields["start"]: self.mapping.fn("time_out")(desired.start),
            self.fields["location"]: self.location_out(desired.location, creating=True),
            self.fields["status"]: self.mapping.to_native(desired.status),
            self.fields["reference"]: canonical_id,
        }
        if desired.notes:
            body[self.fields["notes"]] = desired.notes
        return body

    def field_values(self, name: str, desired: Appointment, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Wire values for one changed canonical field (not status, not start, not end)."""
        value = getattr(desired, name)
        if name == "patient":
            if not value:
                raise MappingError("zoho_crm: patient cannot be removed", field=name)
            return {self.fields["patient"]: self.mapping.fn("patient_out")(value)}
        if name == "practitioner":
            if not value:
                raise MappingError("zoho_crm: practitioner cannot be removed", field=name)
            return {self.fields["practitioner"]: {"id": value}}
        if name == "service_type":
            if not value:
                raise MappingError("zoho_crm: service cannot be removed", field=name)
            return {self.fields["service_type"]: {"id": value}}
        if name == "location":
            has_address = bool(raw.get(self.fields["address"]))
            return {self.fields["location"]: self.location_out(value, creating=False, has_address=has_address)}
        if name == "description":
            return {self.fields["description"]: self.appointment_name(desired)}
        if name == "notes":
            return {self.fields["notes"]: value or None}
        return {}

    def reschedule(self, desired: Appointment) -> dict[str, Any]:
        assert desired.start is not None
        return {
            self.fields["start"]: self.mapping.fn("time_out")(desired.start),
            self.fields["reschedule_reason"]: str(self.defaults["reschedule_reason"]),
            self.fields["reschedule_note"]: str(self.defaults["reschedule_note"]).format(source=self.source(desired)),
        }

    def vendor_record(self, desired: Appointment, canonical_id: str, *, external_id: str,
                      modified: datetime, duration_min: int) -> dict[str, Any]:
        """The record Zoho would hold after syncd wrote ``desired`` (create plus any status write).

        Used to build the expected post-write record (echo fingerprint) and by the round-trip tests.
        """
        creatable = desired.with_changes(status=Status.BOOKED, cancellation_reason=None)
        body = self.create_body(creatable, canonical_id)
        body[self.fields["status"]] = self.mapping.to_native(Status.BOOKED)
        if desired.status in (Status.FULFILLED,):
            body.update(self.completion(desired))
        elif desired.status not in (Status.PROPOSED, Status.PENDING, Status.BOOKED) and \
                desired.status not in self.no_status_write:
            body.update(self.cancellation(desired))
        assert desired.start is not None
        body[self.fields["external_id"]] = external_id
        body[self.fields["end"]] = self.mapping.fn("time_out")(desired.start + timedelta(minutes=duration_min))
        body[self.fields["duration"]] = duration_min
        body[self.fields["version"]] = self.mapping.fn("time_out")(modified)
        return body
