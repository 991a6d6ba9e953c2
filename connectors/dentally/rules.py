"""Can Dentally take a change? The pure decision behind ``DentallyConnector.write_refusal``.

From ``docs/vendors/dentally.md`` §4 and §5: in Pending every writable field can be
edited; once Confirmed, Arrived or In surgery only the state and the notes; Completed, Cancelled and
Did not attend take notes only; a state moves only along the table below; a patient change is done by
creating a new appointment and cancelling the old one, which its state must allow.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.dentally.mapfuncs import DentallyMapper
from syncd.connectorkit.rules import STATUS_FIELDS, wanted_status
from syncd.model import Appointment, Status

__all__ = ["TRANSITIONS", "write_refusal"]

#: §5 (assumed there beyond the seed): state -> the states the API may move it to
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "Pending": frozenset({"Confirmed", "Arrived", "Cancelled", "Did not attend"}),
    "Confirmed": frozenset({"Pending", "Arrived", "Cancelled", "Did not attend"}),
    "Arrived": frozenset({"In surgery", "Completed", "Confirmed"}),
    "In surgery": frozenset({"Completed", "Arrived"}),
    "Completed": frozenset(),
    "Cancelled": frozenset(),
    "Did not attend": frozenset(),
}
#: §5: outside Pending only the state (with its cancellation reason) and the notes can change
_ALWAYS_EDITABLE = frozenset({"status", "cancellation_reason", "notes"})


def write_refusal(mapper: DentallyMapper, current: Appointment, desired: Appointment, replace: str | None,
                  ) -> str | None:
    """The §5 state table and edit lock applied to ``desired`` over ``current`` (the record as read; a
    change of the state asks for the state it maps to, unless Dentally is further along than Arrived),
    and the cancel a patient change (``replace``, the connector's ``needs_replace`` answer) needs."""
    native = current.native_status or ""
    changed = desired.diff(current)
    if not changed:
        return None
    wanted, refusal = wanted_status(changed, desired, mapper.native_for, guide="docs/vendors/dentally.md", word="state")
    if refusal is not None:
        return refusal
    target: str | None = None
    if wanted is not None:
        if desired.status in (Status.ARRIVED, Status.CHECKED_IN) and native in mapper.beyond_arrived:
            wanted = native  # Dentally is further along: Arrived is not written (§9)
        if wanted != native or desired.status is not current.status:
            target = wanted
    written = [name for name in changed if name not in STATUS_FIELDS or target is not None]
    if not written:
        return None
    allowed = TRANSITIONS.get(native, frozenset())
    if replace is not None:
        if "Cancelled" not in allowed:
            return (f"holds the appointment {native}, which cannot be cancelled, and a patient change is made "
                    f"by cancelling it and booking anew (docs/vendors/dentally.md §4, §5)")
        return None
    if target is not None and target == native:
        return f"holds the appointment {native}, whose cancellation reason cannot change (docs/vendors/dentally.md §5)"
    if target is not None and target not in allowed:
        return f"holds the appointment {native}, which cannot move to {target} (docs/vendors/dentally.md §5)"
    if native != mapper.open_state:
        locked = [name for name in written if name not in _ALWAYS_EDITABLE]
        if locked:
            return (f"holds the appointment {native}, in which only the state and the notes can change: it takes "
                    f"no change to {', '.join(locked)} (docs/vendors/dentally.md §5)")
    return None
