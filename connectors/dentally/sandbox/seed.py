"""``seed_body``: the shared invented data set in Dentally's shape, with crosswalk rows."""

from __future__ import annotations

import uuid
from typing import Any

from connectors.dentally.sandbox.store import UUID_NS, fmt_time
from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset

__all__ = ["NATIVE_STATUS", "seed_body"]

#: canonical status -> (Dentally state, cancellation reason id); ``waitlist`` has no Dentally value (§9)
NATIVE_STATUS: dict[str, tuple[str, int | None]] = {
    "proposed": ("Pending", None),
    "pending": ("Pending", None),
    "booked": ("Confirmed", None),
    "arrived": ("Arrived", None),
    "checked-in": ("Arrived", None),
    "fulfilled": ("Completed", None),
    "cancelled": ("Cancelled", 4),
    "entered-in-error": ("Cancelled", 1),
    "noshow": ("Did not attend", None),
}


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The ``POST /_sandbox/records`` body for ``dataset`` and its crosswalk rows (deterministic ids).

    Patients get ids from 1001, practitioners from 51, appointments from 757500001 (integers, as in the
    seed thread); sites get UUIDs derived from their keys; a service's external id is its reason text.
    Appointments whose status has no Dentally value (``waitlist``) are left out, as syncd would not
    create them.
    """
    rows: list[tuple[str, str, str]] = []
    body, ids = _reference_data(dataset, rows)
    records = []
    for i, a in enumerate(dataset.appointments):
        if a.status not in NATIVE_STATUS:
            continue
        aid = 757500001 + i
        records.append(_appointment(aid, a, ids))
        rows.append(("appointment", a.key, str(aid)))
    return {**body, "records": records}, rows


def _reference_data(
    dataset: SeedDataset, rows: list[tuple[str, str, str]]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Patients, practitioners, sites and appointment reasons, with their crosswalk rows added to ``rows``;
    and kind -> key -> the Dentally value an appointment refers to it by."""
    ids: dict[str, dict[str, Any]] = {"patient": {}, "practitioner": {}, "location": {}, "service": {}}
    patients: list[dict[str, Any]] = []
    practitioners: list[dict[str, Any]] = []
    sites: list[dict[str, Any]] = []
    reasons: list[dict[str, Any]] = []
    for i, p in enumerate(dataset.patients):
        pid = ids["patient"][p.key] = 1001 + i
        patients.append(
            {"id": pid, "first_name": p.given, "last_name": p.family, "email_address": p.email,
             "mobile_phone": p.phone, "date_of_birth": p.birth_date.isoformat()}
        )  # fmt: skip
        rows.append(("patient", p.key, str(pid)))
    for i, d in enumerate(dataset.practitioners):
        did = ids["practitioner"][d.key] = 51 + i
        practitioners.append(
            {"id": did, "first_name": d.given, "last_name": d.family, "email": d.email, "active": True}
        )
        rows.append(("practitioner", d.key, str(did)))
    for loc in dataset.locations:
        sid = ids["location"][loc.key] = str(uuid.uuid5(UUID_NS, f"site:{loc.key}"))
        sites.append({"id": sid, "name": loc.name, "address_line_1": loc.address})
        rows.append(("location", loc.key, sid))
    for i, s in enumerate(dataset.services):
        ids["service"][s.key] = s.name
        reasons.append({"id": 1 + i, "reason": s.name, "duration": s.minutes})
        rows.append(("service", s.key, s.name))
    body = {"patients": patients, "practitioners": practitioners, "sites": sites, "appointment_reasons": reasons}
    return body, ids


def _appointment(aid: int, a: SeedAppointment, ids: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Appointment ``aid`` for ``a``, its references by their Dentally ids (the reason by its text)."""
    state, reason_id = NATIVE_STATUS[a.status]
    return {
        "id": aid,
        "uuid": str(uuid.uuid5(UUID_NS, f"appointment:{a.key}")),
        "start_time": fmt_time(a.start),
        "finish_time": fmt_time(a.end),
        "patient_id": ids["patient"][a.patient],
        "practitioner_id": ids["practitioner"][a.practitioner],
        "site_id": ids["location"][a.location],
        "reason": ids["service"][a.service],
        "state": state,
        "notes": a.notes or "",
        "cancellation_reason_id": reason_id,
        "metadata": {},
    }
