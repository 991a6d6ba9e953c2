"""Dentally <-> canonical conversions (docs/vendors/dentally.md §9), driven by ``mappings/dentally.toml``.

The functions registered in :data:`FUNCTIONS` are the named conversions the mapping file refers to;
:class:`DentallyMapper` applies the whole mapping to one record (read) or one desired appointment
(write). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from syncd.connectorkit.mapper import MapperBase
from syncd.errors import MappingError
from syncd.mapping import VendorMapping, offset_time_to_utc
from syncd.model import Appointment, Status

__all__ = [
    "FUNCTIONS",
    "NATIVE_STATUSES",
    "DentallyMapper",
    "dentally_int_ref_in",
    "dentally_int_ref_out",
    "dentally_text_in",
    "dentally_text_out",
    "dentally_time_to_utc",
    "utc_to_dentally_time",
]

NATIVE_STATUSES = ("Pending", "Confirmed", "Arrived", "In surgery", "Completed", "Cancelled", "Did not attend")

_INT = re.compile(r"^[0-9]+$")
#: canonical fields written only while the appointment is Pending (part 4 table)
PENDING_ONLY = ("start", "end", "practitioner", "location", "service_type")


def dentally_time_to_utc(value: Any, field: str = "datetime") -> datetime | None:
    """A Dentally ISO 8601 time with offset (``2026-12-01T09:00:00.000Z``) as a UTC instant."""
    return offset_time_to_utc(value, vendor="dentally", field=field, compact_offset=True)


def utc_to_dentally_time(value: datetime) -> str:
    """A UTC instant as written to Dentally: milliseconds and ``Z``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise MappingError("dentally: a naive datetime cannot be written", field="start")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def dentally_int_ref_in(value: Any, field: str = "reference") -> str | None:
    """An integer reference (``patient_id``, ``practitioner_id``) -> its external id string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not _INT.match(str(value)):
        raise MappingError(f"dentally: {field} is not an integer id", field=field)
    return str(int(value))


def dentally_int_ref_out(value: str | None, field: str = "reference") -> int | None:
    """An external id string -> the integer Dentally wants; :class:`MappingError` when it is not one."""
    if value is None:
        return None
    if not _INT.match(value):
        raise MappingError(f"dentally: {field} must be an integer id", field=field)
    return int(value)


def dentally_text_in(value: Any, field: str = "text") -> str | None:
    """Free text: Dentally's empty string is the canonical None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MappingError(f"dentally: {field} is not text", field=field)
    return value


def dentally_text_out(value: str | None) -> str:
    return value or ""


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "dentally_time_to_utc": dentally_time_to_utc,
    "utc_to_dentally_time": utc_to_dentally_time,
    "dentally_int_ref_in": dentally_int_ref_in,
    "dentally_int_ref_out": dentally_int_ref_out,
    "dentally_text_in": dentally_text_in,
    "dentally_text_out": dentally_text_out,
}


