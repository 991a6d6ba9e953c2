"""The canonical appointment, aligned with the FHIR R4 ``Appointment`` resource.

A canonical appointment is what syncd's core sees: connectors translate their vendor's dialect into
it and back. Times are UTC-aware, references are keys (canonical keys inside the engine and the
ledger; a connector's own ids at the connector boundary, where the engine translates them through
the crosswalk), and the vendor's native status is kept beside the canonical one so that a round trip
never loses detail (a vendor status finer than the canonical one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "REFERENCE_FIELDS",
    "SYNC_FIELDS",
    "TERMINAL_STATUSES",
    "TEXT_FIELDS",
    "Appointment",
    "InvalidAppointment",
    "Status",
    "ensure_utc",
    "fingerprint_of",
    "slot_key",
    "text_digest",
]


class InvalidAppointment(ValueError):
    """An appointment breaks one of the canonical invariants."""


class Status(StrEnum):
    """FHIR R4 ``Appointment.status`` codes."""

    PROPOSED = "proposed"
    PENDING = "pending"
    BOOKED = "booked"
    ARRIVED = "arrived"
    CHECKED_IN = "checked-in"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"
    ENTERED_IN_ERROR = "entered-in-error"
    WAITLIST = "waitlist"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def creatable(self) -> bool:
        """docs/vendors/README.md rule 11: only these statuses are created in a target."""
        return self in (Status.PROPOSED, Status.PENDING, Status.BOOKED)


TERMINAL_STATUSES = frozenset({Status.FULFILLED, Status.CANCELLED, Status.NOSHOW, Status.ENTERED_IN_ERROR})

# Progress order used by the merge: a status never moves backwards to a lower rank because another
# system lagged. Terminal statuses share the top rank (one terminal never replaces another).
STATUS_RANK: dict[Status, int] = {
    Status.WAITLIST: 0,
    Status.PROPOSED: 1,
    Status.PENDING: 2,
    Status.BOOKED: 3,
    Status.ARRIVED: 4,
    Status.CHECKED_IN: 5,
    Status.FULFILLED: 9,
    Status.CANCELLED: 9,
    Status.NOSHOW: 9,
    Status.ENTERED_IN_ERROR: 9,
}

#: Canonical fields that take part in sync (docs/reference.md §2, usable in ``owners``).
SYNC_FIELDS: tuple[str, ...] = (
    "status",
    "start",
    "end",
    "patient",
    "practitioner",
    "location",
    "service_type",
    "description",
    "notes",
    "cancellation_reason",
)
REFERENCE_FIELDS: tuple[str, ...] = ("patient", "practitioner", "location", "service_type")
#: crosswalk ``kind`` for each reference field
REFERENCE_KIND: dict[str, str] = {
    "patient": "patient",
    "practitioner": "practitioner",
    "location": "location",
    "service_type": "service",
}
#: free-text fields: PHI, never logged, shown only as length + digest
TEXT_FIELDS: tuple[str, ...] = ("description", "notes", "cancellation_reason")


def ensure_utc(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` in UTC; naive datetimes are refused, never guessed."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidAppointment(f"{what} must be timezone-aware, got a naive datetime")
    return value.astimezone(UTC)


def text_digest(value: str | None) -> str | None:
    """A short, stable digest of free text: lets conflicts and audits show *that* text changed."""
    if value is None:
        return None
    return f"len={len(value)} sha256:{hashlib.sha256(value.encode()).hexdigest()[:10]}"


@dataclass(frozen=True, slots=True)
class Appointment:
    """One appointment in canonical form (FHIR R4 Appointment vocabulary).

    ``patient``, ``practitioner``, ``location`` and ``service_type`` are reference keys.
    ``native_status`` is the vendor's own status label, kept for lossless round trips; it is not part
    of the fingerprint. ``extra`` holds vendor values a round trip must keep that have no canonical
    field (e.g. a vendor's channel id); it is not part of the fingerprint either.
    """

    status: Status
    start: datetime | None
    end: datetime | None
    patient: str | None = None
    practitioner: str | None = None
    location: str | None = None
    service_type: str | None = None
    description: str | None = None
    notes: str | None = None
    cancellation_reason: str | None = None
    native_status: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            try:
                object.__setattr__(self, "status", Status(self.status))
            except ValueError as exc:
                raise InvalidAppointment(f"status: unknown FHIR appointment status {self.status!r}") from exc
        if self.start is not None:
            object.__setattr__(self, "start", ensure_utc(self.start, "start"))
        if self.end is not None:
            object.__setattr__(self, "end", ensure_utc(self.end, "end"))
        if (self.start is None) != (self.end is None):
            raise InvalidAppointment("start and end must be both set or both empty")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise InvalidAppointment("end must be after start")
        if self.cancellation_reason is not None and self.status not in (
            Status.CANCELLED,
            Status.ENTERED_IN_ERROR,
        ):
            raise InvalidAppointment("cancellation_reason is only allowed on a cancelled appointment")
        object.__setattr__(self, "extra", dict(self.extra))

    # -- derived -----------------------------------------------------------------------------
    @property
    def duration(self) -> timedelta | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def with_changes(self, **changes: Any) -> Appointment:
        """A copy with ``changes`` applied (invariants checked again)."""
        return replace(self, **changes)

    def sync_values(self) -> dict[str, Any]:
        """The sync-relevant fields as JSON-ready values."""
        out: dict[str, Any] = {}
        for name in SYNC_FIELDS:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            elif isinstance(value, Status):
                value = value.value
            out[name] = value
        return out

    def fingerprint(self, only: Iterable[str] | None = None) -> str:
        """Stable hash of the sync-relevant fields (or of ``only`` those)."""
        return fingerprint_of(self.sync_values(), only)

    def diff(self, other: Appointment) -> list[str]:
        """Names of the sync fields whose values differ between ``self`` and ``other``."""
        a, b = self.sync_values(), other.sync_values()
        return [name for name in SYNC_FIELDS if a[name] != b[name]]

    # -- serialisation (ledger snapshot) -----------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = self.sync_values()
        data["native_status"] = self.native_status
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Appointment:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidAppointment(f"unknown appointment fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        for name in ("start", "end"):
            raw = values.get(name)
            if isinstance(raw, str):
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
                values[name] = parsed
        return cls(**values)

    def redacted(self) -> dict[str, Any]:
        """A PHI-safe view: status, times and references; free text only as length + digest."""
        data = self.sync_values()
        for name in TEXT_FIELDS:
            data[name] = text_digest(data[name])
        return data


def fingerprint_of(values: Mapping[str, Any], only: Iterable[str] | None = None) -> str:
    names = list(only) if only is not None else list(SYNC_FIELDS)
    payload = json.dumps({n: values.get(n) for n in sorted(names)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def slot_key(values: Mapping[str, Any]) -> str | None:
    """What onboarding matches a record without syncd's reference on: the patient, the practitioner
    (canonical keys) and the start in UTC, as a short digest. ``values`` is ``sync_values()`` or a
    stored snapshot of the same shape. None when one of the three is missing (never matched)."""
    patient, practitioner, start = values.get("patient"), values.get("practitioner"), values.get("start")
    if not patient or not practitioner or not start:
        return None
    if isinstance(start, datetime):
        start = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = json.dumps([str(patient), str(practitioner), str(start)], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def as_dict(appointment: Appointment) -> dict[str, Any]:
    return asdict(appointment)
