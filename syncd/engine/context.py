"""What every stage of one engine shares: the configuration, the ledger, the connectors, the pass's
counters, the dry run's overlay, and how a decision or a stopped connector is reported."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from syncd.config import Config, SyncGroup
from syncd.connector import Connector, VendorRecord, with_remedy
from syncd.engine.canonical import Members
from syncd.engine.onboard import WINDOW_READ_KEY
from syncd.engine.overlay import DryOverlay
from syncd.engine.stats import PassStats
from syncd.engine.work import Decision
from syncd.errors import VendorError
from syncd.ledger.models import AppointmentRow, Link
from syncd.ledger.store import Ledger, Tx
from syncd.logging import get_logger
from syncd.model import REFERENCE_FIELDS, REFERENCE_KIND

__all__ = ["EngineContext", "now"]

log = get_logger("syncd.engine")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class EngineContext:
    config: Config
    ledger: Ledger
    connectors: dict[str, Connector]
    members: Members
    dry_run: bool = False
    holder: str = "syncd"
    on_decision: Callable[[Decision], None] | None = None
    never_read: frozenset[str] = frozenset()
    """Connectors this engine's caller never reads in full (the daemon: ``poll_interval = 0``):
    creates into them are not held for a window read that would never come; until a ``resync`` has
    read their window, each create is searched for by its reference first instead."""
    stats: PassStats = field(default_factory=PassStats)
    stop_errors: dict[str, VendorError] = field(default_factory=dict)
    """connector -> the error that stopped it (``stats.stopped`` holds the operator's line)."""
    group_of: dict[str, SyncGroup] = field(default_factory=dict)
    overlay: DryOverlay | None = None
    """dry-run: what earlier pages would have stored (each dry page's transaction is rolled back)."""
    window_read: set[str] = field(default_factory=set)
    """Connectors whose whole window this ledger has read once: creates into them are sent."""
    link_conflicts_seen: dict[str, set[str]] = field(default_factory=dict)
    """connector -> appointments whose link conflict the current full pass over it found again."""

    def __post_init__(self) -> None:
        for group in self.config.sync:
            for member in group.members:
                self.group_of.setdefault(member, group)
        if self.dry_run and self.overlay is None:
            self.overlay = DryOverlay()

    # ------------------------------------------------------------------ reporting
    def decide(self, decision: Decision) -> None:
        # a record found unchanged is most of every pass: logged at debug (rendering one info line
        # costs more than deciding it); every other decision at info
        emit = log.debug if decision.action == "unchanged" else log.info
        emit("sync_decision", op=decision.action, connector=decision.connector, canonical_id=decision.canonical_id,
             external_id=decision.external_id, fields=list(decision.fields))
        if self.on_decision is not None:
            self.on_decision(decision)

    def report(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.decide(decision)

    def stop(self, connector: str, error: VendorError) -> None:
        """``connector`` stops for this pass: what stopped it, the request, the cause and the config key
        to check (docs/reference.md §4)."""
        error = with_remedy(self.connectors.get(connector), error)
        self.stats.stopped.setdefault(connector, f"{error.headline}: {error.explain()}")
        self.stop_errors.setdefault(connector, error)
        log.warning("connector_stopped", connector=connector, kind=error.kind, code=error.code,
                    method=error.method, url=error.url, http_status=error.status, field=error.config_key)

    def stopped(self, connector: str) -> bool:
        return connector in self.stats.stopped

    # ------------------------------------------------------------------ reads (through the dry run's overlay)
    async def links_for(self, tx: Tx, source: str, external_ids: Sequence[str]) -> dict[str, Link]:
        found = await tx.links_for(source, external_ids)
        return self.overlay.links_for(source, external_ids, found) if self.overlay is not None else found

    async def appointments(self, tx: Tx, cids: Iterable[str]) -> dict[str, AppointmentRow]:
        wanted = list(cids)
        found = await tx.appointments(wanted)
        return self.overlay.appointments_of(wanted, found) if self.overlay is not None else found

    async def links_of(self, tx: Tx, cids: Iterable[str]) -> dict[str, list[Link]]:
        wanted = list(cids)
        found = await tx.links_of(wanted)
        return self.overlay.links_of(wanted, found) if self.overlay is not None else found

    async def source_refs(self, tx: Tx, source: str, records: Sequence[VendorRecord]) -> dict[str, dict[str, str]]:
        """The crosswalk's canonical keys for the references ``records`` of ``source`` carry."""
        wanted: dict[str, set[str]] = {}
        for rec in records:
            if rec.appointment is None:
                continue
            for name in REFERENCE_FIELDS:
                value = getattr(rec.appointment, name)
                if value is not None:
                    wanted.setdefault(REFERENCE_KIND[name], set()).add(value)
        return {kind: await tx.crosswalk_reverse(kind, source, sorted(ids)) for kind, ids in wanted.items()}

    async def windows_read(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` this ledger has read in full once (their creates are no longer held)."""
        wanted = set(names)
        missing = [n for n in sorted(wanted) if n not in self.window_read]
        if missing:
            async with self.ledger.transaction(readonly=True) as tx:
                for name in missing:
                    if (await tx.state_get(name, [WINDOW_READ_KEY])).get(WINDOW_READ_KEY):
                        self.window_read.add(name)
        read = {n for n in wanted if n in self.window_read}
        if self.overlay is not None:
            read |= wanted & self.overlay.window_read
        return read

    def default_locations(self) -> Mapping[str, str]:
        return self.members.default_locations
