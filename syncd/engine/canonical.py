"""Each member's view of an appointment: references in its ids or in canonical keys, the fields it
cannot hold, the statuses it cannot tell apart. Pure functions over values (no I/O), used by every
stage: the planner compares and merges in canonical keys, the writer translates to the target's ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from syncd.connector import Connector, VendorRecord
from syncd.engine.fields import Limits, comparable, default_location_of, limits_of
from syncd.engine.work import CANCELLED
from syncd.ledger.models import Link
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND, STATUS_RANK, SYNC_FIELDS, Appointment, Status

__all__ = ["Members"]


class Members:
    """What the engine knows of every configured member, read from its connector's declarations
    (capabilities, status vocabulary) and its ``default_location``: never from a vendor's name."""

    def __init__(self, connectors: Mapping[str, Connector], default_locations: Mapping[str, str]) -> None:
        self.connectors = connectors
        self.default_locations = dict(default_locations)
        """connector -> its ``default_location`` (the location of all its appointments)."""

    def __contains__(self, name: object) -> bool:
        return name in self.connectors

    def limits(self, name: str, record: VendorRecord | None = None) -> Limits:
        """What member ``name`` cannot take from syncd (for ``record`` when given)."""
        connector = self.connectors.get(name)
        return limits_of(connector.capabilities if connector is not None else None, record,
                         default_location=self.default_locations.get(name))

    def status_out(self, name: str) -> Mapping[Status, Any]:
        """Canonical status -> the member's native status (empty when its mapping says nothing)."""
        connector = self.connectors.get(name)
        return getattr(getattr(connector, "mapping", None), "status_out", None) or {}

    def to_canonical(
        self, source: str, rec: VendorRecord, refs: Mapping[str, Mapping[str, str]]
    ) -> tuple[Appointment | None, str | None]:
        """The record with references as canonical keys, or (None, reason) when one has no entry."""
        appt = rec.appointment
        assert appt is not None
        not_stored = self.limits(source, rec).not_stored
        changes: dict[str, Any] = {"native_status": None, "extra": {}}
        for name in REFERENCE_FIELDS:
            value = getattr(appt, name)
            if name in not_stored:
                changes[name] = None  # never read there: the merge base stands in for it
                continue
            if value is None:
                if name == "location" and source in self.default_locations:
                    changes[name] = self.default_locations[source]  # all its appointments take place there
                continue
            kind = REFERENCE_KIND[name]
            key = refs.get(kind, {}).get(value)
            if key is None:
                # name the kind, the source connector and the appointment -- never the reference itself
                return None, (
                    f"missing crosswalk entry: {kind} of {source} appointment {rec.external_id} has no crosswalk key"
                )
            changes[name] = key
        return appt.with_changes(**changes), None

    def translate(self, target: str, appt: Appointment, lookup: Mapping[str, Mapping[str, str]]) -> Appointment | str:
        """``appt`` in ``target``'s ids; a reference it never takes from syncd (not stored, read-only) is
        left out, so it needs no crosswalk entry there. A string: the entry that is missing."""
        changes: dict[str, Any] = {}
        unwritable = self.limits(target).unwritable
        for name in REFERENCE_FIELDS:
            key = getattr(appt, name)
            if name in unwritable and key is not None:
                changes[name] = None
                continue
            if key is None:
                continue
            kind = REFERENCE_KIND[name]
            external = lookup.get(kind, {}).get(key)
            if external is None:
                return f"missing crosswalk entry: {kind} {key} for connector {target}"
            changes[name] = external
        return appt.with_changes(**changes) if changes else appt

    def comparable(self, source: str, appt: Appointment, base: Appointment, limits: Limits) -> Appointment:
        """``appt`` as read from ``source``, what the vendor says nothing about taken from ``base``: the
        fields it does not store, a derived end, a lossy status (Zoho "Scheduled"), the cancellation
        reason it fills. Its read-only fields stay as read (they are its own value)."""
        appt = comparable(appt, base, limits)
        appt = self._keep_covered_status(source, appt, base)
        if appt.status in CANCELLED and appt.status == base.status:
            appt = appt.with_changes(cancellation_reason=base.cancellation_reason)
        return appt

    def _keep_covered_status(self, source: str, appt: Appointment, base: Appointment) -> Appointment:
        """A vendor whose native status stands for several canonical ones (Zoho "Scheduled" for
        proposed, pending and booked; a status it cannot show at all) says nothing new when the base
        status is one of them: keep the base's, so a lossy read never changes the status."""
        if appt.status == base.status:
            return appt
        status_out = self.status_out(source)
        native = status_out.get(appt.status)
        covered = status_out.get(base.status)
        if not status_out or native is None:
            return appt
        if covered is None:
            # the vendor cannot show the base status at all: only progress beyond it is news
            if STATUS_RANK[appt.status] > STATUS_RANK[base.status]:
                return appt
        elif covered != native:
            return appt
        reason = base.cancellation_reason if base.status in CANCELLED else None
        with contextlib.suppress(ValueError):
            return appt.with_changes(status=base.status, cancellation_reason=reason)
        return appt

    def same_native(self, member: str, one: Status, other: Status) -> bool:
        """Does ``member`` show both canonical statuses as one native status (a lossy status)?"""
        status_out = self.status_out(member)
        first, second = status_out.get(one), status_out.get(other)
        return first is not None and first == second

    def needs_replace(self, name: str, current: Appointment, desired: Appointment) -> str | None:
        """Why ``desired`` cannot be written over ``current`` in member ``name`` in place, so that the
        replace flow (create new, cancel old, link both) carries it; None when it can. A member that
        declares ``patient_change = False`` never takes another patient in place; the connector names
        the other changes its vendor forbids (:meth:`~syncd.connector.Connector.needs_replace`)."""
        connector = self.connectors[name]
        reason = connector.needs_replace(current, desired)
        if reason is None and not connector.capabilities.patient_change and not desired.status.terminal \
                and current.patient is not None and desired.patient != current.patient:
            reason = f"{name} cannot change the patient of an appointment in place"
        return reason

    def located(self, merged: Appointment, links: Sequence[Link], source: str) -> Appointment:
        """``merged`` with the ``default_location`` of a member holding it, when it has no location."""
        if merged.location is not None or not self.default_locations:
            return merged
        holders = [lk.connector for lk in links if not lk.retired] + ([source] if source else [])
        key = default_location_of(holders, self.default_locations)
        return merged.with_changes(location=key) if key is not None else merged

    def echo_matches(self, target: str, record: VendorRecord, desired: Appointment) -> bool:
        """Does the record the vendor answered hold exactly what we wrote (on what it can express)?
        When another user's change landed beside ours (a GET/PUT race the vendor cannot detect), it does
        not: the answer is then no echo, and the next read carries that change to the others."""
        if record.appointment is None:
            return True
        got = record.appointment
        status_out = self.status_out(target)
        unwritable = self.limits(target, record).unwritable
        for name in SYNC_FIELDS:
            if name in unwritable:
                continue  # not written by us: whatever the vendor holds there is no sign of a race
            mine, theirs = getattr(desired, name), getattr(got, name)
            if name == "status":
                if status_out.get(mine, mine) != status_out.get(theirs, theirs):
                    return False
            elif name in ("cancellation_reason", "description") and mine is None:
                continue  # vendors fill a reason or a mandatory name of their own
            elif mine != theirs:
                return False
        return True
