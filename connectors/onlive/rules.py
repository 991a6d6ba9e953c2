"""Can Onlive take a change? The pure decision behind ``OnliveConnector.write_refusal``.

From ``docs/vendors/onlive.md`` §4 and §5: cancelled, completed and no-show appointments refuse every
write (``APPOINTMENT_CLOSED``), and so does a past one (stored ``endAt`` ≤ now, or a new ``startAt``
≤ now: ``APPOINTMENT_IN_PAST``); ``serviceId`` can never change; a practitioner change is a replace
flow, which has to cancel the old appointment; ``completed`` and ``no-show`` are set by Onlive only
(not expressible, no refusal, rule 15); ``pending`` and ``confirmed`` move freely between each other.
"""

from __future__ import annotations

from datetime import datetime

from connectors.onlive.mapfuncs import OnliveMapper
from syncd.errors import MappingError
from syncd.model import Appointment, Status

__all__ = ["write_refusal"]

_STATUS_FIELDS = frozenset({"status", "cancellation_reason"})
_CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


def write_refusal(mapper: OnliveMapper, current: Appointment, desired: Appointment, *, replace: str | None,
                  now: datetime) -> str | None:
    """Why Onlive refuses ``desired`` over ``current`` (its record as read); None when it takes it.
    ``replace`` is the connector's ``needs_replace`` answer for the change."""
    native = current.native_status or ""
    changed = desired.diff(current)
    if not changed:
        return None
    status_written = False
    if _STATUS_FIELDS & set(changed):
        try:
            target = mapper.target_status(desired)
        except MappingError:
            return f"has no status that fits {desired.status.value} (docs/vendors/onlive.md §9)"
        if target not in mapper.vendor_only:
            cancelled_again = desired.status in _CANCELLED and (
                desired.status is not current.status or desired.cancellation_reason != current.cancellation_reason)
            status_written = target != native or cancelled_again
    written = [name for name in changed if name not in _STATUS_FIELDS or status_written]
    if not written:
        return None
    fields = ", ".join(written)
    closed = native in mapper.closed or current.status.terminal
    if closed:
        return f"holds the appointment {native}, which takes no change to {fields} (docs/vendors/onlive.md §5)"
    if current.end is not None and current.end <= now:
        return f"holds a past appointment, which takes no change to {fields} (docs/vendors/onlive.md §5)"
    if replace is None and "service_type" in written:
        return "cannot change the service of an appointment (serviceId immutable, docs/vendors/onlive.md §4)"
    if "start" in written and desired.start is not None and desired.start <= now:
        return "cannot move an appointment into the past (docs/vendors/onlive.md §4)"
    return None
