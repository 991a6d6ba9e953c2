"""Zoho CRM sandbox: per-record create and update rules (docs/vendors/zoho_crm.md §4, §5; seed E1–E8).

``check_create`` and ``check_update`` validate one input record against the stored state and return
either a per-record error (``dict``) or a ``Plan`` of field changes; nothing is applied here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connectors.zoho_crm.sandbox.records import Appt, Refs
from connectors.zoho_crm.sandbox.wire import (
    CANCEL_KEYS,
    CUSTOMER_MODULES,
    EDIT_KEYS,
    JOB_SHEET_KEYS,
    LOCATIONS,
    PLAIN_EDIT_KEYS,
    REASONS,
    RESCHEDULE_KEYS,
    STATUSES,
    TERMINAL,
    parse_zoho_time,
    record_error,
    second,
)


@dataclass
class Plan:
    """Validated changes for one record."""

    changes: dict[str, Any]
    reschedule: bool = False
    history_edit: dict[str, Any] = field(default_factory=dict)


Result = dict[str, Any] | Plan


def _id_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_value(refs: Refs, key: str, value: Any, index: int) -> tuple[dict[str, Any] | None, Any]:
    """Validate one plain field; return (error, normalised value)."""
    if key == "Appointment_Name":
        if _empty(value):
            return record_error("MANDATORY_NOT_FOUND", key, index), None
        if not isinstance(value, str) or len(value) > 255:
            return record_error("INVALID_DATA", key, index), None
        return None, value
    if key == "Appointment_For":
        if _empty(value):
            return record_error("MANDATORY_NOT_FOUND", key, index), None
        if not isinstance(value, dict):
            return record_error("INVALID_DATA", key, index), None
        module = value.get("module")
        if isinstance(module, dict):
            module = module.get("api_name")
        cid = _id_of(value.get("id"))
        if module not in CUSTOMER_MODULES or cid is None or cid not in refs.customers.get(str(module), {}):
            return record_error("INVALID_DATA", key, index), None
        return None, {"module": module, "name": refs.customer_name(str(module), cid), "id": cid}
    if key == "Owner":
        if _empty(value):
            return record_error("MANDATORY_NOT_FOUND", key, index), None
        uid = _id_of(value.get("id")) if isinstance(value, dict) else _id_of(value)
        if uid is None or uid not in refs.users:
            return record_error("INVALID_DATA", key, index), None
        return None, refs.owner(uid)
    if key == "Location":
        if _empty(value):
            return record_error("MANDATORY_NOT_FOUND", key, index), None
        if value not in LOCATIONS:
            return record_error("INVALID_DATA", key, index), None
        return None, value
    if key in ("Address", "Additional_Information"):
        if value is not None and not isinstance(value, str):
            return record_error("INVALID_DATA", key, index), None
        return None, value
    if key == "Syncd_Id":
        if value is not None and (not isinstance(value, str) or len(value) > 255 or "\n" in value):
            return record_error("INVALID_DATA", key, index), None
        return None, value
    return record_error("INVALID_DATA", key, index), None


def _service_allows(refs: Refs, sid: str, location: str) -> bool:
    allowed = refs.services.get(sid, {}).get("locations") or list(LOCATIONS)
    return location in allowed


def check_create(refs: Refs, raw: dict[str, Any], index: int) -> Result:
    """Create (source R3.2 of docs/vendors/zoho_crm.md, docs/vendors/zoho_crm.md §4): mandatory keys, lookups,
    location/address, offsets."""
    for key in ("Service_Name", "Appointment_Name", "Appointment_For", "Owner", "Appointment_Start_Time", "Location"):
        if _empty(raw.get(key)):
            return record_error("MANDATORY_NOT_FOUND", key, index)
    changes: dict[str, Any] = {}
    service = raw["Service_Name"]
    sid = _id_of(service.get("id")) if isinstance(service, dict) else _id_of(service)
    if sid is None or sid not in refs.services:
        return record_error("INVALID_DATA", "Service_Name", index)
    changes["Service_Name"] = refs.service(sid)
    for key in (
        "Appointment_Name",
        "Appointment_For",
        "Owner",
        "Location",
        "Address",
        "Additional_Information",
        "Syncd_Id",
    ):
        if key not in raw:
            continue
        err, value = check_value(refs, key, raw[key], index)
        if err is not None:
            return err
        changes[key] = value
    start = parse_zoho_time(raw["Appointment_Start_Time"])
    if start is None:
        return record_error("INVALID_DATA", "Appointment_Start_Time", index)
    if not _service_allows(refs, sid, changes["Location"]):
        return record_error("INVALID_DATA", "Location", index)
    if changes["Location"] == "Client Address" and _empty(changes.get("Address")):
        return record_error("MANDATORY_NOT_FOUND", "Address", index)
    status = raw.get("Status")
    if status is not None and status != "Scheduled":
        return record_error("INVALID_DATA", "Status", index)
    for key in (*CANCEL_KEYS, *RESCHEDULE_KEYS, *JOB_SHEET_KEYS):
        if raw.get(key) is not None:
            return record_error("INVALID_DATA", key, index)
    changes["Appointment_Start_Time"] = second(start)
    return Plan(changes)


@dataclass
class _Update:
    """One update request, read: what it edits and the values it moves the record to."""

    edits: dict[str, Any]
    status: str | None = None
    new_start: datetime | None = None
    resched_from: datetime | None = None
    plain: dict[str, Any] = field(default_factory=dict)
    """the checked plain fields (``PLAIN_EDIT_KEYS``)"""
    end: datetime | None = None


def check_update(
    refs: Refs,
    rec: Appt,
    raw: dict[str, Any],
    index: int,
    *,
    now: datetime,
    mark_as_complete: str,
    job_sheet_mandatory: bool,
) -> Result:
    """Update of an existing, live record; the caller has checked E8 ``id`` already."""
    edits = {k: raw[k] for k in EDIT_KEYS if k in raw}
    if "Status" in edits and edits["Status"] == rec.status:
        del edits["Status"]  # a re-sent current status is a no-op (§5)
    # E7: Cancelled and Completed records cannot be edited
    if rec.status in TERMINAL and edits:
        name = next((k for k in ("Status", "Appointment_Start_Time") if k in edits), next(iter(edits)))
        return record_error("NOT_ALLOWED", name, index)
    update = _Update(edits, status=edits.get("Status"))
    error = (
        _read_values(refs, rec, update, index)
        or _check_dependent_fields(rec, update, index, job_sheet_mandatory=job_sheet_mandatory)
        or _check_timing(rec, update, index, now=now, mark_as_complete=mark_as_complete)
    )
    return error if error is not None else _plan_update(rec, update, now)


def _read_values(refs: Refs, rec: Appt, update: _Update, index: int) -> dict[str, Any] | None:
    """Value validity of every edited field (docs/vendors/zoho_crm.md §5); fills ``update``."""
    edits = update.edits
    if "Service_Name" in edits:
        return record_error("INVALID_DATA", "Service_Name", index)
    if "Status" in edits and update.status not in STATUSES:
        return record_error("INVALID_DATA", "Status", index)
    if "Appointment_Start_Time" in edits:
        parsed = parse_zoho_time(edits["Appointment_Start_Time"])
        if parsed is None:
            return record_error("INVALID_DATA", "Appointment_Start_Time", index)
        update.new_start = second(parsed)
    if edits.get("Rescheduled_From") is not None:
        parsed = parse_zoho_time(edits["Rescheduled_From"])
        if parsed is None:
            return record_error("INVALID_DATA", "Rescheduled_From", index)
        update.resched_from = second(parsed)
    for key in ("Reschedule_Reason", "Cancellation_Reason"):
        if edits.get(key) is not None and edits[key] not in REASONS:
            return record_error("INVALID_DATA", key, index)
    for key in ("Reschedule_Note", "Cancellation_Note", *JOB_SHEET_KEYS):
        if edits.get(key) is not None and not isinstance(edits[key], str):
            return record_error("INVALID_DATA", key, index)
    for key in PLAIN_EDIT_KEYS:
        if key in edits:
            err, value = check_value(refs, key, edits[key], index)
            if err is not None:
                return err
            update.plain[key] = value
    location = update.plain.get("Location", rec.data.get("Location"))
    address = update.plain.get("Address", rec.data.get("Address"))
    if "Location" in update.plain and not _service_allows(refs, str(rec.data["Service_Name"]["id"]), str(location)):
        return record_error("INVALID_DATA", "Location", index)
    if location == "Client Address" and _empty(address):
        return record_error("MANDATORY_NOT_FOUND", "Address", index)
    return None


def _check_dependent_fields(
    rec: Appt, update: _Update, index: int, *, job_sheet_mandatory: bool
) -> dict[str, Any] | None:
    """The seed's E2, E3 and E6: fields that need another field (docs/vendors/zoho_crm.md §5)."""
    edits, status = update.edits, update.status
    # E2: reschedule keys need a new start, except reason/note editing an earlier reschedule
    if any(k in edits for k in RESCHEDULE_KEYS) and update.new_start is None:
        count = int(rec.data.get("Reschedule_Count") or 0)
        if "Rescheduled_From" in edits or count < 1:
            return record_error("DEPENDENT_FIELD_MISSING", "Appointment_Start_Time", index)
    # E3: cancellation keys need Status Cancelled
    if any(k in edits for k in CANCEL_KEYS):
        if "Status" not in edits:
            return record_error("DEPENDENT_FIELD_MISSING", "Status", index)
        if status != "Cancelled":
            return record_error("DEPENDENT_MISMATCH", "Status", index)
    # E6: job-sheet keys need Status Completed; mandated job sheet
    if any(k in edits for k in JOB_SHEET_KEYS) and status != "Completed":
        return record_error("DEPENDENT_FIELD_MISSING", "Status", index)
    if status == "Completed" and job_sheet_mandatory:
        for key in JOB_SHEET_KEYS:
            if _empty(edits.get(key)):
                return record_error("MANDATORY_NOT_FOUND", key, index)
    return None


