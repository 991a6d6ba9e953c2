"""What each member can hold: the engine's pure rules for fields a system does not store, fields it
stores but syncd may not write, fields a create needs, and a member's configured ``default_location``.

Two different facts (docs/vendors/README.md rule 15), declared by every connector in its
:class:`syncd.connector.Capabilities` (and per record where they depend on it):

* **not stored** (a system without locations, or without a description field): never read, never compared, never
  written. Whatever a read carries for such a field is no news; the merge base stands in for it.
* **read-only** (a specialty only the system's users set, an end time the vendor derives): read, mapped through the
  crosswalk, merged as that system's value, never sent. A change made elsewhere is not written there,
  so it causes no write attempt and no conflict in that system. An ``end`` that cannot be written while
  the start can is derived by the vendor from the start (start + the service's duration): a moved
  start keeps the merged duration, and the vendor's end is no news.

Everything here is pure (no I/O), so that the engine's stages can call it wherever they run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syncd.connector import Capabilities, VendorRecord
from syncd.model import SYNC_FIELDS, Appointment

__all__ = [
    "Limits",
    "comparable",
    "default_location_of",
    "held_after_write",
    "limits_of",
    "missing_field_reason",
    "missing_on_create",
    "writable",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """The fields one member cannot take from syncd, for one record (or for the member in general)."""

    not_stored: frozenset[str] = frozenset()
    read_only: frozenset[str] = frozenset()

    @property
    def unwritable(self) -> frozenset[str]:
        """Fields syncd never sends to the member."""
        return self.not_stored | self.read_only

    @property
    def derived_end(self) -> bool:
        """The end cannot be written while the start can: the vendor derives it from the start."""
        return "end" in self.unwritable and "start" not in self.unwritable

    @property
    def no_news(self) -> frozenset[str]:
        """Fields whose value as read says nothing new: those not stored, and a derived end."""
        return self.not_stored | (frozenset({"end"}) if self.derived_end else frozenset())

    @property
    def own_values(self) -> frozenset[str]:
        """Read-only fields whose value is the member's own (a derived end is not)."""
        return self.read_only - self.no_news


def limits_of(capabilities: Capabilities | None, record: VendorRecord | None = None, *,
              default_location: str | None = None) -> Limits:
    """The member's declared limits, with the record's own (per-record ones) added. A member that stores
    no location but has a configured ``default_location`` holds that location: read-only, not unknown."""
    not_stored = capabilities.not_stored if capabilities is not None else frozenset()
    read_only = capabilities.read_only if capabilities is not None else frozenset()
    if record is not None:
        not_stored = not_stored | record.not_stored
        read_only = read_only | record.read_only
    if default_location is not None and "location" in not_stored:
        not_stored = not_stored - {"location"}
        read_only = read_only | {"location"}
    return Limits(frozenset(not_stored), frozenset(read_only - not_stored))


def comparable(appt: Appointment, base: Appointment, limits: Limits) -> Appointment:
    """``appt`` as its member read it, with what the member says nothing about taken from ``base``: the
    fields it does not store, and a derived end (the moved start keeps the base's duration). Read-only
    fields stay as read: they are the member's own value."""
    if not limits.no_news:
        return appt
    changes: dict[str, Any] = {}
    for name in limits.no_news:
        if name == "end" and limits.derived_end:
            if appt.start is not None and base.duration is not None:
                changes["end"] = appt.start + base.duration
            continue
        changes[name] = getattr(base, name)
    try:
        return appt.with_changes(**changes)
    except ValueError:
        return appt


def writable(fields: Iterable[str], limits: Limits) -> list[str]:
    """``fields`` without those syncd never sends to the member, in canonical order."""
    wanted = set(fields) - limits.unwritable
    return [name for name in SYNC_FIELDS if name in wanted]


def held_after_write(written: Appointment, answer: Appointment | None, limits: Limits) -> Appointment:
    """What the member holds after syncd wrote ``written`` there: that, except for its read-only fields,
    which keep the member's own value from its ``answer`` (canonical keys). None: nothing known."""
    if answer is None or not limits.own_values:
        return written
    try:
        return written.with_changes(**{name: getattr(answer, name) for name in limits.own_values})
    except ValueError:
        return written


def missing_on_create(appt: Appointment, required: Iterable[str]) -> list[str]:
    """The fields a create needs that ``appt`` lacks, in canonical order."""
    wanted = set(required)
    return [name for name in SYNC_FIELDS if name in wanted and getattr(appt, name) is None]


def default_location_of(members: Iterable[str], defaults: Mapping[str, str]) -> str | None:
    """The configured ``default_location`` of the first of ``members`` that has one."""
    return next((defaults[m] for m in members if m in defaults), None)


def missing_field_reason(target: str, target_type: str, canonical_id: str, missing: Iterable[str],
                         not_storing: Iterable[str]) -> str:
    """The dead letter's reason for a create that lacks required fields: what is missing, where, and how to
    supply it. ``not_storing`` names the members holding the appointment that store no location."""
    names = list(missing)
    what = ", ".join(names)
    reason = f"missing required field: {target} ({target_type}) needs {what} to create appointment {canonical_id}"
    hint = ""
    holders = sorted(set(not_storing))
    if "location" in names and holders:
        where = ", ".join(holders)
        first = holders[0]
        hint = (f"; {where} stores no location: set connectors.{first}.default_location to the crosswalk key "
                f"of the location where its appointments take place, then run `syncd deadletters retry`")
    elif names:
        hint = "; set it in the system the appointment came from, then run `syncd deadletters retry`"
    return reason + hint
