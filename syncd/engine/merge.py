"""Three-way merge of one appointment across the members of a sync group.

The *base* is the last merged canonical snapshot in the ledger. Each *side* is one member's current
version of the appointment (canonical keys), with the member's modified time and the fields its value
says nothing about (:attr:`Side.no_news`: those the member does not store, and an end it derives from
the start). A field the member stores but syncd may not write (read-only, e.g. a specialty only its users set) is
merged as that member's value like any other. Per field:

* no side changed it: the base value stays;
* one side changed it (or every side that changed it agrees): that value is taken;
* sides changed it to different values (a true conflict): for ``status`` the canonical state machine
  decides first (a terminal status is never left; the furthest progress wins), then ``owners`` from the
  config (the named member wins), else the most recent change wins (``"*"``, the default). A conflict
  that no policy settles (equal or unknown modified times) keeps the base value and is reported open.

A side never moves the status out of a terminal base status (a lagging system); such a value is ignored.
``start`` and ``end`` are merged as one unit (the time slot), so a merge never builds an impossible slot.

:func:`merge_member` is the reconcile's merge of one member's record: three-way with what that member
was last known to hold as the common ancestor, the ledger's snapshot standing for the other members.
:func:`merge_linked` merges a member's record that onboarding has just linked to an appointment: the two
never had a common ancestor, so every field on which they differ is a true conflict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.model import STATUS_RANK, SYNC_FIELDS, TEXT_FIELDS, Appointment, InvalidAppointment, Status, text_digest

LEDGER_SIDE = "(ledger)"
"""Name of the ledger's side in :func:`merge_member`: what the rest of the group agreed on."""

__all__ = ["LEDGER_SIDE", "FieldConflict", "MergeResult", "Side", "merge", "merge_linked", "merge_member", "news_of"]

# fields merged as a unit: (start, end) is one slot
_UNITS: tuple[tuple[str, ...], ...] = tuple(
    ("start", "end") if name == "start" else (name,) for name in SYNC_FIELDS if name != "end"
)


@dataclass(frozen=True, slots=True)
class Side:
    """One member's current version of the appointment."""

    connector: str
    appointment: Appointment
    modified_at: datetime | None = None
    no_news: frozenset[str] = frozenset()
    """Fields this side proposes nothing for: not stored by its member (:mod:`syncd.engine.fields`).
    With ``end`` here but not ``start``, the member derives its end: a moved start keeps the base's
    duration."""


@dataclass(frozen=True, slots=True)
class FieldConflict:
    field: str
    values: Mapping[str, Any]
    """connector -> the value it holds (PHI-redacted where free text)."""
    winner: str | None
    """The connector whose value was taken, or None when left open (base kept)."""
    rule: str
    """How it was settled: "status-progress", "terminal", "owner", "most-recent", or "open"."""


@dataclass(slots=True)
class MergeResult:
    merged: Appointment
    changed: list[str] = field(default_factory=list)
    """Fields whose merged value differs from the base."""
    sources: dict[str, str] = field(default_factory=dict)
    """field -> connector whose value was taken (only for changed fields)."""
    conflicts: list[FieldConflict] = field(default_factory=list)
    ignored: list[tuple[str, str, str]] = field(default_factory=list)
    """(connector, field, reason) for side values the merge refused (e.g. leaving a terminal status)."""

    @property
    def open_conflicts(self) -> list[FieldConflict]:
        return [c for c in self.conflicts if c.winner is None]


def _unit_value(appt: Appointment, unit: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(appt, name) for name in unit)