def _check_timing(
    rec: Appt, update: _Update, index: int, *, now: datetime, mark_as_complete: str
) -> dict[str, Any] | None:
    """The seed's E1, E5 and E4: what the start and the clock allow (docs/vendors/zoho_crm.md §5); sets
    ``update.end``."""
    status, new_start = update.status, update.new_start
    # E1: a reschedule must move the start strictly later
    duration = timedelta(minutes=int(rec.data.get("Duration") or 0))
    update.end = rec.end
    if new_start is not None:
        if new_start <= rec.start:
            return record_error("DEPENDENT_FIELD_UNCHANGED", "Appointment_Start_Time", index)
        if update.resched_from is not None and update.resched_from >= new_start:
            return record_error("INVALID_DATA", "Rescheduled_From", index)
        update.end = new_start + duration
    # E5 (checked before E4, a deliberate change to the assumed order of docs/vendors/zoho_crm.md §5): completion is
    # Zoho's own
    # when mark_as_complete = auto. Under ``auto`` the clock completes every record at its end, so a
    # ``Completed`` request always arrives before the end and E4 would otherwise hide E5 for good.
    if status == "Completed" and mark_as_complete == "auto":
        return record_error("NOT_ALLOWED", "Status", index)
    # E4: Completed / Overdue only once the appointment has ended; Overdue -> Scheduled only by a
    # reschedule to a future start
    if status in ("Completed", "Overdue") and now < update.end:
        return record_error("DEPENDENT_MISMATCH", "Status", index)
    if status == "Scheduled" and rec.status == "Overdue" and (new_start is None or new_start <= now):
        return record_error("DEPENDENT_MISMATCH", "Status", index)
    return None


