"""Zoho CRM sandbox: turn the shared invented dataset into a ``POST /_sandbox/records`` body."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from connectors.zoho_crm.sandbox.wire import parse_offset, zid

if TYPE_CHECKING:
    from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset

#: id blocks (``5545974000`` + 9 digits): users, contacts, services, appointments
USER_BASE = 394_001
CONTACT_BASE = 413_001
SERVICE_BASE = 520_101
APPOINTMENT_BASE = 2_100_001
SEED_OFFSET = "+05:30"

CrosswalkRow = tuple[str, str, str]


def _native_status(appt: SeedAppointment) -> dict[str, Any]:
    """Canonical FHIR status → Zoho ``Status`` and its companion keys (docs/vendors/zoho_crm.md §9)."""
    status = appt.status
    if status == "fulfilled":
        return {"Status": "Completed", "Job_Sheet_Name": "Completed", "Job_Sheet_Description__s": "Completed"}
    if status == "cancelled":
        return {"Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Cancelled"}
    if status == "noshow":
        return {"Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "No-show"}
    if status == "entered-in-error":
        return {"Status": "Cancelled", "Cancellation_Reason": "By Team", "Cancellation_Note": "Entered in error"}
    # proposed, pending, booked, arrived, checked-in, waitlist: Zoho has only Scheduled for these;
    # the sandbox clock turns a started one Overdue
    return {"Status": "Scheduled"}


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[CrosswalkRow]]:
    """The sandbox seed body for ``dataset`` and its crosswalk rows ``(kind, key, external_id)``.

    Every dataset location maps to the literal ``Business Address`` (Zoho has no location records;
    syncd creates only with it, docs/vendors/zoho_crm.md §9), so all location rows share that external id.
    """
    rows: list[CrosswalkRow] = []
    users: dict[str, dict[str, Any]] = {}
    for i, doc in enumerate(dataset.practitioners):
        uid = zid(USER_BASE + i)
        users[doc.key] = {"id": uid, "full_name": f"{doc.given} {doc.family}", "email": doc.email}
        rows.append(("practitioner", doc.key, uid))
    contacts: dict[str, dict[str, Any]] = {}
    for i, pat in enumerate(dataset.patients):
        cid = zid(CONTACT_BASE + i)
        contacts[pat.key] = {
            "id": cid,
            "First_Name": pat.given,
            "Last_Name": pat.family,
            "Full_Name": f"{pat.given} {pat.family}",
            "Email": pat.email,
            "Phone": pat.phone,
            "Date_of_Birth": pat.birth_date.isoformat(),
        }
        rows.append(("patient", pat.key, f"Contacts:{cid}"))
    for loc in dataset.locations:
        rows.append(("location", loc.key, "Business Address"))
    services: dict[str, dict[str, Any]] = {}
    for i, svc in enumerate(dataset.services):
        sid = zid(SERVICE_BASE + i)
        services[svc.key] = {"id": sid, "name": svc.name, "duration": svc.minutes}
        rows.append(("service", svc.key, sid))
    records: list[dict[str, Any]] = []
    for i, appt in enumerate(dataset.appointments):
        rid = zid(APPOINTMENT_BASE + i)
        records.append(_appointment(rid, appt, contacts[appt.patient], users[appt.practitioner],
                                    services[appt.service]))
        rows.append(("appointment", appt.key, rid))
    body = {
        "users": list(users.values()),
        "Contacts": list(contacts.values()),
        "services": list(services.values()),
        "records": records,
    }
    return body, rows


def _appointment(
    rid: str, appt: SeedAppointment, contact: dict[str, Any], user: dict[str, Any], service: dict[str, Any]
) -> dict[str, Any]:
    """Appointment record ``rid`` for ``appt``, naming its contact, owner and service as Zoho lookups do."""
    tz = parse_offset(SEED_OFFSET)
    minutes = max(1, int((appt.end - appt.start) / timedelta(minutes=1)))
    record: dict[str, Any] = {
        "id": rid,
        "Appointment_Name": service["name"],
        "Appointment_For": {"module": "Contacts", "name": contact["Full_Name"], "id": contact["id"]},
        "Service_Name": {"name": service["name"], "id": service["id"]},
        "Owner": {"name": user["full_name"], "id": user["id"], "email": user["email"]},
        "Appointment_Start_Time": appt.start.astimezone(tz).isoformat(),
        "Appointment_End_Time": appt.end.astimezone(tz).isoformat(),
        "Duration": minutes,
        "Location": "Business Address",
        "Address": None,
        "Reschedule_Count": 0,
        "Additional_Information": appt.notes,
        "Syncd_Id": appt.key,
    }
    record.update(_native_status(appt))
    return record
