"""``seed_body``: the shared invented dataset in Salesforce's shape, with crosswalk rows."""

from __future__ import annotations

from typing import Any

from connectors.salesforce_health.sandbox.wire import PREFIX, hashed_id, sf_datetime
from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset

#: canonical FHIR status -> (Status, CancellationReason); the sandbox's own mapping (docs/vendors/salesforce_health.md
#: §9)
NATIVE_STATUS: dict[str, tuple[str, str | None]] = {
    "proposed": ("None", None),
    "pending": ("None", None),
    "waitlist": ("None", None),
    "booked": ("Scheduled", None),
    "arrived": ("In Progress", None),
    "checked-in": ("In Progress", None),
    "fulfilled": ("Completed", None),
    "noshow": ("Cannot Complete", None),
    "cancelled": ("Canceled", "Other"),
    "entered-in-error": ("Canceled", "Entered in error"),
}
CHANNEL_KEY = "in-person"


def _id(sobject: str, key: str) -> str:
    return hashed_id(PREFIX[sobject], sobject, key)


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The ``POST /_sandbox/records`` body for ``dataset`` and its crosswalk rows (deterministic ids)."""
    rows: list[tuple[str, str, str]] = []
    records = _reference_records(dataset, rows)
    channel = _id("EngagementChannelType", CHANNEL_KEY)
    records.append({"attributes": {"type": "EngagementChannelType"}, "Id": channel, "Name": "In Person"})
    for n, a in enumerate(dataset.appointments, start=1):
        rows.append(("appointment", a.key, _id("ServiceAppointment", a.key)))
        records.append(_appointment(n, a, channel))
    return {"records": records}, rows


def _reference_records(dataset: SeedDataset, rows: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Patients (person accounts), practitioners (resources), locations (territories) and services (work
    types), with their crosswalk rows added to ``rows``."""
    records: list[dict[str, Any]] = []
    for p in dataset.patients:
        pid = _id("Account", p.key)
        rows.append(("patient", p.key, pid))
        records.append(
            {
                "attributes": {"type": "Account"},
                "Id": pid,
                "IsPersonAccount": True,
                "FirstName": p.given,
                "LastName": p.family,
                "PersonEmail": p.email,
                "PersonMobilePhone": p.phone,
                "PersonBirthdate": p.birth_date.isoformat(),
            }
        )
    for d in dataset.practitioners:
        did = _id("ServiceResource", d.key)
        rows.append(("practitioner", d.key, did))
        records.append(
            {
                "attributes": {"type": "ServiceResource"},
                "Id": did,
                "Name": f"{d.given} {d.family}",
                "ResourceType": "T",
                "IsActive": True,
                "external": False,
            }
        )
    for loc in dataset.locations:
        lid = _id("ServiceTerritory", loc.key)
        rows.append(("location", loc.key, lid))
        records.append(
            {
                "attributes": {"type": "ServiceTerritory"},
                "Id": lid,
                "Name": loc.name,
                "Street": loc.address,
                "IsActive": True,
            }
        )
    for svc in dataset.services:
        sid = _id("WorkType", svc.key)
        rows.append(("service", svc.key, sid))
        records.append(
            {
                "attributes": {"type": "WorkType"},
                "Id": sid,
                "Name": svc.name,
                "EstimatedDuration": svc.minutes,
                "DurationType": "Minutes",
                "channel_required": False,
            }
        )
    return records


def _appointment(n: int, a: SeedAppointment, channel: str) -> dict[str, Any]:
    """Service appointment number ``n`` for ``a``, its references by their seeded ids."""
    status, reason = NATIVE_STATUS[a.status]
    return {
        "attributes": {"type": "ServiceAppointment"},
        "Id": _id("ServiceAppointment", a.key),
        "AppointmentNumber": f"SA-{n:06d}",
        "Status": status,
        "SchedStartTime": sf_datetime(a.start),
        "SchedEndTime": sf_datetime(a.end),
        "ParentRecordId": _id("Account", a.patient),
        "WorkTypeId": _id("WorkType", a.service),
        "ServiceTerritoryId": _id("ServiceTerritory", a.location),
        "EngagementChannelTypeId": channel,
        "Description": None,
        "Comments": a.notes,
        "CancellationReason": reason,
        "Syncd_Id__c": None,
        "_assigned_resources": [_id("ServiceResource", a.practitioner)],
    }
