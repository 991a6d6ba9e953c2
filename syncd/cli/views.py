"""PHI-safe views of what the ledger holds about one appointment, for ``deadletters show`` and
``conflicts show``: status, times and references as canonical keys; free text only as its length and
a short digest (never the text, never a patient's external id)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from syncd.ledger.models import AppointmentRow, Link
from syncd.model import TEXT_FIELDS, Appointment, InvalidAppointment

__all__ = ["format_values", "redacted", "systems_view"]


def redacted(snapshot: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A canonical appointment (``Appointment.to_json()``) with free text replaced by its digest."""
    if not snapshot:
        return None
    try:
        return Appointment.from_json(snapshot).redacted()
    except (InvalidAppointment, TypeError, ValueError):
        return {"unreadable": True}


def systems_view(row: AppointmentRow | None, links: Sequence[Link]) -> dict[str, Any]:
    """``canonical`` (the last merged record) and, per linked system, its record id and what syncd
    last knew it to hold there, redacted."""
    systems: dict[str, Any] = {
        "canonical": {"values": redacted(row.snapshot if row is not None else None)},
    }
    for link in links:
        systems[link.connector] = {
            "external_id": link.external_id,
            "retired": link.retired,
            "version": link.version,
            "values": redacted(link.seen) if link.seen else None,
        }
    return systems


def format_values(values: Mapping[str, Any] | None) -> str:
    """``status=booked start=... patient=P-1 notes=len=12 sha256:...`` (no Python reprs)."""
    if values is None:
        return "(nothing known yet)"
    if values.get("unreadable"):
        return "(unreadable snapshot)"
    parts = []
    for name, value in values.items():
        if value is None or value == "":
            continue
        shown = f"[{value}]" if name in TEXT_FIELDS else str(value)
        parts.append(f"{name}={shown}")
    return " ".join(parts) or "(empty)"


def format_value(value: Any) -> str:
    """One conflict value as plain text (lists joined, None as ``-``)."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)
