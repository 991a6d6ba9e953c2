"""Seed data for the SaludYa sandbox from the shared invented data set (``seed_body``)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from syncd.sandboxkit.seedgen import SeedDataset

__all__ = ["seed_body"]

#: canonical (FHIR) status -> SaludYa status (docs/vendors/saludya.md §9, canonical -> SaludYa)
CANONICAL_TO_NATIVE: dict[str, str] = {
    "proposed": "scheduled",
    "pending": "scheduled",
    "booked": "confirmed",
    "arrived": "in_progress",
    "checked-in": "in_progress",
    "fulfilled": "completed",
    "cancelled": "cancelled",
    "noshow": "no_show",
    "entered-in-error": "cancelled",
    "waitlist": "scheduled",
}


def _stable_id(prefix: str, kind: str, key: str, taken: set[str]) -> str:
    digest = hashlib.sha256(f"saludya:{kind}:{key}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    number = int.from_bytes(digest, "big")
    chars = []
    while number:
        number, rem = divmod(number, len(alphabet))
        chars.append(alphabet[rem])
    text = "".join(chars)
    length = 10
    candidate = prefix + text[:length]
    while candidate in taken:
        length += 1
        candidate = prefix + text[:length]
    taken.add(candidate)
    return candidate


def seed_body(
    dataset: SeedDataset, *, timezone: str = "America/Bogota"
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The ``POST /_sandbox/records`` body for ``dataset`` and its crosswalk rows.

    Dates and times are the clinic's wall clock in ``timezone`` (the sandbox's default zone). Each
    record's ``specialty`` is its service's name (crosswalk kind ``service``: external id = specialty
    text); SaludYa stores no location, so location rows carry a stable ``loc_`` id used nowhere else.
    """
    zone = ZoneInfo(timezone)
    taken: set[str] = set()
    rows: list[tuple[str, str, str]] = []
    services = {s.key: s for s in dataset.services}
    patient_ids: dict[str, str] = {}
    patients = []
    for p in dataset.patients:
        pid = _stable_id("pat_", "patient", p.key, taken)
        patient_ids[p.key] = pid
        patients.append({"id": pid, "name": f"{p.given} {p.family}", "email": p.email, "phone": p.phone})
        rows.append(("patient", p.key, pid))
    first_service: dict[str, str] = {}
    for a in dataset.appointments:
        first_service.setdefault(a.practitioner, services[a.service].name)
    doctor_ids: dict[str, str] = {}
    doctors = []
    for d in dataset.practitioners:
        did = _stable_id("doc_", "practitioner", d.key, taken)
        doctor_ids[d.key] = did
        specialty = first_service.get(d.key) or (dataset.services[0].name if dataset.services else "General")
        doctors.append({"id": did, "name": f"Dr. {d.given} {d.family}", "specialty": specialty})
        rows.append(("practitioner", d.key, did))
    for loc in dataset.locations:
        rows.append(("location", loc.key, _stable_id("loc_", "location", loc.key, taken)))
    for s in dataset.services:
        rows.append(("service", s.key, s.name))
    records = []
    for a in dataset.appointments:
        aid = _stable_id("apt_", "appointment", a.key, taken)
        local = a.start.astimezone(zone)
        status = CANONICAL_TO_NATIVE.get(a.status, "scheduled")
        rec: dict[str, Any] = {
            "id": aid,
            "patient_id": patient_ids[a.patient],
            "doctor_id": doctor_ids[a.practitioner],
            "specialty": services[a.service].name,
            "date": local.strftime("%Y-%m-%d"),
            "time": local.strftime("%H:%M"),
            "duration_minutes": round((a.end - a.start).total_seconds() / 60),
            "status": status,
            "reason": None,
            "notes": a.notes,
        }
        if status == "completed":
            rec["diagnosis"] = "Seeded visit completed"
        if status == "cancelled":
            reason = "Entered in error (syncd)" if a.status == "entered-in-error" else "Cancelled by clinic"
            rec["cancellation_reason"] = reason
        records.append(rec)
        rows.append(("appointment", a.key, aid))
    return {"patients": patients, "doctors": doctors, "records": records}, rows

