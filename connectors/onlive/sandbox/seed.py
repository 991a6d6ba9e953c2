"""Seed data for the Onlive sandbox from the shared invented data set (``seed_body``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from connectors.onlive.sandbox.store import SEED_NAMESPACE, fmt

if TYPE_CHECKING:
    from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset, SeedPatient

__all__ = ["seed_body"]

CANONICAL_TO_NATIVE: dict[str, tuple[str, str | None]] = {
    "proposed": ("pending", None),
    "pending": ("pending", None),
    "waitlist": ("pending", "waitlist"),
    "booked": ("confirmed", None),
    "arrived": ("confirmed", None),
    "checked-in": ("confirmed", None),
    "fulfilled": ("completed", None),
    "noshow": ("no-show", None),
    "cancelled": ("cancelled", "user-request"),
    "entered-in-error": ("cancelled", "booked-in-error"),
}


def _seed_id(kind: str, key: str) -> str:
    return str(uuid.uuid5(SEED_NAMESPACE, f"onlive:{kind}:{key}"))


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """``POST /_sandbox/records`` body for ``dataset`` plus crosswalk rows ``(kind, key, external_id)``.

    Practitioners become calendars, services keep their duration and are offered on every calendar,
    patients are guests identified by their lower-cased e-mail, locations are ``extraFields.location``.
    """
    rows: list[tuple[str, str, str]] = []
    calendars = []
    cal_ids: dict[str, str] = {}
    for prac in dataset.practitioners:
        cid = _seed_id("calendar", prac.key)
        cal_ids[prac.key] = cid
        calendars.append({"id": cid, "name": f"{prac.given} {prac.family}", "email": prac.email})
        rows.append(("practitioner", prac.key, cid))
    services = []
    svc: dict[str, tuple[str, str]] = {}
    for service in dataset.services:
        sid = _seed_id("service", service.key)
        svc[service.key] = (sid, service.name)
        services.append({"id": sid, "name": service.name, "duration": service.minutes,
                         "calendarIds": list(cal_ids.values())})
        rows.append(("service", service.key, sid))
    patients = {p.key: p for p in dataset.patients}
    for patient in dataset.patients:
        rows.append(("patient", patient.key, patient.email.lower()))
    locations = {loc.key: loc.name for loc in dataset.locations}
    for loc in dataset.locations:
        rows.append(("location", loc.key, loc.name))
    records = []
    for apt in dataset.appointments:
        aid = _seed_id("appointment", apt.key)
        records.append(_appointment(aid, apt, patients[apt.patient], svc[apt.service], cal_ids[apt.practitioner],
                                    locations[apt.location]))
        rows.append(("appointment", apt.key, aid))
    return {"calendars": calendars, "services": services, "records": records}, rows


def _appointment(
    aid: str, apt: SeedAppointment, patient: SeedPatient, service: tuple[str, str], calendar: str, location: str
) -> dict[str, Any]:
    """Appointment ``aid`` for ``apt``: its patient as the guest, on the practitioner's calendar."""
    status, sub = CANONICAL_TO_NATIVE.get(apt.status, ("pending", None))
    guest: dict[str, Any] = {
        "email": patient.email.lower(),
        "extraFields": {"firstName": patient.given, "lastName": patient.family, "phone": patient.phone},
    }
    if status == "cancelled":
        guest["status"] = "cancelled"
    sid, sname = service
    return {
        "id": aid,
        "title": sname,
        "description": None,
        "lang": "es-ES",
        "startAt": fmt(apt.start),
        "endAt": fmt(apt.end),
        "event": None,
        "reminders": [],
        "extraFields": {"location": location},
        "guests": [guest],
        "calendarIds": [calendar],
        "serviceId": sid,
        "status": status,
        "subStatus": sub,
        "origin": "onlive_public",
        "comment": apt.notes,
        "externalId": apt.key,
    }
