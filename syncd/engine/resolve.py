"""Settling an open conflict by taking one member's version: the pure parts of ``conflicts resolve``.

:meth:`syncd.engine.core.Engine.plan_resolution` re-reads every member's record and asks each target,
through its connector's own rules (:meth:`syncd.connector.Connector.write_refusal`), whether it can take
the chosen version. The result is a :class:`Resolution`: what would be written where (ids, fields,
statuses and times; free text only as length and digest), why a target refuses, and which other
``--take`` would work. A refused resolution writes nothing and leaves the conflict open; a dry run
only shows the plan. Nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from datetime import datetime
from typing import Any

from syncd.engine.fields import Limits
from syncd.engine.merge import news_of
from syncd.ledger.models import Link
from syncd.model import SYNC_FIELDS, TEXT_FIELDS, Appointment, InvalidAppointment, Status, text_digest

__all__ = ["MemberState", "Resolution", "TargetPlan", "holds_news", "shown", "take_unit", "unit_of", "with_fields"]

_CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


def unit_of(field_name: str) -> tuple[str, ...]:
    """The fields a conflict on ``field_name`` settles together: the slot (start and end) is one unit,
    a status carries its cancellation reason; a conflict about no named field is about the status."""
    if field_name in ("start", "end"):
        return ("start", "end")
    if field_name == "status" or field_name not in SYNC_FIELDS:
        return ("status", "cancellation_reason")
    return (field_name,)


def with_fields(base: Appointment, source: Appointment, names: Sequence[str]) -> Appointment | str:
    """``base`` with the fields ``names`` taken from ``source`` (a status that is no cancellation drops
    the cancellation reason); the reason when that combination is impossible."""
    values: dict[str, Any] = {name: getattr(source, name) for name in names}
    if "status" in values and values["status"] not in _CANCELLED:
        values["cancellation_reason"] = None
    elif "cancellation_reason" in values and base.status not in _CANCELLED and "status" not in values:
        values.pop("cancellation_reason")  # a reason only goes with a cancellation
    try:
        return base.with_changes(**values) if values else base
    except InvalidAppointment as exc:
        return f"cannot hold that value together with the rest of the appointment ({exc})"


def take_unit(base: Appointment, chosen: Appointment, unit: Sequence[str]) -> Appointment | str:
    """The merge base with ``unit`` taken from ``chosen``; the reason when that is impossible."""
    return with_fields(base, chosen, unit)


def holds_news(canonical: Appointment, raw_fingerprint: str, link: Link, base: Appointment) -> bool:
    """Does a member's record (``canonical``: comparable with the merge ``base``) hold a change syncd has
    not merged yet? The reconcile's own test: neither what it last held or wrote, nor only lagging."""
    if raw_fingerprint in (link.fingerprint, link.written_fingerprint) or canonical.fingerprint() in (
        link.fingerprint,
        link.written_fingerprint,
    ):
        return False
    if link.seen is None:
        return True
    return news_of(canonical, Appointment.from_json(link.seen), base).fingerprint() != base.fingerprint()


