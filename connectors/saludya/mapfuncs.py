"""SaludYa <-> canonical conversions (docs/vendors/saludya.md §9), named for ``mappings/saludya.toml``.

Times: SaludYa keeps the clinic's local wall clock (``date`` + ``time``, minutes) in the connector's
``timezone``; an ambiguous or non-existent local time is a :class:`MappingError`, never a guess.
Idempotency: the canonical id lives in a final ``[syncd:<id>]`` line of ``notes``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.connectorkit.mapper import MapperBase
from syncd.errors import MappingError
from syncd.mapping import VendorMapping
from syncd.model import Appointment, Status

__all__ = [
    "FUNCTIONS",
    "MARKER_RE",
    "NATIVE_STATUSES",
    "SaludYaMapper",
    "Split",
    "saludya_duration_minutes",
    "saludya_join_marker",
    "saludya_local_to_utc",
    "saludya_split_marker",
    "saludya_utc_to_local",
]

NATIVE_STATUSES = ("scheduled", "confirmed", "in_progress", "completed", "cancelled", "no_show")
#: a final notes line holding syncd's reference (part 9)
MARKER_RE = re.compile(r"\[syncd(-replaced)?:([A-Za-z0-9_-]{1,64})\]")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


# -- time --------------------------------------------------------------------------------------------
def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def saludya_local_to_utc(day: Any, hhmm: Any, timezone: str) -> datetime:
    """``date`` + ``time`` (clinic wall clock) -> UTC; MappingError when malformed, ambiguous or in a gap."""
    if not isinstance(day, str) or not _DATE_RE.fullmatch(day):
        raise MappingError("saludya: date is not YYYY-MM-DD", field="start")
    if not isinstance(hhmm, str) or not _TIME_RE.fullmatch(hhmm):
        raise MappingError("saludya: time is not HH:MM", field="start")
    try:
        naive = datetime.fromisoformat(f"{day}T{hhmm}")
    except ValueError:
        raise MappingError("saludya: date is not a calendar date", field="start") from None
    zone = _zone(timezone)
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    utc = first.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != naive:
        raise MappingError(f"saludya: local time does not exist in {timezone} (DST gap)", field="start")
    if first.utcoffset() != second.utcoffset():
        raise MappingError(f"saludya: local time is ambiguous in {timezone} (DST fold)", field="start")
    return utc


def saludya_utc_to_local(instant: datetime, timezone: str) -> tuple[str, str]:
    """UTC -> (``date``, ``time``); MappingError for seconds (never rounded) or an ambiguous local time."""
    if instant.second or instant.microsecond:
        raise MappingError("saludya: start has seconds; SaludYa keeps whole minutes", field="start")
    zone = _zone(timezone)
    local = instant.astimezone(zone)
    naive = local.replace(tzinfo=None)
    if naive.replace(tzinfo=zone, fold=0).utcoffset() != naive.replace(tzinfo=zone, fold=1).utcoffset():
        raise MappingError(f"saludya: local time would be ambiguous in {timezone} (DST fold)", field="start")
    return local.strftime("%Y-%m-%d"), local.strftime("%H:%M")


def saludya_duration_minutes(start: datetime, end: datetime, low: int = 5, high: int = 480) -> int:
    """(``end`` - ``start``) as whole minutes in [low, high]; MappingError otherwise."""
    span = end - start
    if span % timedelta(minutes=1):
        raise MappingError("saludya: duration is not a whole number of minutes", field="end")
    minutes = int(span / timedelta(minutes=1))
    if not low <= minutes <= high:
        raise MappingError(f"saludya: duration must be {low}-{high} minutes, got {minutes}", field="end")
    return minutes


# -- the notes marker --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Split:
    notes: str | None
    """Canonical notes (the marker line removed; None when nothing is left)."""
    reference: str | None
    """The canonical id of a ``[syncd:<id>]`` marker."""
    replaced: str | None
    """The canonical id of a ``[syncd-replaced:<id>]`` marker (the old record of a replace flow)."""


def saludya_split_marker(notes: Any) -> Split:
    """Strip a final marker line from SaludYa ``notes``."""
    if not isinstance(notes, str):
        return Split(None, None, None)
    head, sep, last = notes.rpartition("\n")
    match = MARKER_RE.fullmatch(last.strip())
    if match is None:
        return Split(notes if notes else None, None, None)
    rest = head if sep else ""
    text = rest if rest else None
    if match.group(1):
        return Split(text, None, match.group(2))
    return Split(text, match.group(2), None)


def saludya_join_marker(notes: str | None, canonical_id: str, *, max_len: int = 1000, replaced: bool = False) -> str:
    """Canonical notes + ``"\\n"`` + marker, the canonical part shortened so that the marker always fits."""
    if not MARKER_RE.fullmatch(f"[syncd:{canonical_id}]"):
        raise MappingError("saludya: canonical id cannot be written as a notes marker", field="notes")
    marker = f"[syncd-replaced:{canonical_id}]" if replaced else f"[syncd:{canonical_id}]"
    if not notes:
        return marker
    room = max_len - len(marker) - 1
    return f"{notes[: max(0, room)]}\n{marker}"


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "saludya_local_to_utc": saludya_local_to_utc,
    "saludya_utc_to_local": saludya_utc_to_local,
    "saludya_duration_minutes": saludya_duration_minutes,
    "saludya_split_marker": saludya_split_marker,
    "saludya_join_marker": saludya_join_marker,
}


def parse_utc(value: Any) -> datetime | None:
    """A SaludYa ``*_at`` value (``...Z``, whole seconds) as an aware UTC datetime; None if absent/invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