class DentallyMapper(MapperBase):
    """The mapping file applied to Dentally records and canonical appointments."""

    def __init__(self, mapping: VendorMapping) -> None:
        super().__init__(mapping)
        self.terminal = frozenset(self.options["terminal"])
        self.beyond_arrived = frozenset(self.options["beyond_arrived"])
        self.open_state = str(self.options["open_edit_state"])
        self.creatable_states = frozenset(self.options["creatable_states"])
        self.cancel_reasons_in = {k.lower(): Status(v) for k, v in dict(self.options["cancel_reasons_in"]).items()}

    # -- helpers ---------------------------------------------------------------------------------
    def time_in(self, raw: Mapping[str, Any], key: str) -> datetime | None:
        result: datetime | None = self.mapping.fn("time_in")(raw.get(self.fields[key]), key)
        return result

    def time_out(self, value: datetime) -> str:
        result: str = self.mapping.fn("time_out")(value)
        return result

    def ref_in(self, raw: Mapping[str, Any], key: str) -> str | None:
        result: str | None = self.mapping.fn("ref_in")(raw.get(self.fields[key]), key)
        return result

    def ref_out(self, value: str | None, key: str) -> int | None:
        result: int | None = self.mapping.fn("ref_out")(value, key)
        return result

    def text_in(self, raw: Mapping[str, Any], key: str) -> str | None:
        result: str | None = self.mapping.fn("text_in")(raw.get(self.fields[key]), key)
        return result

    def text_out(self, value: str | None) -> str:
        result: str = self.mapping.fn("text_out")(value)
        return result

    @staticmethod
    def str_or_none(value: Any) -> str | None:
        return None if value is None or value == "" else str(value)

    # -- read ------------------------------------------------------------------------------------
    def external_id(self, raw: Mapping[str, Any]) -> str:
        value = raw.get(self.fields["external_id"])
        return "" if value is None else str(value)

    def native_status(self, raw: Mapping[str, Any]) -> str:
        return str(raw.get(self.fields["status"]) or "")

    def version(self, raw: Mapping[str, Any]) -> str | None:
        """``updated_at`` normalised to milliseconds UTC (an opaque string to the core)."""
        when = self.modified(raw)
        return self.time_out(when) if when is not None else None

    def modified(self, raw: Mapping[str, Any]) -> datetime | None:
        try:
            return self.time_in(raw, "version")
        except MappingError:
            return None

    def metadata(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        meta = raw.get(self.fields["metadata"])
        return dict(meta) if isinstance(meta, Mapping) else {}

    def syncd_id(self, raw: Mapping[str, Any]) -> str | None:
        return self.str_or_none(self.metadata(raw).get(self.fields["reference"]))

    def replaces(self, raw: Mapping[str, Any]) -> str | None:
        return self.str_or_none(self.metadata(raw).get(self.fields["replaces"]))

    def canonical_status(self, raw: Mapping[str, Any]) -> Status:
        native = self.native_status(raw)
        status = self.mapping.to_canonical(native)
        if native == "Cancelled":
            reason = (self.text_in(raw, "cancellation_reason") or "").strip().lower()
            status = self.cancel_reasons_in.get(reason, status)
        return status

    def to_appointment(self, raw: Mapping[str, Any]) -> Appointment:
        """One Dentally record -> canonical appointment (vendor-id references); MappingError if it cannot be."""
        status = self.canonical_status(raw)
        start, end = self.time_in(raw, "start"), self.time_in(raw, "end")
        site = raw.get(self.fields["location"])
        reason = raw.get(self.fields["service_type"])
        cancellation = self.text_in(raw, "cancellation_reason") if status.terminal else None
        extra: dict[str, Any] = {}
        if raw.get(self.fields["uuid"]):
            extra["uuid"] = str(raw[self.fields["uuid"]])
        return self.appointment(
            "appointment",
            status=status,
            start=start,
            end=end,
            patient=self.ref_in(raw, "patient"),
            practitioner=self.ref_in(raw, "practitioner"),
            location=self.str_or_none(site),
            service_type=self.str_or_none(reason),
            description=None,
            notes=self.text_in(raw, "notes"),
            cancellation_reason=cancellation if status in (Status.CANCELLED, Status.ENTERED_IN_ERROR) else None,
            native_status=self.native_status(raw),
            extra=extra,
        )

    # -- write -----------------------------------------------------------------------------------
    def native_for(self, desired: Appointment) -> str:
        """The native state for a canonical status (MappingError when none fits, e.g. waitlist)."""
        return self.mapping.to_native(desired.status)

    def reason_name(self, desired: Appointment) -> str:
        """The Dentally cancellation reason name a cancel should carry (matched later by name)."""
        if desired.status is Status.ENTERED_IN_ERROR:
            return str(self.defaults["entered_in_error_reason"])
        return desired.cancellation_reason or str(self.defaults["sync_cancel_reason"])

    def field_values(self, name: str, desired: Appointment) -> dict[str, Any]:
        """Wire values for one canonical field (not status / cancellation_reason)."""
        f = self.fields
        if name == "start":
            return {f["start"]: self.time_out(desired.start)} if desired.start is not None else {}
        if name == "end":
            return {f["end"]: self.time_out(desired.end)} if desired.end is not None else {}
        if name in ("patient", "practitioner"):
            return {f[name]: self.ref_out(getattr(desired, name), name)}
        if name in ("location", "service_type"):
            return {f[name]: getattr(desired, name)}
        if name == "notes":
            return {f["notes"]: self.text_out(desired.notes)}
        return {}

    def create_body(self, desired: Appointment, canonical_id: str, replaces: str | None) -> dict[str, Any]:
        """The ``appointment`` object of a create (MappingError when it cannot be expressed)."""
        native = self.native_for(desired)
        if native not in self.creatable_states:
            raise MappingError(f"dentally: an appointment cannot be created in state {native!r}", field="status")
        if desired.start is None or desired.end is None:
            raise MappingError("dentally: start and end are required to create", field="start")
        if desired.practitioner is None:
            raise MappingError("dentally: a practitioner is required to create", field="practitioner")
        body: dict[str, Any] = {self.fields["status"]: native}
        for name in ("start", "end", "practitioner", "notes"):
            body.update(self.field_values(name, desired))
        if desired.patient is not None:
            body.update(self.field_values("patient", desired))
        for name in ("location", "service_type"):
            if getattr(desired, name) is not None:
                body.update(self.field_values(name, desired))
        metadata = {self.fields["reference"]: canonical_id}
        if replaces:
            metadata[self.fields["replaces"]] = replaces
        body[self.fields["metadata"]] = metadata
        return body

    def wire_of(self, name: str, raw: Mapping[str, Any]) -> Any:
        """The current wire value of a canonical field, normalised like :meth:`field_values` writes it."""
        if name in ("start", "end"):
            when = self.time_in(raw, name)
            return self.time_out(when) if when is not None else None
        if name in ("patient", "practitioner"):
            ref = self.ref_in(raw, name)
            return int(ref) if ref is not None else None
        if name == "notes":
            return self.text_out(self.text_in(raw, "notes"))
        return raw.get(self.fields[name])
