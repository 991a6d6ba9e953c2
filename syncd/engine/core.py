"""The sync engine: one readable path from a vendor's changes to writes in every other member.

It reads top to bottom as three stages, each in its own module:

    changes from a connector (poll, webhook inbox, resync)
      -> plan (:mod:`syncd.engine.plan`, pure): canonical records (references as crosswalk keys,
         :mod:`syncd.engine.canonical`), echo and stale-read checks, onboarding, the three-way merge
         (:mod:`syncd.engine.merge`), the writes each member needs
      -> reconcile (:mod:`syncd.engine.reconcile`): one transaction per page stores the merge bases,
         links, outbox rows, audit and lineage together with the cursor
      -> writer (:mod:`syncd.engine.writer`): claims, translates to the target's ids and writes in its
         dialect (batched where it can, a bounded pool of concurrent writes otherwise); every outcome
         goes to :mod:`syncd.engine.races` (GET/PUT race loop, replace flow, lost answers) and is
         committed in groups (:mod:`syncd.engine.outcomes`)

A cursor is stored in the transaction that commits the page it covers, together with the outbox rows
that carry the page's planned writes, so it never advances past a change that is not durable. The
outbox is drained by the writer right away and again on every start (crash recovery: a create whose
outcome is unknown is first searched for by its idempotency reference).

The engine decides from :class:`syncd.connector.Capabilities` and error kinds only, never from a
vendor's name. :class:`Engine` only wires the stages together and is what callers hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from syncd.config import Config, SyncGroup
from syncd.connector import Connector, VendorRecord
from syncd.engine.canonical import Members
from syncd.engine.context import EngineContext
from syncd.engine.plan import Planner
from syncd.engine.reconcile import Reconciler
from syncd.engine.resolve import Resolution
from syncd.engine.resolver import Resolver
from syncd.engine.stats import PassStats
from syncd.engine.work import Decision
from syncd.engine.writer import Writer, api_calls
from syncd.errors import VendorError
from syncd.ledger.models import AppointmentRow, ConflictRow, Link, OutboxItem
from syncd.ledger.store import Ledger

__all__ = ["Decision", "Engine"]


class Engine:
    """Reconciles changes from connectors across the sync groups of ``config``."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        connectors: Mapping[str, Connector],
        *,
        dry_run: bool = False,
        holder: str = "syncd",
        on_decision: Callable[[Decision], None] | None = None,
        max_concurrency: int = 8,
        never_read: Iterable[str] = (),
    ) -> None:
        connectors = dict(connectors)
        defaults = {name: cfg.default_location for name, cfg in config.connectors.items() if cfg.default_location}
        self.context = EngineContext(config, ledger, connectors, Members(connectors, defaults), dry_run=dry_run,
                                     holder=holder, on_decision=on_decision, never_read=frozenset(never_read))
        self.planner = Planner(self.context.members, self.context.stats)
        self.writer = Writer(self.context, self.planner, self._deleted, max_concurrency=max_concurrency)
        self.reconciler = Reconciler(self.context, self.planner, self.writer)
        self.resolver = Resolver(self.context, self.writer)

    async def _deleted(self, target: str, record: VendorRecord, item: OutboxItem) -> list[OutboxItem]:
        return await self.reconciler.apply_deletion(target, record, item)

    # ------------------------------------------------------------------ what callers read
    @property
    def config(self) -> Config:
        return self.context.config

    @property
    def ledger(self) -> Ledger:
        return self.context.ledger

    @property
    def connectors(self) -> dict[str, Connector]:
        return self.context.connectors

    @property
    def dry_run(self) -> bool:
        return self.context.dry_run

    @property
    def holder(self) -> str:
        return self.context.holder

    @holder.setter
    def holder(self, holder: str) -> None:
        self.context.holder = holder
        self.writer.book.commits.holder = holder

    @property
    def stats(self) -> PassStats:
        return self.context.stats

    @property
    def stop_errors(self) -> dict[str, VendorError]:
        return self.context.stop_errors

    @property
    def group_of(self) -> dict[str, SyncGroup]:
        return self.context.group_of

    @property
    def planned(self) -> list[OutboxItem]:
        """dry-run: the writes that would have been made."""
        return self.writer.planned

    def decide(self, decision: Decision) -> None:
        self.context.decide(decision)

    def stop(self, connector: str, error: VendorError) -> None:
        self.context.stop(connector, error)

    def api_calls(self, name: str) -> int:
        return api_calls(self.connectors[name])

    def http_retries(self, connector: Connector) -> int:
        return int(getattr(connector.http, "retried", 0) or 0)

    # ------------------------------------------------------------------ the stages
    async def process_page(self, source: str, records: Sequence[VendorRecord], deleted_ids: Sequence[str] = (), *,
                           cursor: str | None = None, set_cursor: bool = False) -> None:
        """Reconcile one page of changes from ``source``, store it (and ``cursor``), then write."""
        await self.reconciler.process_page(source, records, deleted_ids, cursor=cursor, set_cursor=set_cursor)

    async def execute(self, items: Sequence[OutboxItem]) -> None:
        await self.writer.execute(items)

    async def drain_outbox(self, connectors: Iterable[str] | None = None) -> None:
        await self.writer.drain_outbox(connectors)

    async def windows_read(self, names: Iterable[str]) -> set[str]:
        return await self.context.windows_read(names)

    def begin_window(self, source: str) -> None:
        self.reconciler.begin_window(source)

    async def window_read(self, source: str) -> None:
        await self.reconciler.window_read(source)

    async def sweep_missing(self, source: str, seen: set[str]) -> None:
        await self.reconciler.sweep_missing(source, seen)

    async def plan_resolution(self, conflict: ConflictRow, take: str, links: Sequence[Link],
                              row: AppointmentRow | None) -> Resolution:
        return await self.resolver.plan(conflict, take, links, row)

    async def take_version(self, plan: Resolution, links: Sequence[Link]) -> str | None:
        return await self.resolver.take(plan, links)