def shown(appt: Appointment, names: Sequence[str]) -> dict[str, Any]:
    """PHI-safe values: statuses, times and reference keys as they are, free text as length + digest."""
    values = appt.sync_values()
    return {name: text_digest(values[name]) if name in TEXT_FIELDS else values[name] for name in names}


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's record of the appointment, as just re-read for a resolution."""

    connector: str
    external_id: str
    vendor: Appointment | None
    """The record in the vendor's own ids, with its native status (what ``write_refusal`` looks at)."""
    canonical: Appointment | None
    """The record with canonical keys (None when it is unusable: see ``problem``)."""
    limits: Limits = dc_field(default_factory=Limits)
    """What this member cannot take from syncd (fields it does not store, fields only its own users set)."""
    problem: str | None = None
    """Why the record cannot be used: deleted, unmappable, a reference without a crosswalk entry."""


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What taking the chosen version means for one member."""

    connector: str
    external_id: str
    op: str
    """``none`` (it holds the value already or cannot hold the field), ``update``, ``cancel`` or
    ``replace`` (the vendor's create-new-and-cancel-old flow)."""
    fields: tuple[str, ...] = ()
    before: Mapping[str, Any] = dc_field(default_factory=dict)
    after: Mapping[str, Any] = dc_field(default_factory=dict)
    refusal: str | None = None
    """Why this member cannot take it (nothing is then written anywhere)."""
    not_written: tuple[str, ...] = ()
    """Fields whose value differs but that this member cannot hold or write: left as they are, no
    refusal (``docs/vendors/README.md`` rule 15)."""

    def as_json(self) -> dict[str, Any]:
        return {"connector": self.connector, "external_id": self.external_id, "op": self.op,
                "fields": list(self.fields), "from": dict(self.before), "to": dict(self.after),
                "not_written": list(self.not_written), "refused": self.refusal}

    def describe(self) -> str:
        if self.refusal is not None:
            return f"{self.connector} {self.external_id}: refused: {self.connector} {self.refusal}"
        kept = f" ({', '.join(self.not_written)}: not held or not written there)" if self.not_written else ""
        if not self.fields:
            return f"{self.connector} {self.external_id}: nothing to write{kept}"
        changes = ", ".join(f"{name} {self.before.get(name)} -> {self.after.get(name)}" for name in self.fields)
        return f"{self.connector} {self.external_id}: {self.op} {changes}{kept}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The plan for ``conflicts resolve ID --take NAME``: carried out only when nothing refuses it."""

    conflict_id: int
    canonical_id: str
    field: str
    take: str
    merged: Appointment | None = None
    """The merge base with the conflicting field(s) taken from ``take``."""
    targets: tuple[TargetPlan, ...] = ()
    problem: str | None = None
    """Why the choice cannot be made at all (no record in ``take``, a member changed meanwhile...)."""
    alternatives: tuple[str, ...] = ()
    """Other ``--take`` choices every member could take (offered when this one is refused)."""
    versions: Mapping[str, tuple[str | None, datetime | None]] = dc_field(default_factory=dict)
    """member -> the version and modified time its record was read with."""

    def but(self, **changes: Any) -> Resolution:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    @property
    def refused(self) -> bool:
        return self.problem is not None or any(t.refusal is not None for t in self.targets)

    @property
    def writes(self) -> tuple[TargetPlan, ...]:
        return tuple(t for t in self.targets if t.fields and t.refusal is None)

    def reason(self) -> str | None:
        """Why it is refused, for the operator; None when it is not."""
        if self.problem is not None:
            return self.problem
        refusals = [f"{t.connector} {t.refusal}" for t in self.targets if t.refusal is not None]
        return "; ".join(refusals) if refusals else None

    def advice(self) -> str:
        """The choice that would work instead."""
        if not self.alternatives:
            return ("no member's version can be written to every system: change the appointment by hand where "
                    "it is refused, run `syncd resync`, then resolve again")
        if len(self.alternatives) == 1:
            name = self.alternatives[0]
            return f"resolve with --take {name} to keep {name}'s value"
        return "choices that would work: " + ", ".join(f"--take {name}" for name in self.alternatives)

    def message(self, *, dry_run: bool) -> str:
        head = f"conflict {self.conflict_id} ({self.canonical_id}, {self.field})"
        lines: list[str] = []
        if self.refused:
            lines.append(f"{head}: cannot take {self.take}'s version: {self.reason()}")
            lines.append("nothing was written; the conflict stays open; " + self.advice())
            return "\n".join(lines)
        verb = "would write" if dry_run else "wrote"
        lines.append(f"{head}: taking {self.take}'s version {verb}:")
        lines.extend("  " + t.describe() for t in self.targets)
        if dry_run:
            lines.append("dry run: nothing was written")
        return "\n".join(lines)

    def as_json(self, *, dry_run: bool) -> dict[str, Any]:
        return {"conflict_id": self.conflict_id, "canonical_id": self.canonical_id, "field": self.field,
                "take": self.take, "dry_run": dry_run, "refused": self.refused, "reason": self.reason(),
                "alternatives": list(self.alternatives), "targets": [t.as_json() for t in self.targets]}
