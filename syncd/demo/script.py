"""The scripted story, as data: what the demo says before it starts, and its steps in order.

Each step's title names the connectors playing its roles (``{crm}``, ``{ehr}``, ``{other}`` of the
CRM/EHR group; ``{saludya}`` and ``{saludya_crm}`` of the SaludYa group, see :mod:`syncd.demo.roles`);
a step whose group the configuration lacks is left out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from syncd.demo import scenarios
from syncd.demo.roles import CrmGroup, SaludYaGroup
from syncd.demo.story import Outcome, Story

BANNER = "[bold]syncd demo[/bold]: five vendor sandboxes, one daemon, a scripted day at the clinic"
INTRODUCTION = (
    "syncd keeps appointments in sync between clinic systems (CRMs and EHRs). Each \\[\\[sync]] group\n"
    "holds the same appointments; a change made in any member reaches every other member once, in\n"
    "the way that member's vendor allows. Below, every line is one decision of the running daemon:\n"
    "the target system, what it did, the canonical appointment id, the target's own id, the fields."
)
FIRST_SYNC = "First sync: the daemon polls every system and creates what is missing"
LEGEND = ("created", "linked", "updated", "cancelled", "replaced", "retry", "echo", "dead_letter", "conflict")
"""The decisions the legend explains, in its order (styles and help in :mod:`syncd.demo.data`)."""


@dataclass(frozen=True)
class Step:
    title: str
    """a template over the role names (see the module's docstring)"""
    run: Callable[[Story, Outcome], Awaitable[None]]
    group: Literal["crm", "saludya"] = "crm"
    """the sync group the step needs"""


STORY: tuple[Step, ...] = (
    Step("Reschedule in the CRM ({crm})", scenarios.reschedule),
    Step("Cancellation in the EHR ({ehr})", scenarios.cancellation),
    Step("GET/PUT race on a write to {other}", scenarios.race),
    Step("Patient change that {ehr} forbids in place", scenarios.patient_change),
    Step("Missing crosswalk entry (patient, {other})", scenarios.missing_crosswalk),
    Step("Onboarding: bookings typed by hand in {crm} and {other} linked, not copied", scenarios.onboarding),
    Step(
        "A booking born in {saludya} reaches {saludya_crm} with its service type",
        scenarios.saludya_booking_reaches_crm,
        group="saludya",
    ),
)


def cast(crm: CrmGroup, saludya: SaludYaGroup | None) -> list[tuple[Outcome, Step]]:
    """The steps this configuration can play, numbered, with their titles filled in."""
    roles: dict[str, str] = {"crm": crm.crm, "ehr": crm.ehr, "other": crm.other}
    if saludya is not None:
        roles.update(saludya=saludya.saludya, saludya_crm=saludya.crm)
    playable = [step for step in STORY if step.group == "crm" or saludya is not None]
    return [(Outcome(number, step.title.format_map(roles)), step) for number, step in enumerate(playable, start=1)]
