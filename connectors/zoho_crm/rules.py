"""Can Zoho CRM take a change? The pure decision behind ``ZohoCrmConnector.write_refusal``.

From ``docs/vendors/zoho_crm.md`` §5 (state machine and edit rules) and §9 (mapping): Cancelled and
Completed records take no edit at all (E7: 403 ``NOT_ALLOWED``), re-sending the current status is a
no-op, ``Appointment_End_Time`` is read-only (a different end is not expressible, no refusal), and
an earlier start or a new service is done by the replace flow, which cancels the old record.
"""

from __future__ import annotations

from connectors.zoho_crm.mapfuncs import ZohoMapper
from syncd.errors import MappingError
from syncd.model import Appointment

__all__ = ["write_refusal"]

_STATUS_FIELDS = frozenset({"status", "cancellation_reason"})


def write_refusal(mapper: ZohoMapper, current: Appointment, desired: Appointment) -> str | None:
    """Why Zoho refuses ``desired`` over ``current`` (its record as read); None when it takes it."""
    native = current.native_status or ""
    # §9: the end is start + the service's duration, read-only: a different end is not expressible
    changed = [name for name in desired.diff(current) if name != "end"]
    if not changed:
        return None
    fields = ", ".join(changed)
    status_written = False
    if _STATUS_FIELDS & set(changed):
        try:
            write = mapper.status_write(native, current, desired, auto_complete=False)
        except MappingError:
            return f"has no status that fits {desired.status.value} (docs/vendors/zoho_crm.md §9)"
        if write.conflict is not None:
            return (f"holds the appointment {native}, which takes no change to {fields} "
                    f"(docs/vendors/zoho_crm.md §5, E7)")
        status_written = bool(write.values)
    others = [name for name in changed if name not in _STATUS_FIELDS]
    if native in mapper.terminal and (others or status_written):
        return f"holds the appointment {native}, which takes no change to {fields} (docs/vendors/zoho_crm.md §5, E7)"
    return None
