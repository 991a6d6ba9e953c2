"""Salesforce Health Cloud <-> canonical conversions (docs/vendors/salesforce_health.md §9).

Pure functions, no I/O. The mapping file (``mappings/salesforce_health.toml``) names the status
tables, field names and defaults; the functions here are the parts that need code and are
registered by name in :data:`FUNCTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from syncd.errors import MappingError
from syncd.mapping import VendorMapping
from syncd.model import Appointment, InvalidAppointment, Status

__all__ = [
    "FUNCTIONS",
    "appointment_to_row",
    "connect_body",
    "http_date",
    "native_status_for",
    "record_to_appointment",
    "sf_datetime_in",
    "status_category_in",
    "utc_z_out",
]

PARTICIPANT_FIELDS = frozenset({"patient", "practitioner", "location"})
"""Canonical fields carried by Connect ``participants``."""
SCHEDULING_FIELDS = frozenset({"start", "end", "patient", "practitioner", "location", "service_type"})
"""Canonical fields only the Connect PUT can change."""


def sf_datetime_in(value: str | None, field: str = "datetime") -> datetime | None:
    """``2026-12-10T09:00:00.000+0000`` (or any ISO 8601 form with an offset) -> aware UTC datetime."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MappingError(f"{field}: expected a datetime string", field=field)
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) >= 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"  # +0000 -> +00:00
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MappingError(f"{field}: not an ISO 8601 datetime", field=field) from None
    if parsed.tzinfo is None:
        raise MappingError(f"{field}: datetime without an offset", field=field)
    return parsed.astimezone(UTC)


def utc_z_out(value: datetime) -> str:
    """An aware datetime as the UTC ``YYYY-MM-DDTHH:MM:SSZ`` form syncd writes."""
    if value.tzinfo is None:
        raise MappingError("naive datetime cannot be written", field="start")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(value: datetime) -> str:
    """``Sun, 22 Nov 2026 10:15:03 GMT`` for ``If-Unmodified-Since``."""
    return format_datetime(value.astimezone(UTC).replace(microsecond=0), usegmt=True)


def status_category_in(mapping: VendorMapping, category: Any, has_times: bool, reason: Any) -> Status:
    """Canonical status from ``StatusCategory`` (plus the times and the cancellation reason)."""
    if not isinstance(category, str):
        raise MappingError(f"{mapping.vendor}: StatusCategory missing or not a string", field="status")
    status = mapping.to_canonical(category)
    if category == "None" and not has_times:
        return Status(mapping.defaults.get("unscheduled_status", "proposed"))
    if status is Status.CANCELLED:
        eie = str(mapping.defaults.get("entered_in_error_reason", "Entered in error"))
        if isinstance(reason, str) and reason.strip().casefold() == eie.casefold():
            return Status.ENTERED_IN_ERROR
    return status


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sf_datetime_in": sf_datetime_in,
    "utc_z_out": utc_z_out,
    "status_category_in": status_category_in,
}


