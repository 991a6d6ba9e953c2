"""Onboarding: a ledger new to a group meets vendors that already hold the group's appointments.

A clinic that adopts syncd has staff who typed each booking into both systems; a rebuilt or restored
ledger, or one moved from SQLite to PostgreSQL, meets records that syncd itself made earlier. Before
syncd creates an appointment in a member it therefore looks for it there, with the cheapest read the
vendor allows: the member's own date window, which a full pass reads anyway (no extra call per create).

* **Creates are held.** A create into a member is kept queued in the outbox, not sent, until this
  ledger has read that member's window once (``resync`` without ``--since``/``--id``, or the daemon's
  start-up pass); the end of that pass releases what is still held. :data:`WINDOW_READ_KEY` records it.
* **Every record read without a link is matched first**, against the group's appointments:

  1. by syncd's idempotency reference (`docs/vendors/README.md` rule 2): the appointment it names is adopted;
     when that appointment already holds another record of the same member, the link in force decides
     (head rule 10) and the second record is left alone;
  2. else by its slot (:func:`syncd.model.slot_key`: patient, practitioner and start, canonical keys,
     UTC): linked when exactly one appointment of the group has that slot, holds no record of this
     member yet, and is terminal exactly when the record is (a cancelled booking never stands for a
     live one). The same rule makes a record syncd itself created but could not stamp (a two-call
     create killed between its calls) that create, not a new booking.

  Several candidates, several records of one member for one appointment, or one that already holds
  another record of that member, are an open conflict on field :data:`LINK_FIELD`, never a guess: no
  link is made and the creates involved stay held. The next full pass that no longer finds the
  ambiguity closes it.

A linked record causes no write unless its fields differ; then the merge settles each field as for a
true conflict (``owners``, else the most recent change; :func:`syncd.engine.merge.merge_linked`).

Everything here is pure (values in, a verdict out); the engine does the reads and writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from syncd.model import Appointment

__all__ = [
    "LINK_FIELD",
    "WINDOW_READ_KEY",
    "Action",
    "Candidate",
    "Held",
    "Verdict",
    "compatible",
    "crowded",
    "judge",
    "link_conflict",
    "names_connector",
    "retired_copies",
]

WINDOW_READ_KEY = "engine.window_read"
"""Connector state key: set when this ledger has read the connector's whole window once."""
LINK_FIELD = "link"
"""Conflict field of "which record of this member is this appointment" (not a canonical field)."""


class Action(StrEnum):
    NEW = "new"
    """Nothing in the group stands for it: a new appointment (created in the other members)."""
    LINK = "link"
    """It is ``canonical_id``: link it (no create, no write unless fields differ)."""
    AMBIGUOUS = "ambiguous"
    """Several candidates: an open conflict on each appointment ``involved``, no link."""
    IGNORE = "ignore"
    """A second record holding the reference of an appointment linked to another record of this
    member: the link in force decides; this one is neither linked nor copied."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An appointment of the group that a record read without a link may stand for."""

    canonical_id: str
    appointment: Appointment | None
    """Its merged snapshot (None: linked by a crosswalk row, never read yet)."""
    holder: str | None
    """The external id the reading member already holds for it (an active link), else None."""


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    canonical_id: str | None = None
    rule: str = ""
    """``reference`` or ``slot``: what found it."""
    involved: tuple[str, ...] = ()
    """AMBIGUOUS: the appointments the record could stand for."""
    holders: tuple[str, ...] = ()
    """AMBIGUOUS: records of the member already linked to those appointments."""


NEW = Verdict(Action.NEW)


def compatible(record: Appointment, candidate: Appointment) -> bool:
    """``docs/reference.md §6``: a record is linked only when it is not terminal while the other is active (either way
    round): a cancelled booking and a live one at the same slot are two appointments."""
    return record.status.terminal == candidate.status.terminal


def crowded(keys: Iterable[str | None]) -> set[str]:
    """The keys that several records of one page share (several records for one appointment)."""
    counts = Counter(k for k in keys if k)
    return {k for k, n in counts.items() if n > 1}


