"""Onlive <-> canonical conversions (docs/vendors/onlive.md §9), named for ``mappings/onlive.toml``.

Times are UTC instants written as ``YYYY-MM-DDTHH:mm:ss.sssZ``; the patient is ``guests[0].email``
(lower-cased), the practitioner ``calendarIds[0]``, the location ``extraFields.location``. The native
status is kept in ``Appointment.native_status`` and the Onlive-only values a round trip keeps
(``subStatus``, ``title``) in ``Appointment.extra`` under ``onlive_*`` keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from syncd.connectorkit.mapper import MapperBase
from syncd.errors import MappingError
from syncd.mapping import VendorMapping
from syncd.model import Appointment, Status

__all__ = [
    "EXTRA_SUB_STATUS",
    "EXTRA_TITLE",
    "FUNCTIONS",
    "NATIVE_STATUSES",
    "OnliveMapper",
    "guests_to_patient",
    "location_to_extra_fields",
    "onlive_time_to_utc",
    "patient_to_guests",
    "utc_to_onlive_time",
]

NATIVE_STATUSES = ("pending", "confirmed", "cancelled", "completed", "no-show")
EXTRA_SUB_STATUS = "onlive_sub_status"
EXTRA_TITLE = "onlive_title"

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)$"
)


def onlive_time_to_utc(value: Any, field: str = "time") -> datetime | None:
    """An Onlive ISO 8601 instant (``Z`` or an offset) as an aware UTC datetime; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ISO.match(value.strip()):
        raise MappingError(f"onlive: {field} is not an ISO 8601 date-time with offset", field=field)
    text = value.strip().replace("Z", "+00:00")
    match = re.match(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?([+-].*)$", text)
    if match is not None and match.group(2) is not None:
        text = f"{match.group(1)}.{match.group(2)[:6].ljust(6, '0')}{match.group(3)}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MappingError(f"onlive: {field} is not a valid date-time", field=field) from None
    return parsed.astimezone(UTC)


def utc_to_onlive_time(value: datetime) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` (UTC, milliseconds)."""
    if value.tzinfo is None:
        raise MappingError("onlive: naive datetime cannot be written", field="time")
    when = value.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def guests_to_patient(guests: Any) -> str | None:
    """The patient's external id: the lower-cased e-mail of guest 0 (None without guests)."""
    if not isinstance(guests, list) or not guests:
        return None
    first = guests[0]
    email = first.get("email") if isinstance(first, dict) else None
    if not isinstance(email, str) or not email.strip():
        raise MappingError("onlive: guests[0] has no e-mail", field="patient")
    return email.strip().lower()


def patient_to_guests(current: Any, email: str) -> list[dict[str, Any]]:
    """The freshly read ``guests`` with entry 0 replaced by ``email`` (part 4): other guests kept as they
    are; if ``email`` is already further down, that entry moves to 0 instead (no duplicate)."""
    if not email or "@" not in email:
        raise MappingError("onlive: the patient must be an e-mail address", field="patient")
    guests = [dict(g) for g in current if isinstance(g, dict)] if isinstance(current, list) else []
    wanted = email.strip().lower()
    rest = guests[1:]
    for index, guest in enumerate(rest):
        if str(guest.get("email") or "").strip().lower() == wanted:
            return [guest, *rest[:index], *rest[index + 1:]]
    return [{"email": wanted}, *rest]


def location_to_extra_fields(current: Any, location: str | None) -> dict[str, Any]:
    """The freshly read ``extraFields`` copied whole with only ``location`` set (or removed)."""
    extra = dict(current) if isinstance(current, dict) else {}
    if location is None:
        extra.pop("location", None)
    else:
        extra["location"] = location
    return extra


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MappingError(f"onlive: {field} is not text", field=field)
    return value


class OnliveMapper(MapperBase):
    """Record-level conversions driven by the mapping file."""

    def __init__(self, mapping: VendorMapping) -> None:
        super().__init__(mapping)
        self.time_in: Callable[..., datetime | None] = mapping.fn("time_in")
        self.time_out: Callable[[datetime], str] = mapping.fn("time_out")
        self.patient_in: Callable[[Any], str | None] = mapping.fn("patient_in")
        self.patient_out: Callable[[Any, str], list[dict[str, Any]]] = mapping.fn("patient_out")
        self.location_out: Callable[[Any, str | None], dict[str, Any]] = mapping.fn("location_out")
        options = mapping.options
        self.closed = frozenset(str(s) for s in options["closed"])
        self.vendor_only = frozenset(str(s) for s in options["vendor_only"])
        self.error_sub_status = str(options["error_sub_status"])
        self.cancel_sub_status: dict[str, str] = {str(k): str(v) for k, v in dict(options["cancel_sub_status"]).items()}
        self.reason_max = int(options["reason_max_chars"])
        titles = dict(options.get("service_titles", {}))
        self.service_titles: dict[str, str] = {str(k): str(v) for k, v in titles.items()}

    # -- reading --------------------------------------------------------------------------------
    def external_id(self, raw: Mapping[str, Any]) -> str:
        return str(raw.get(self.fields["external_id"]) or "")

    def modified_at(self, raw: Mapping[str, Any]) -> datetime | None:
        try:
            return self.time_in(raw.get(self.fields["version"]), "updatedAt")
        except MappingError:
            return None

    def version(self, raw: Mapping[str, Any]) -> str | None:
        when = self.modified_at(raw)
        return self.time_out(when) if when is not None else None

    def is_deleted(self, raw: Mapping[str, Any]) -> bool:
        return raw.get(self.fields["deleted"]) not in (None, "")

    def syncd_id(self, raw: Mapping[str, Any]) -> str | None:
        value = raw.get(self.fields["reference"])
        return str(value) if value not in (None, "") else None

    def replaces(self, raw: Mapping[str, Any]) -> str | None:
        extra = raw.get(self.fields["extra_fields"])
        value = extra.get(self.fields["replaces_marker"]) if isinstance(extra, dict) else None
        return str(value) if value not in (None, "") else None

    def native_status(self, raw: Mapping[str, Any]) -> str:
        return str(raw.get(self.fields["status"]) or "")

    def status_of(self, raw: Mapping[str, Any]) -> Status:
        """Part 9: cancelled is refined by subStatus; a cancelled guest 0 means cancelled."""
        native = raw.get(self.fields["status"])
        if not isinstance(native, str):
            raise MappingError("onlive: status missing", field="status")
        status = self.mapping.to_canonical(native)
        if native == "cancelled":
            if raw.get(self.fields["sub_status"]) == self.error_sub_status:
                return Status.ENTERED_IN_ERROR
            return Status.CANCELLED
        guests = raw.get(self.fields["patient"])
        if isinstance(guests, list) and guests and isinstance(guests[0], dict) \
                and guests[0].get("status") == "cancelled" and native not in self.closed:
            return Status.CANCELLED
        return status

    def to_appointment(self, raw: Mapping[str, Any]) -> Appointment:
        f = self.fields
        status = self.status_of(raw)
        start = self.time_in(raw.get(f["start"]), "startAt")
        end = self.time_in(raw.get(f["end"]), "endAt")
        calendars = raw.get(f["practitioner"])
        practitioner = str(calendars[0]) if isinstance(calendars, list) and calendars else None
        extra_fields = raw.get(f["extra_fields"])
        location = extra_fields.get(f["location"]) if isinstance(extra_fields, dict) else None
        service = raw.get(f["service_type"])
        reason = None
        if status in (Status.CANCELLED, Status.ENTERED_IN_ERROR):
            reason = _text(raw.get(f["cancellation_reason"]), "cancellation_reason")
        extra: dict[str, Any] = {}
        if raw.get(f["sub_status"]) is not None:
            extra[EXTRA_SUB_STATUS] = raw.get(f["sub_status"])
        if raw.get(f["title"]) is not None:
            extra[EXTRA_TITLE] = raw.get(f["title"])
        return self.appointment(
            "start",
            status=status,
            start=start,
            end=end,
            patient=self.patient_in(raw.get(f["patient"])),
            practitioner=practitioner,
            location=str(location) if location is not None else None,
            service_type=str(service) if service not in (None, "") else None,
            description=_text(raw.get(f["description"]), "description"),
            notes=_text(raw.get(f["notes"]), "notes"),
            cancellation_reason=reason,
            native_status=self.native_status(raw),
            extra=extra,
        )

    # -- writing --------------------------------------------------------------------------------
    def target_status(self, desired: Appointment) -> str:
        """The native status ``desired`` maps to; MappingError when none fits (waitlist)."""
        return self.mapping.to_native(desired.status)

    def is_cancel(self, desired: Appointment) -> bool:
        return desired.status in (Status.CANCELLED, Status.ENTERED_IN_ERROR)

    def title_for(self, desired: Appointment) -> str:
        title = desired.extra.get(EXTRA_TITLE)
        if isinstance(title, str) and title:
            return title
        if desired.service_type and desired.service_type in self.service_titles:
            return self.service_titles[desired.service_type]
        return str(self.mapping.defaults["title"])

    def create_body(self, desired: Appointment, canonical_id: str, *, replaces: str | None = None) -> dict[str, Any]:
        """Part 4 create: title, times, calendarIds, guests, service, status, texts, externalId."""
        f = self.fields
        if not desired.status.creatable:
            raise MappingError(f"onlive: an appointment in status {desired.status.value!r} is not created",
                               field="status")
        native = self.target_status(desired)
        if desired.start is None or desired.end is None:
            raise MappingError("onlive: startAt and endAt are required", field="start")
        if not desired.practitioner:
            raise MappingError("onlive: a calendar (practitioner) is required", field="practitioner")
        if not desired.patient:
            raise MappingError("onlive: a guest (patient) is required", field="patient")
        extra = self.location_out({}, desired.location)
        if replaces:
            extra[f["replaces_marker"]] = replaces
        body: dict[str, Any] = {
            f["title"]: self.title_for(desired),
            f["start"]: self.time_out(desired.start),
            f["end"]: self.time_out(desired.end),
            f["practitioner"]: [desired.practitioner],
            f["patient"]: self.patient_out([], desired.patient),
            f["status"]: native,
            "origin": str(self.mapping.defaults["origin"]),
            f["reference"]: canonical_id,
        }
        if desired.service_type:
            body[f["service_type"]] = desired.service_type
        if extra:
            body[f["extra_fields"]] = extra
        if desired.description is not None:
            body[f["description"]] = desired.description
        if desired.notes is not None:
            body[f["notes"]] = desired.notes
        return body

    def update_body(self, raw: Mapping[str, Any], base: Appointment, desired: Appointment,
                    names: set[str]) -> dict[str, Any]:
        """Part 4 update: only the fields of ``names`` that still differ from the fresh record ``raw``.

        ``guests`` and ``extraFields`` are built from the fresh copy. Status: open targets only
        (cancelling is its own call; completed / no-show are set by Onlive only and not written).
        """
        f = self.fields
        body: dict[str, Any] = {}
        if "start" in names or "end" in names:
            if desired.start is None or desired.end is None:
                raise MappingError("onlive: startAt and endAt cannot be cleared", field="start")
            if desired.start != base.start:
                body[f["start"]] = self.time_out(desired.start)
            if desired.end != base.end:
                body[f["end"]] = self.time_out(desired.end)
        if "patient" in names and (desired.patient or "").lower() != (base.patient or ""):
            if not desired.patient:
                raise MappingError("onlive: guests cannot be cleared", field="patient")
            body[f["patient"]] = self.patient_out(raw.get(f["patient"]), desired.patient)
        if "location" in names and desired.location != base.location:
            body[f["extra_fields"]] = self.location_out(raw.get(f["extra_fields"]), desired.location)
        if "description" in names and desired.description != base.description:
            body[f["description"]] = desired.description
        if "notes" in names and desired.notes != base.notes:
            body[f["notes"]] = desired.notes
        if "status" in names and not self.is_cancel(desired):
            native = self.target_status(desired)
            if native not in self.vendor_only and native != self.native_status(raw):
                body[f["status"]] = native
        return body

    def cancel_body(self, desired: Appointment, *, reason: str, sub_status: str | None = None) -> dict[str, Any]:
        """Part 4 cancel: ``{"status":"cancelled","subStatus":…,"strategy":"guest-appointment","reason":…}``."""
        if len(reason) > self.reason_max:
            raise MappingError(f"onlive: cancellation reason longer than {self.reason_max} characters",
                               field="cancellation_reason")
        sub = sub_status or self.cancel_sub_status.get(desired.status.value) or self.cancel_sub_status["cancelled"]
        return {
            "status": "cancelled",
            "subStatus": sub,
            "strategy": str(self.mapping.defaults["cancel_strategy"]),
            "reason": reason,
        }


#: the conversions the mapping file names (``[functions]`` of mappings/onlive.toml)
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "onlive_time_to_utc": onlive_time_to_utc,
    "utc_to_onlive_time": utc_to_onlive_time,
    "guests_to_patient": guests_to_patient,
    "patient_to_guests": patient_to_guests,
    "location_to_extra_fields": location_to_extra_fields,
}