def _plan_update(rec: Appt, update: _Update, now: datetime) -> Plan:
    """The changes a valid update makes (docs/vendors/zoho_crm.md §5: a reschedule's history, the
    cancellation and completion fields)."""
    edits, status, new_start = update.edits, update.status, update.new_start
    changes = dict(update.plain)
    plan = Plan(changes)
    if new_start is not None:
        plan.reschedule = True
        changes["Appointment_Start_Time"] = new_start
        changes["Appointment_End_Time"] = update.end
        changes["Rescheduled_From"] = update.resched_from or rec.start
        changes["Reschedule_Count"] = int(rec.data.get("Reschedule_Count") or 0) + 1
        changes["Reschedule_Reason"] = edits.get("Reschedule_Reason") or "By Customer"
        changes["Reschedule_Note"] = edits.get("Reschedule_Note")
        if rec.status == "Overdue" and new_start > now and status is None:
            changes["Status"] = "Scheduled"
    else:
        for key in ("Reschedule_Reason", "Reschedule_Note"):
            if key in edits:
                value = edits[key] if key == "Reschedule_Note" else (edits[key] or "By Customer")
                changes[key] = value
                plan.history_edit[key] = value
    if status == "Cancelled":
        changes["Status"] = "Cancelled"
        changes["Cancellation_Reason"] = edits.get("Cancellation_Reason") or "By Customer"
        changes["Cancellation_Note"] = edits.get("Cancellation_Note")
    elif status == "Completed":
        changes["Status"] = "Completed"
        for key in JOB_SHEET_KEYS:
            if key in edits:
                changes[key] = edits[key]
    elif status is not None:
        changes["Status"] = status
    return plan