# -- the mapper -------------------------------------------------------------------------------------
class SaludYaMapper(MapperBase):
    """Record <-> :class:`Appointment` for one connector (its mapping file and clinic time zone)."""

    def __init__(self, mapping: VendorMapping, timezone: str) -> None:
        super().__init__(mapping)
        self.timezone = timezone
        o = mapping.options
        self.terminal = frozenset(str(s) for s in o["terminal"])
        self.never_written = frozenset(str(s) for s in o["never_written"])
        self.min_duration = int(o["min_duration_minutes"])
        self.max_duration = int(o["max_duration_minutes"])
        self.reason_max = int(o["reason_max"])
        self.notes_max = int(o["notes_max"])
        self.cancel_max = int(o["cancellation_reason_max"])
        self._time_in = mapping.fn("time_in")
        self._time_out = mapping.fn("time_out")
        self._duration = mapping.fn("duration_out")
        self._split = mapping.fn("notes_in")
        self._join = mapping.fn("notes_out")

    # read side ------------------------------------------------------------------------------
    def split(self, raw: Mapping[str, Any]) -> Split:
        result: Split = self._split(raw.get(self.fields["notes"]))
        return result

    def status_in(self, native: Any, reason: Any) -> Status:
        if not isinstance(native, str):
            raise MappingError("saludya: status missing", field="status")
        status = self.mapping.to_canonical(native)
        if status is Status.CANCELLED and reason == self.defaults["entered_in_error_reason"]:
            return Status.ENTERED_IN_ERROR
        return status

    def to_appointment(self, raw: Mapping[str, Any]) -> Appointment:
        f = self.fields
        native = raw.get(f["status"])
        reason = raw.get(f["cancellation_reason"])
        status = self.status_in(native, reason)
        start = self._time_in(raw.get(f["date"]), raw.get(f["time"]), self.timezone)
        minutes = raw.get(f["duration"])
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes <= 0:
            raise MappingError("saludya: duration_minutes is not a positive integer", field="end")
        cancellation: str | None = None
        if status is Status.CANCELLED and isinstance(reason, str) and reason:
            cancellation = reason
        description = raw.get(f["description"])
        try:
            end = start + timedelta(minutes=minutes)
        except OverflowError:
            raise MappingError("saludya: duration_minutes is out of range", field="end") from None
        return self.appointment(
            "appointment",
            status=status,
            start=start,
            end=end,
            patient=_str_or_none(raw.get(f["patient"])),
            practitioner=_str_or_none(raw.get(f["practitioner"])),
            location=None,
            service_type=_str_or_none(raw.get(f["service_type"])),
            description=description if isinstance(description, str) and description else None,
            notes=self.split(raw).notes,
            cancellation_reason=cancellation,
            native_status=str(native),
        )

    # write side -----------------------------------------------------------------------------
    def native_status(self, desired: Appointment) -> str:
        """The native status ``desired`` maps to (MappingError when none fits, e.g. waitlist)."""
        return self.mapping.to_native(desired.status)

    def cancellation_reason(self, desired: Appointment) -> str:
        if desired.status is Status.ENTERED_IN_ERROR:
            return str(self.defaults["entered_in_error_reason"])
        reason = desired.cancellation_reason or str(self.defaults["sync_cancel_reason"])
        if len(reason) > self.cancel_max:
            raise MappingError(f"saludya: cancellation_reason over {self.cancel_max} characters",
                               field="cancellation_reason")
        return reason

    def schedule(self, desired: Appointment) -> dict[str, Any]:
        """``date``, ``time`` and ``duration_minutes`` of ``desired``."""
        if desired.start is None or desired.end is None:
            raise MappingError("saludya: an appointment needs a start and an end", field="start")
        day, hhmm = self._time_out(desired.start, self.timezone)
        minutes = self._duration(desired.start, desired.end, self.min_duration, self.max_duration)
        return {self.fields["date"]: day, self.fields["time"]: hhmm, self.fields["duration"]: minutes}

    def reason_value(self, desired: Appointment) -> str | None:
        text = desired.description or None
        if text is not None and len(text) > self.reason_max:
            raise MappingError(f"saludya: description over {self.reason_max} characters", field="description")
        return text

    def notes_value(self, notes: str | None, canonical_id: str, *, replaced: bool = False) -> str:
        value: str = self._join(notes, canonical_id, max_len=self.notes_max, replaced=replaced)
        return value

    def to_vendor(self, desired: Appointment, canonical_id: str) -> dict[str, Any]:
        """The whole record as SaludYa would hold it (the writable fields; for round-trip checks)."""
        f = self.fields
        native = self.native_status(desired)
        body: dict[str, Any] = {
            f["status"]: native,
            f["patient"]: desired.patient,
            f["practitioner"]: desired.practitioner,
            f["service_type"]: desired.service_type,
            f["description"]: self.reason_value(desired),
            f["notes"]: self.notes_value(desired.notes, canonical_id),
            f["cancellation_reason"]: self.cancellation_reason(desired) if native == "cancelled" else None,
            **self.schedule(desired),
        }
        return body

    def create_body(self, desired: Appointment, canonical_id: str) -> dict[str, Any]:
        """The POST body (part 4): never ``status``; ``send_notification`` always false."""
        f = self.fields
        if not desired.status.creatable:
            raise MappingError(f"saludya: an appointment in status {desired.status.value!r} is not created",
                               field="status")
        if not desired.patient:
            raise MappingError("saludya: patient reference missing", field="patient")
        if not desired.practitioner:
            raise MappingError("saludya: practitioner reference missing", field="practitioner")
        body: dict[str, Any] = {f["patient"]: desired.patient, f["practitioner"]: desired.practitioner}
        body.update(self.schedule(desired))
        reason = self.reason_value(desired)
        if reason is not None:
            body[f["description"]] = reason
        body[f["notes"]] = self.notes_value(desired.notes, canonical_id)
        body["send_notification"] = False
        return body

    # fingerprints -----------------------------------------------------------------------------
    def raw_fingerprint(self, raw: Mapping[str, Any]) -> str:
        """Short hash of the mapped native fields (catches two changes in the same second)."""
        names = ("status", "date", "time", "duration", "patient", "practitioner", "service_type", "description",
                 "notes", "cancellation_reason")
        values = {n: raw.get(self.fields[n]) for n in names}
        payload = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _str_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None
