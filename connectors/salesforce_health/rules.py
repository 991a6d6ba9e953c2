"""Can Salesforce Health Cloud take a change? The pure decision behind ``write_refusal``.

From ``docs/vendors/salesforce_health.md`` §5 (state machine and edit rules): the Connect PUT (times,
participants, work type) is refused in In Progress and in the terminal categories (``INVALID_STATE``);
``Comments`` and ``Description`` can be edited in every state through the sObject PATCH; a status moves
only along the table below, and a terminal category (Completed, Cannot Complete, Canceled) moves
nowhere. A Canceled record keeps its ``CancellationReason`` (a cancel of a Canceled record changes
nothing, §4).
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.salesforce_health.mapfuncs import SCHEDULING_FIELDS, native_status_for
from syncd.errors import MappingError
from syncd.mapping import VendorMapping
from syncd.model import Appointment, Status

__all__ = ["TRANSITIONS", "write_refusal"]

#: §5: StatusCategory -> the categories a status change may move it to (orgs may restrict further)
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "None": frozenset({"Scheduled", "Canceled"}),
    "Scheduled": frozenset({"None", "Dispatched", "InProgress", "Completed", "CannotComplete", "Canceled"}),
    "Dispatched": frozenset({"Scheduled", "InProgress", "Completed", "CannotComplete", "Canceled"}),
    "InProgress": frozenset({"Completed", "CannotComplete"}),
    "Completed": frozenset(),
    "CannotComplete": frozenset(),
    "Canceled": frozenset(),
}
_CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


def _category(mapping: VendorMapping, current: Appointment) -> str:
    categories = dict(mapping.options.get("category_of", {}))
    if current.native_status in categories:
        return str(categories[current.native_status])
    native = mapping.status_out.get(current.status) or ""
    return str(categories.get(native, native))


def write_refusal(mapping: VendorMapping, current: Appointment, desired: Appointment) -> str | None:
    """Why Salesforce refuses ``desired`` over ``current`` (its record as read); None when it takes it."""
    changed = desired.diff(current)
    if not changed:
        return None
    category = _category(mapping, current)
    native = current.native_status or category
    locked = set(mapping.options.get("put_locked_categories", []))
    scheduling = [name for name in changed if name in SCHEDULING_FIELDS]
    if scheduling and category in locked:
        return (f"holds the appointment {native}, in which the Connect PUT is refused (INVALID_STATE): it "
                f"takes no change to {', '.join(scheduling)} (docs/vendors/salesforce_health.md §5)")
    if "status" not in changed and "cancellation_reason" not in changed:
        return None  # notes and description: the sObject PATCH takes them in every state
    allowed = TRANSITIONS.get(category, frozenset())
    if desired.status in _CANCELLED:
        if category == "Canceled":
            if desired.status is not current.status or desired.cancellation_reason != current.cancellation_reason:
                return ("holds the appointment Canceled, whose cancellation reason cannot change "
                        "(docs/vendors/salesforce_health.md §4, §5)")
            return None
        if "Canceled" not in allowed:
            return (f"holds the appointment {native}, which cannot be cancelled "
                    f"(docs/vendors/salesforce_health.md §5)")
        return None
    try:
        value = native_status_for(mapping, desired.status, category)
    except MappingError:
        return f"has no status that fits {desired.status.value} (docs/vendors/salesforce_health.md §9)"
    if value is None:
        return None  # already there (booked over Dispatched, ...): nothing to write
    target = str(dict(mapping.options.get("category_of", {})).get(value, value))
    if target != category and target not in allowed:
        return (f"holds the appointment {native}, which cannot move to {value} "
                f"(docs/vendors/salesforce_health.md §5)")
    return None