def _opt_str(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MappingError(f"{key}: expected a string", field=key)
    return value


def record_to_appointment(
    mapping: VendorMapping, row: Mapping[str, Any], resources: Sequence[str] = ()
) -> Appointment:
    """One ServiceAppointment row (+ its AssignedResource ids) as a canonical appointment."""
    f = mapping.fields
    time_in = mapping.fn("time_in")
    start = time_in(row.get(f["start"]), "start")
    end = time_in(row.get(f["end"]), "end")
    if (start is None) != (end is None):
        raise MappingError("start and end must be both set or both empty", field="end")
    reason = _opt_str(row, f["cancellation_reason"])
    status = mapping.fn("status_in")(mapping, row.get("StatusCategory"), start is not None, reason)
    extra: dict[str, Any] = {}
    channel = _opt_str(row, f["channel"])
    if channel is not None:
        extra["channel_id"] = channel
    ordered = list(dict.fromkeys(resources))
    if len(ordered) > 1:
        extra["resources"] = ordered
    try:
        return Appointment(
            status=status,
            start=start,
            end=end,
            patient=_opt_str(row, f["patient"]),
            practitioner=ordered[0] if ordered else None,
            location=_opt_str(row, f["location"]),
            service_type=_opt_str(row, f["service_type"]),
            description=_opt_str(row, f["description"]),
            notes=_opt_str(row, f["notes"]),
            cancellation_reason=reason if status in (Status.CANCELLED, Status.ENTERED_IN_ERROR) else None,
            native_status=_opt_str(row, "Status"),
            extra=extra,
        )
    except InvalidAppointment as exc:
        raise MappingError(f"{mapping.vendor}: {exc}", field="start") from None


def native_status_for(mapping: VendorMapping, desired: Status, current_category: str | None) -> str | None:
    """The Status value to write for ``desired`` from ``current_category``; None when nothing must
    be written (already there, or ``booked`` over Dispatched). Raises MappingError when none fits."""
    native = mapping.to_native(desired)
    current = mapping.status_in.get(current_category or "")
    if current_category is not None and current is not None:
        if desired is Status.BOOKED and current_category in ("Scheduled", "Dispatched"):
            return None
        if desired in (Status.ARRIVED, Status.CHECKED_IN) and current is Status.ARRIVED:
            return None
        if desired in (Status.PROPOSED, Status.PENDING) and current_category == "None":
            return None
        if desired in (Status.FULFILLED, Status.NOSHOW) and current is desired:
            return None
    return native


def appointment_to_row(mapping: VendorMapping, appointment: Appointment) -> dict[str, Any]:
    """The ServiceAppointment fields an appointment is held in after syncd writes it (tests, audits).
    Raises MappingError when no native status fits."""
    f = mapping.fields
    native = mapping.to_native(appointment.status)
    categories = dict(mapping.options.get("category_of", {}))
    reason = appointment.cancellation_reason
    if appointment.status is Status.ENTERED_IN_ERROR:
        reason = str(mapping.defaults.get("entered_in_error_reason", "Entered in error"))
    elif appointment.status is Status.CANCELLED and reason is None:
        reason = str(mapping.defaults.get("sync_cancel_reason", "Other"))
    time_out = mapping.fn("time_out")
    return {
        "Status": native,
        "StatusCategory": categories.get(native, native),
        f["start"]: time_out(appointment.start) if appointment.start is not None else None,
        f["end"]: time_out(appointment.end) if appointment.end is not None else None,
        f["patient"]: appointment.patient,
        f["location"]: appointment.location,
        f["service_type"]: appointment.service_type,
        f["channel"]: appointment.extra.get("channel_id"),
        f["notes"]: appointment.notes,
        f["description"]: appointment.description,
        f["cancellation_reason"]: reason,
    }


def connect_body(
    appointment: Appointment,
    *,
    external_id: str | None,
    timezone: str,
    channel_id: str | None,
) -> dict[str, Any]:
    """The Connect LS body (update when ``external_id`` is set, else create): every replaced field."""
    body: dict[str, Any] = {}
    if external_id is not None:
        body["id"] = external_id
    if appointment.service_type is not None:
        body["workTypeId"] = appointment.service_type
    if channel_id is not None:
        body["channelId"] = channel_id
    if appointment.start is not None and appointment.end is not None:
        body["startDate"] = utc_z_out(appointment.start)
        body["endDate"] = utc_z_out(appointment.end)
    body["timeZone"] = timezone
    if appointment.notes is not None:
        body["comment"] = appointment.notes
    participants: list[dict[str, Any]] = []
    if appointment.patient is not None:
        participants.append({"reference": f"Patient/{appointment.patient}"})
    resources: list[str] = []
    if appointment.practitioner is not None:
        resources.append(appointment.practitioner)
        extra_resources = appointment.extra.get("resources")
        if isinstance(extra_resources, list):
            # the first listed resource is the one the canonical practitioner replaced
            resources.extend(str(r) for r in extra_resources[1:] if r != appointment.practitioner)
    for resource in resources:
        participants.append({"reference": f"Practitioner/{resource}", "isReferenceRequired": True})
    if appointment.location is not None:
        participants.append({"reference": f"Facility/{appointment.location}"})
    body["participants"] = participants
    return body