def judge(
    record: Appointment,
    reference: str | None,
    *,
    by_reference: Candidate | None,
    by_slot: Sequence[Candidate],
    reference_crowded: bool = False,
    slot_crowded: bool = False,
) -> Verdict:
    """What a record read without a link stands for (see the module docstring).

    ``reference``: the canonical id in the vendor's idempotency field, if any; ``by_reference``: that
    appointment when the ledger holds it; ``by_slot``: the group's appointments with the record's slot;
    ``*_crowded``: another record of the same page holds the same reference / slot.
    """
    fitting = [c for c in by_slot if c.appointment is not None and compatible(record, c.appointment)]
    if reference is not None and (by_reference is not None or reference_crowded):
        if by_reference is not None and by_reference.appointment is not None \
                and not compatible(record, by_reference.appointment):
            if record.status.terminal:
                # a cancelled copy (the old record of a replace flow) never cancels a live appointment
                return Verdict(Action.IGNORE, reference, "retired")
            # a live record holding the reference of a closed appointment: somebody has to look
            return Verdict(Action.AMBIGUOUS, reference, "reference", involved=(reference,),
                           holders=(by_reference.holder,) if by_reference.holder else ())
        if by_reference is not None and by_reference.holder is not None:
            return Verdict(Action.IGNORE, reference, "reference", holders=(by_reference.holder,))
        if reference_crowded:
            # several records hold one reference: that appointment, and (when the ledger does not know
            # it yet) the one with their slot, wait until somebody decides
            slot_ids = () if by_reference is not None else tuple(c.canonical_id for c in fitting)
            return Verdict(Action.AMBIGUOUS, reference, "reference",
                           involved=tuple(sorted({reference, *slot_ids})))
        return Verdict(Action.LINK, reference, "reference")
    if not fitting:
        return NEW
    if len(fitting) == 1 and fitting[0].holder is None and not slot_crowded:
        return Verdict(Action.LINK, fitting[0].canonical_id, "slot")
    return Verdict(Action.AMBIGUOUS, None, "slot", involved=tuple(sorted(c.canonical_id for c in fitting)),
                   holders=tuple(sorted(c.holder for c in fitting if c.holder is not None)))


@dataclass(frozen=True, slots=True)
class Held:
    """A record of one page, as far as :func:`retired_copies` needs it."""

    external_id: str
    reference: str | None
    terminal: bool
    replaces: str | None = None


def retired_copies(page: Sequence[Held]) -> set[str]:
    """Records of one page that hold a reference only as leftovers: the old record of a replace flow
    (named by another record's ``replaces`` marker, or cancelled beside the one live record holding the
    same reference). They are not the appointment; a rebuilt ledger must neither link nor copy them
    (a cancelled copy would otherwise cancel the live appointment). Of several records holding one
    reference that are all terminal, the first stands for it and the others are left alone."""
    retired = {h.replaces for h in page if h.replaces} & {h.external_id for h in page}
    groups: dict[str, list[Held]] = {}
    for held in page:
        if held.reference is not None and held.external_id not in retired:
            groups.setdefault(held.reference, []).append(held)
    for members in groups.values():
        if len(members) < 2:
            continue
        live = [h for h in members if not h.terminal]
        if len(live) == 1:
            retired.update(h.external_id for h in members if h.terminal)
        elif not live:
            retired.update(h.external_id for h in members[1:])
    return retired


def link_conflict(
    connector: str, rule: str, records: Iterable[str], appointments: Iterable[str], holders: Iterable[str] = ()
) -> tuple[dict[str, Any], str]:
    """The values and reason of an open :data:`LINK_FIELD` conflict (ids only, no patient data)."""
    unlinked = sorted(set(records))
    linked = sorted(set(holders))
    candidates = sorted(set(appointments))
    values: dict[str, Any] = {"connector": connector, "records": unlinked, "linked": linked,
                              "appointments": candidates}
    what = ("hold this appointment's syncd reference" if rule == "reference"
            else "have the same patient, practitioner and start")
    count = len(unlinked) + len(linked)
    if len(candidates) > 1:
        head = f"{connector} record{'s' if count > 1 else ''} {', '.join(unlinked + linked)} could be " \
               f"any of {len(candidates)} appointments that {what}"
    else:
        head = f"{count} records of {connector} ({', '.join(unlinked + linked)}) {what}"
    reason = (f"{head}: syncd links none of them and creates nothing for them. Remove the duplicate in "
              f"{connector}, or link the right record with `syncd crosswalk import` (an appointment row); "
              "the next full pass closes this conflict")
    return values, reason


def names_connector(values: Mapping[str, Any], connector: str) -> bool:
    """Is an open link conflict with these values about ``connector``'s records?"""
    return values.get("connector") == connector
