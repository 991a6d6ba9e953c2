"""Write outcomes committed in groups: one ledger transaction for every outcome that is ready.

The writer sends many writes at once (bounded by the engine's write slots). Each finished write hands
its outcome, as ledger rows, to :meth:`GroupCommit.commit` and waits there until the transaction
holding it has committed; only then is the write done (its decision reported, its claim gone). Whatever
arrives while a transaction is being written joins the next one, so under load one transaction carries
many outcomes (bulk statements: one upsert of links, one outbox update per state, one audit insert, one
lineage insert, one claim release), and a lone write still commits at once.

Crash safety is that of one transaction per outcome: an outcome not committed leaves its outbox row
``sending``, and the writer's next attempt first searches the target by the idempotency reference
(``Engine._settle_unknown_create``). When a group's transaction fails, each of its outcomes is
committed alone, so one bad row cannot take the others with it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from syncd.ledger.models import AuditEntry, LineageEntry, Link
from syncd.ledger.store import Ledger, Tx

__all__ = ["GroupCommit", "OutcomeRows"]


@dataclass
class OutcomeRows:
    """What one finished write stores."""

    canonical_id: str
    outbox_id: int | None
    state: str = "done"
    error: str | None = None
    links: list[Link] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    lineage: list[LineageEntry] = field(default_factory=list)
    prepare: Callable[[Tx, OutcomeRows], Awaitable[None]] | None = None
    """Run first inside the group's transaction (reads the rows depend on, e.g. the crosswalk)."""


class GroupCommit:
    """Commits :class:`OutcomeRows` in groups (see the module docstring); one per engine."""

    def __init__(self, ledger: Ledger, holder: str) -> None:
        self.ledger = ledger
        self.holder = holder
        self._queue: list[tuple[OutcomeRows, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions written so far (for tests and the profile)."""

    async def commit(self, rows: OutcomeRows) -> None:
        """Store ``rows``; returns once they are committed (raises what their transaction raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # the commit goes on when the waiter is cancelled: the outcome is stored all the same
        await asyncio.shield(future)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # outcomes finished in the same turn of the loop join this group
        while self._queue:
            group, self._queue = self._queue, []
            try:
                await self._write([rows for rows, _ in group])
            except Exception:
                for rows, future in group:
                    try:
                        await self._write([rows])
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(None)
            except BaseException as exc:
                for _, future in [*group, *self._queue]:
                    if not future.done():
                        future.set_exception(exc)
                self._queue = []
                raise
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)

    async def _write(self, group: list[OutcomeRows]) -> None:
        async with self.ledger.transaction() as tx:
            # before anything is read: a merge of these appointments on another replica waits for this
            # commit, or this one for the merge's, so neither misses the other (Tx.lock_appointments)
            await tx.lock_appointments(rows.canonical_id for rows in group)
            for rows in group:
                if rows.prepare is not None:
                    await rows.prepare(tx, rows)
            links: dict[tuple[str, str], Link] = {}
            for rows in group:
                for link in rows.links:
                    links[(link.connector, link.external_id)] = link  # one row per key: the last wins
            if links:
                await tx.upsert_links(list(links.values()))
            by_state: dict[tuple[str, str | None], list[int]] = defaultdict(list)
            for rows in group:
                if rows.outbox_id is not None:
                    by_state[(rows.state, rows.error)].append(rows.outbox_id)
            for (state, error), ids in by_state.items():
                await tx.outbox_update(ids, state=state, error=error)
            audit = [entry for rows in group for entry in rows.audit]
            if audit:
                await tx.add_audit(audit)
            history = [entry for rows in group for entry in rows.lineage]
            if history:
                await tx.add_lineage(history)
            await tx.release([rows.canonical_id for rows in group], self.holder)
        self.transactions += 1