def _redact(unit: tuple[str, ...], value: tuple[Any, ...]) -> Any:
    out = []
    for name, v in zip(unit, value, strict=True):
        if name in TEXT_FIELDS:
            out.append(text_digest(v))
        elif isinstance(v, datetime):
            out.append(v.strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif isinstance(v, Status):
            out.append(v.value)
        else:
            out.append(v)
    return out[0] if len(out) == 1 else out


def merge(base: Appointment, sides: list[Side], owners: Mapping[str, str] | None = None) -> MergeResult:
    """Merge ``sides`` against ``base``. Pure: no I/O, deterministic."""
    owners = owners or {}
    values: dict[str, Any] = {}
    result = MergeResult(merged=base)
    for unit in _UNITS:
        key = unit[0]
        base_value = _unit_value(base, unit)
        proposals: dict[str, tuple[Any, ...]] = {}
        for side in sides:
            value = _unit_value(side.appointment, unit)
            if any(name in side.no_news for name in unit):
                if unit == ("start", "end") and "start" not in side.no_news and base.duration is not None:
                    # the vendor cannot set the end (e.g. it derives it from a service): a moved start
                    # keeps the merged duration
                    start = side.appointment.start
                    value = (start, start + base.duration) if start is not None else base_value
                else:
                    continue
            if value == base_value:
                continue
            if key == "status" and base.status.terminal:
                result.ignored.append((side.connector, "status", "terminal status is never left"))
                continue
            proposals[side.connector] = value
        if not proposals:
            continue
        distinct = set(proposals.values())
        winner: str | None
        if len(distinct) == 1:
            chosen = next(iter(distinct))
            winner = sorted(proposals)[0]
        else:
            winner, rule = _settle(key, proposals, sides, owners)
            conflict_values = {name: _redact(unit, v) for name, v in proposals.items()}
            conflict_values["(base)"] = _redact(unit, base_value)
            label = "start" if unit == ("start", "end") else key
            result.conflicts.append(FieldConflict(label, conflict_values, winner, rule))
            if winner is None:
                continue
            chosen = proposals[winner]
        for name, v in zip(unit, chosen, strict=True):
            values[name] = v
        for name in unit:
            if getattr(base, name) != values[name]:
                result.changed.append(name)
                result.sources[name] = winner or ""
    if "status" in values and values["status"] not in (Status.CANCELLED, Status.ENTERED_IN_ERROR):
        values["cancellation_reason"] = None
    try:
        result.merged = base.with_changes(**values) if values else base
    except InvalidAppointment:
        # an impossible combination (e.g. a reason without a cancellation): keep the base for those fields
        values.pop("cancellation_reason", None)
        result.merged = base.with_changes(**values) if values else base
    result.changed = [f for f in SYNC_FIELDS if f in set(result.changed)]
    return result


def _settle(
    key: str, proposals: dict[str, tuple[Any, ...]], sides: list[Side], owners: Mapping[str, str]
) -> tuple[str | None, str]:
    if key == "status":
        ranked = sorted(proposals.items(), key=lambda kv: STATUS_RANK[kv[1][0]], reverse=True)
        top_rank = STATUS_RANK[ranked[0][1][0]]
        leaders = {name for name, v in ranked if STATUS_RANK[v[0]] == top_rank}
        if len({proposals[n] for n in leaders}) == 1:
            return sorted(leaders)[0], "status-progress"
        proposals = {n: proposals[n] for n in leaders}
    owner = owners.get(key, "*")
    if owner != "*" and owner in proposals:
        return owner, "owner"
    modified = {s.connector: s.modified_at for s in sides if s.connector in proposals}
    if all(m is not None for m in modified.values()):
        ordered = sorted(modified.items(), key=lambda kv: kv[1], reverse=True)  # type: ignore[arg-type,return-value]
        if len(ordered) == 1 or ordered[0][1] != ordered[1][1]:
            return ordered[0][0], "most-recent"
    return None, "open"


def news_of(record: Appointment, seen: Appointment, base: Appointment) -> Appointment:
    """What a member's ``record`` says that is new: the ``base`` with each field (the slot as one unit)
    where the record differs from what the member was last known to hold (``seen``).

    A field the record still holds as ``seen`` while the base moved on is a write of ours on its way
    there (or a read older than our write): not the member's change, so the base value stays. Falls
    back to the record itself when the combination would be impossible.
    """
    values: dict[str, Any] = {}
    for unit in _UNITS:
        if _unit_value(record, unit) != _unit_value(seen, unit):
            for name in unit:
                values[name] = getattr(record, name)
    if "status" in values:
        values["cancellation_reason"] = record.cancellation_reason
    try:
        return base.with_changes(**values) if values else base
    except InvalidAppointment:
        return record


def merge_member(
    seen: Appointment,
    side: Side,
    base: Appointment,
    base_modified: datetime | None,
    owners: Mapping[str, str] | None = None,
) -> MergeResult:
    """Three-way merge of one member's record (``side``) with the ledger's snapshot (``base``), their
    common ancestor being what that member was last known to hold (``seen``).

    A field only the member changed is taken from it; one only the ledger moved on (a write to the
    member still on its way) keeps the ledger's value; one both changed to different values is a true
    conflict, settled as in :func:`merge`: the ledger's side stands for every other member (an owner
    other than this member is the ledger's side), its time is ``base_modified``. The result is built
    on ``base`` and its ``changed`` lists the fields that differ from ``base``.
    """
    remapped = {name: (owner if owner in ("*", side.connector) else LEDGER_SIDE) for name, owner in
                (owners or {}).items()}
    three = merge(seen, [side, Side(LEDGER_SIDE, base, base_modified)], remapped)
    values = {name: getattr(three.merged, name) for name in SYNC_FIELDS}
    try:
        merged = base.with_changes(**values)
    except InvalidAppointment:
        merged = three.merged
    changed = merged.diff(base)
    return MergeResult(
        merged=merged,
        changed=changed,
        sources={name: side.connector for name in changed},
        conflicts=three.conflicts,
        ignored=[entry for entry in three.ignored if entry[0] != LEDGER_SIDE],
    )


def merge_linked(
    base: Appointment,
    base_modified: datetime | None,
    side: Side,
    owners: Mapping[str, str] | None = None,
) -> MergeResult:
    """Merge a member's record (``side``) that was just linked to the appointment ``base`` (onboarding:
    the same appointment typed into two systems, or a ledger rebuilt over records syncd made earlier).

    They have no common ancestor, so every field (the slot as one unit) on which they differ is a true
    conflict, settled as in :func:`merge`: status progress first, then ``owners`` (an owner other than
    this member is the ledger's side, which stands for the members already linked), else the most recent
    change (``base_modified``: the latest modified time among those members' records). A field the
    member cannot hold proposes nothing. The result is built on ``base``; ``changed`` lists the fields
    taken from the member.
    """
    remapped = {name: (owner if owner in ("*", side.connector) else LEDGER_SIDE) for name, owner in
                (owners or {}).items()}
    ledger = Side(LEDGER_SIDE, base, base_modified)
    result = MergeResult(merged=base)
    values: dict[str, Any] = {}
    for unit in _UNITS:
        mine, theirs = _unit_value(base, unit), _unit_value(side.appointment, unit)
        if any(name in side.no_news for name in unit):
            start = side.appointment.start
            if unit != ("start", "end") or "start" in side.no_news or base.duration is None or start is None:
                continue
            theirs = (start, start + base.duration)  # a member that derives the end: the start only
        if mine == theirs:
            continue
        key = unit[0]
        proposals = {LEDGER_SIDE: mine, side.connector: theirs}
        winner, rule = _settle(key, proposals, [ledger, side], remapped)
        conflict_values = {name: _redact(unit, v) for name, v in proposals.items()}
        label = "start" if unit == ("start", "end") else key
        result.conflicts.append(FieldConflict(label, conflict_values, winner, rule))
        if winner != side.connector:
            continue
        for name, v in zip(unit, theirs, strict=True):
            values[name] = v
    if "status" in values and values["status"] not in (Status.CANCELLED, Status.ENTERED_IN_ERROR):
        values["cancellation_reason"] = None
    try:
        result.merged = base.with_changes(**values) if values else base
    except InvalidAppointment:
        values.pop("cancellation_reason", None)
        try:
            result.merged = base.with_changes(**values) if values else base
        except InvalidAppointment:
            result.merged = base
    result.changed = result.merged.diff(base)
    result.sources = {name: side.connector for name in result.changed}
    return result
