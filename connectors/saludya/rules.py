"""Can SaludYa take a change? The pure decision behind ``SaludYaConnector.write_refusal``.

From ``docs/vendors/saludya.md`` §4 and §5: a ``completed``, ``cancelled`` or ``no_show`` appointment
answers every PUT with 422; ``in_progress`` takes only its status and notes; a status moves only along
the table below; ``completed`` is never written by syncd (it needs the doctor's diagnosis: not
expressible, no refusal, rule 15); a patient or doctor change is a replace flow, which has to cancel
the old appointment.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.saludya.mapfuncs import SaludYaMapper
from syncd.connectorkit.rules import STATUS_FIELDS, wanted_status
from syncd.model import Appointment

__all__ = ["TRANSITIONS", "write_refusal"]

#: §5 (assumed there, the spec documents none): native status -> the statuses a PUT may move it to
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "scheduled": frozenset({"confirmed", "in_progress", "completed", "cancelled", "no_show"}),
    "confirmed": frozenset({"scheduled", "in_progress", "completed", "cancelled", "no_show"}),
    "in_progress": frozenset({"confirmed", "completed"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "no_show": frozenset(),
}
#: §5: in_progress refuses date, time, duration and reason
_IN_PROGRESS_LOCKED = frozenset({"start", "end", "description"})


def write_refusal(mapper: SaludYaMapper, current: Appointment, desired: Appointment, replace: str | None) -> str | None:
    """SaludYa's §5 rules for ``desired`` over ``current`` (the record as read): terminal records, the
    status table, the in_progress lock; a status syncd never writes is no refusal (rule 15); a patient
    or doctor change (``replace``, the connector's ``needs_replace`` answer) has to cancel first."""
    native = current.native_status or ""
    changed = desired.diff(current)
    if not changed:
        return None
    target, refusal = wanted_status(changed, desired, mapper.native_status, guide="docs/vendors/saludya.md",
                                    word="status")
    if refusal is not None:
        return refusal
    status_target: str | None = None
    if target is not None and target not in mapper.never_written and (
            target != native or "cancellation_reason" in changed):
        status_target = target
    written = [name for name in changed if name not in STATUS_FIELDS or status_target is not None]
    if not written:
        return None
    fields = ", ".join(written)
    if native in mapper.terminal:
        return f"holds the appointment {native}, which takes no change to {fields} (docs/vendors/saludya.md §5)"
    allowed = TRANSITIONS.get(native, frozenset())
    if replace is not None and "cancelled" not in allowed:
        return (f"holds the appointment {native}, which cannot be cancelled, and a change of "
                f"{fields} is made by cancelling it and booking anew (docs/vendors/saludya.md §4, §5)")
    if status_target is not None and status_target != native and status_target not in allowed:
        return f"holds the appointment {native}, which cannot move to {status_target} (docs/vendors/saludya.md §5)"
    locked = sorted(_IN_PROGRESS_LOCKED & set(written), key=written.index)
    if native == "in_progress" and locked and replace is None:
        return (f"holds the appointment in_progress, which takes no change to {', '.join(locked)} "
                f"(docs/vendors/saludya.md §5)")
    return None
