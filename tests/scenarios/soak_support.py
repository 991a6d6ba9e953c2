"""SaludYa's adapter for the randomised soak (``test_soak_saludya.py``), beside the CRM adapters of
``convergence_support.py``: how a SaludYa user edits an appointment through ``/_sandbox/records``
(respecting its state machine, docs/vendors/saludya.md §5), how a stored record reads back as plain
canonical values (an independent mapping, not syncd's), and where its faults go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.scenarios.convergence_support import FaultSpot, RecordView, VendorAdapter, later_start

__all__ = ["SaludYaAdapter", "saludya_notes"]

ZONE = ZoneInfo("America/Bogota")
_MARKER = re.compile(r"\[syncd(-replaced)?:([A-Za-z0-9_-]{1,64})\]")
_STATUS = {"scheduled": "pending", "confirmed": "booked", "in_progress": "arrived", "completed": "fulfilled",
           "no_show": "noshow"}


def _split(notes: Any) -> tuple[str | None, str | None]:
    """(canonical notes, syncd reference) of SaludYa ``notes`` (a final ``[syncd:<id>]`` line)."""
    if not isinstance(notes, str) or not notes:
        return None, None
    head, sep, last = notes.rpartition("\n")
    match = _MARKER.fullmatch(last.strip())
    if match is None:
        return notes, None
    text = head if sep else ""
    return (text or None), (None if match.group(1) else match.group(2))


def saludya_notes(rec: Mapping[str, Any], text: str) -> str:
    """New notes a SaludYa user types, keeping syncd's marker line where the record has one."""
    _old, reference = _split(rec.get("notes"))
    return f"{text}\n[syncd:{reference}]" if reference else text


class SaludYaAdapter(VendorAdapter):
    vendor = "saludya"
    create = FaultSpot("POST", "/api/appointments")
    update = FaultSpot("PUT", "/api/appointments/*")
    read = FaultSpot("GET", "/api/appointments*")
    any_write = (create, update)
    notes_key = "notes"

    def view(self, rec: Mapping[str, Any]) -> RecordView:
        native = str(rec.get("status"))
        if rec.get("_deleted_at"):
            status = "entered-in-error"
        elif native == "cancelled":
            status = "entered-in-error" if rec.get("cancellation_reason") == "Entered in error (syncd)" else "cancelled"
        else:
            status = _STATUS.get(native, "")
        notes, reference = _split(rec.get("notes"))
        local = datetime.fromisoformat(f"{rec['date']}T{rec['time']}").replace(tzinfo=ZONE)
        return RecordView(
            external_id=self.external_id(rec), deleted=bool(rec.get("_deleted_at")), status=status,
            start=local.astimezone(UTC), notes=notes, reference=reference, patient=rec.get("patient_id"),
            practitioner=rec.get("doctor_id"), location=None, service=rec.get("specialty"),
        )

    def is_terminal(self, rec: Mapping[str, Any]) -> bool:
        return bool(rec.get("_deleted_at")) or rec.get("status") in ("completed", "cancelled", "no_show")

    def can_reschedule(self, rec: Mapping[str, Any]) -> bool:
        return rec.get("status") in ("scheduled", "confirmed") and not rec.get("_deleted_at")

    def reschedule(self, rec: Mapping[str, Any], hours: int) -> dict[str, Any]:
        start = self.view(rec).start
        length = timedelta(minutes=int(rec["duration_minutes"]))
        local = later_start(start, start + length, hours).astimezone(ZONE)
        return {"date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M")}

    def cancel(self) -> dict[str, Any]:
        return {"status": "cancelled", "cancellation_reason": "Paciente canceló por teléfono"}

    def strip_new(self, rec: dict[str, Any]) -> dict[str, Any]:
        # SaludYa's ids are its own (the seeded one is unused elsewhere); a booking made there has no marker
        rec["notes"] = _split(rec.get("notes"))[0]
        return rec
