"""The demo's fixed inputs: the invented data sets, the timings, and how the live view names decisions."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset, generate

SEED = 11
"""Seed of the invented data set (deterministic names, so that tests can check none is printed)."""
CRM_APPOINTMENTS = 10
OTHER_APPOINTMENTS = 5
POLL_SECONDS = 1.0
REQUESTS_PER_SECOND = 100.0
STEP_TIMEOUT = 15.0
"""How long one scripted step may take to converge before it is reported as not holding."""
ECHO_WINDOW = 5.0
"""An unchanged read this soon after syncd's own write to that record is shown as its echo."""
RECEPTION_NOTE = "Patient will arrive ten minutes late"
"""The concurrent edit of the race scenario (written into a sandbox, never printed)."""
CREATABLE = ("proposed", "pending", "booked")
"""Statuses a member creates (the first sync's expected counts)."""
SALUDYA_BOOKING_ID = "apt_demonewbooking1"
HAND_TYPED = (5, 6, 7)
"""The CRM/EHR group's bookings (data set indices) that reception typed into every system by hand."""

ACTION_STYLE = {
    "created": ("green", "created"),
    "updated": ("cyan", "updated"),
    "cancelled": ("yellow", "cancelled"),
    "replaced": ("magenta", "replaced"),
    "dead_letter": ("red", "dead-letter"),
    "conflict": ("red", "conflict"),
    "retry": ("bright_magenta", "re-merge"),
    "create_skipped": ("dim", "not created"),
    "echo": ("dim", "echo ignored"),
    "linked": ("bright_green", "linked"),
}
ACTION_HELP = {
    "created": "new appointment written",
    "updated": "change carried over",
    "cancelled": "cancellation carried over",
    "replaced": "created anew, old one cancelled (vendor forbids the change in place)",
    "dead_letter": "could not be synced: parked with a reason",
    "conflict": "no policy settled it: left for an operator",
    "retry": "target changed under our write: re-read, re-merged, retried",
    "create_skipped": "status not creatable in the target",
    "echo": "our own write read back: not a new change",
    "linked": "already there (typed by hand, or made by syncd before): linked, not copied",
}


class DemoError(Exception):
    """The configuration cannot run the scripted story (names what is missing)."""


def demo_datasets(now: datetime) -> tuple[SeedDataset, SeedDataset]:
    """The CRM/EHR group's data set (tuned for the five scenarios) and the other groups' data set.

    Names and contact details depend on :data:`SEED` only, never on ``now``.
    """
    crm = generate(CRM_APPOINTMENTS, seed=SEED, now=now, locations=1)
    patients = crm.patients
    shared = patients[:-1]
    appointments: list[SeedAppointment] = []
    for index, appt in enumerate(crm.appointments):
        if index == len(crm.appointments) - 1:
            patient = patients[-1].key  # the missing-crosswalk patient: this appointment only
        else:
            patient = shared[index % len(shared)].key
        status = "pending" if index in (0, 2) else appt.status  # Pending in Dentally: times editable
        if index in (1, 3):
            status = "booked"
        appointments.append(dataclasses.replace(appt, patient=patient, status=status))
    crm = dataclasses.replace(crm, appointments=tuple(appointments))
    other = generate(OTHER_APPOINTMENTS, seed=SEED + 1, now=now, locations=1)
    return crm, other
