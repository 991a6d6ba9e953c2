"""What a dry run would have stored, kept in memory for the rest of its pass.

A dry run rolls back every page's transaction, so without this a later page would not see what an
earlier one decided: the appointments it would have created, the links it would have made, the creates
it would hold for a member whose window is not read yet. Onboarding decides from exactly that (a
record of the second member is linked to an appointment first seen in the first), so the dry run keeps
it here and reads the ledger through it; that is how ``resync --dry-run`` predicts ``linked`` and
``created`` as the real pass makes them. Nothing here is ever written anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.ledger.models import AppointmentRow, Link, OutboxItem
from syncd.model import slot_key

__all__ = ["DryOverlay"]


@dataclass
class DryOverlay:
    appointments: dict[str, AppointmentRow] = field(default_factory=dict)
    links: dict[tuple[str, str], Link] = field(default_factory=dict)
    held: dict[tuple[str, str], OutboxItem] = field(default_factory=dict)
    """(canonical id, target) -> the create that waits for the target's window to be read."""
    counted: set[tuple[str, str]] = field(default_factory=set)
    """(canonical id, target) of the creates already counted (a create is counted once)."""
    link_conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """canonical id -> values of a link conflict this pass would open."""
    window_read: set[str] = field(default_factory=set)
    _slots: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    _slot_of: dict[str, tuple[str, str]] = field(default_factory=dict)

    # -- what a page would have stored ------------------------------------------------------------
    def absorb(self, appointments: Iterable[AppointmentRow], links: Iterable[Link],
               retired: Iterable[tuple[str, str]], superseded: Iterable[tuple[str, str]],
               conflicts: Mapping[str, dict[str, Any]]) -> None:
        for row in appointments:
            self.appointments[row.canonical_id] = row
            old = self._slot_of.pop(row.canonical_id, None)
            if old is not None:
                self._slots[old].discard(row.canonical_id)
            key = slot_key(row.snapshot) if row.snapshot is not None else None
            if key is not None:
                self._slot_of[row.canonical_id] = (row.sync_group, key)
                self._slots[(row.sync_group, key)].add(row.canonical_id)
        for link in links:
            self.links[(link.connector, link.external_id)] = link
        for connector, external_id in retired:
            gone = self.links.get((connector, external_id))
            if gone is not None:
                gone.retired = True
        for pair in superseded:
            self.held.pop(pair, None)
        self.link_conflicts.update(conflicts)

    def hold(self, item: OutboxItem) -> None:
        self.held[(item.canonical_id, item.connector)] = item

    def release(self, target: str) -> list[OutboxItem]:
        """The held creates into ``target``, now that its window is read (taken out of the overlay)."""
        pairs = [pair for pair in self.held if pair[1] == target]
        return [self.held.pop(pair) for pair in pairs]

    # -- reads through the overlay -----------------------------------------------------------------
    def links_for(self, connector: str, external_ids: Iterable[str], found: dict[str, Link]) -> dict[str, Link]:
        for ext in external_ids:
            link = self.links.get((connector, ext))
            if link is not None:
                found[ext] = link
        return found

    def links_of(self, canonical_ids: Iterable[str], found: dict[str, list[Link]]) -> dict[str, list[Link]]:
        wanted = set(canonical_ids)
        extra: dict[str, list[Link]] = defaultdict(list)
        for link in self.links.values():
            if link.canonical_id in wanted:
                extra[link.canonical_id].append(link)
        for cid, links in extra.items():
            mine = {(lk.connector, lk.external_id) for lk in links}
            kept = [lk for lk in found.get(cid, []) if (lk.connector, lk.external_id) not in mine]
            found[cid] = kept + [lk for lk in links if not lk.retired]
        return found

    def appointments_of(
        self, canonical_ids: Iterable[str], found: dict[str, AppointmentRow]
    ) -> dict[str, AppointmentRow]:
        for cid in canonical_ids:
            row = self.appointments.get(cid)
            if row is not None:
                found[cid] = row
        return found

    def by_slot(self, sync_group: str, keys: Iterable[str],
                found: dict[str, list[AppointmentRow]]) -> dict[str, list[AppointmentRow]]:
        """``found`` (the ledger's candidates by slot key) as this pass would have left it: a row it
        changed replaces the ledger's version, under its new key."""
        wanted = set(keys)
        for key in list(found):
            found[key] = [r for r in found[key] if r.canonical_id not in self.appointments]
        for key in wanted:
            for cid in sorted(self._slots.get((sync_group, key), ())):
                found.setdefault(key, []).append(self.appointments[cid])
        return {k: v for k, v in found.items() if v}
