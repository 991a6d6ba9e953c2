"""Retry, Discard and Resolve from the console: the very functions ``syncd deadletters retry|discard``
and ``syncd conflicts resolve`` call (:mod:`syncd.repairs`), on the daemon's own ledger and
connectors, each recorded in the ledger's audit trail as done from the console by one session.

An action runs as its own task: the page waits for it up to :data:`ANSWER_WITHIN_S` and otherwise says
it is still running (a vendor may ask syncd to wait); it goes on, and records its outcome, either way.
On shutdown the tasks still running get :data:`CLOSE_WITHIN_S` to finish; a retry cut short leaves its
write queued in the outbox, which the next start drains (nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from syncd import lineage
from syncd.config import Config
from syncd.errors import VendorError
from syncd.ledger.models import AuditEntry
from syncd.logging import get_logger, mask_contact
from syncd.repairs import discard_dead_letters, resolve_conflict, retry_dead_letters
from syncd.runtime import Runtime

__all__ = ["ANSWER_WITHIN_S", "ActionResult", "ConsoleActions"]

log = get_logger("syncd.console")

ANSWER_WITHIN_S = 20.0
CLOSE_WITHIN_S = 10.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    """False when the action could not be done (the letter failed again, the conflict stays open...)."""
    message: str
    running: bool = False
    """Still running when the page had to answer; its outcome goes to the audit trail."""


def _origin(session: str) -> str:
    """How a console action is recorded in the lineage (the session id, never the token)."""
    return f"from the console (session {session})"


class ConsoleActions:
    """The console's three actions, on the daemon's runtime."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.tasks: set[asyncio.Task[ActionResult]] = set()
        self.answer_within = ANSWER_WITHIN_S

    async def _record(self, canonical_id: str | None, connector: str | None, action: str, session: str,
                      what: str) -> None:
        detail = f"from the console (session {session}): {what}"
        async with self.runtime.ledger.transaction() as tx:
            await tx.add_audit([AuditEntry(canonical_id=canonical_id or "", connector=connector, action=action,
                                           fields=[], detail=detail[:255])])
        log.info("console_action", op=action, canonical_id=canonical_id, connector=connector)

    async def _answer(self, work: Awaitable[ActionResult]) -> ActionResult:
        task: asyncio.Task[ActionResult] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.answer_within)
        except TimeoutError:
            return ActionResult(True, "still running (a vendor is slow or asked to wait); its outcome will be "
                                      "in the appointment's history", running=True)

    def _finished(self, task: asyncio.Task[ActionResult]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the page has answered already (or gets the exception itself): never an unretrieved error
            log.warning("console_action_failed", error_type=type(task.exception()).__name__)

    # -- dead letters --------------------------------------------------------------------------
    async def retry(self, letter_id: int, session: str) -> ActionResult:
        return await self._answer(self._retry(letter_id, session))

    async def _retry(self, letter_id: int, session: str) -> ActionResult:
        ledger = self.runtime.ledger
        async with ledger.transaction(readonly=True) as tx:
            letters = await tx.dead_letters(ids=[letter_id])
        if not letters:
            return ActionResult(False, f"dead letter {letter_id} is unknown or already resolved")
        letter = letters[0]
        _code, results = await retry_dead_letters(self.config, [letter_id], runtime=self.runtime,
                                                  origin=_origin(session))
        outcome = results[0]["result"] if results else "unknown or already resolved"
        canonical_id = letter.canonical_id
        if canonical_id is None and letter.external_id:
            async with ledger.transaction(readonly=True) as tx:
                link = (await tx.links_for(letter.connector, [letter.external_id])).get(letter.external_id)
            canonical_id = link.canonical_id if link is not None else None
        await self._record(canonical_id, letter.connector, "retry", session,
                           f"dead letter {letter_id} ({letter.kind}) retried: {outcome}")
        return ActionResult(outcome == "done", f"dead letter {letter_id}: {outcome}")

    async def discard(self, letter_id: int, session: str) -> ActionResult:
        return await self._answer(self._discard(letter_id, session))

    async def _discard(self, letter_id: int, session: str) -> ActionResult:
        ledger = self.runtime.ledger
        async with ledger.transaction(readonly=True) as tx:
            letters = await tx.dead_letters(ids=[letter_id])
        changed = await discard_dead_letters(self.config, [letter_id], ledger=ledger, origin=_origin(session))
        if not changed or not letters:
            return ActionResult(False, f"dead letter {letter_id} is unknown or already resolved")
        letter = letters[0]
        await self._record(letter.canonical_id, letter.connector, "discard", session,
                           f"dead letter {letter_id} ({letter.kind}) discarded")
        return ActionResult(True, f"dead letter {letter_id} discarded")

    # -- conflicts -----------------------------------------------------------------------------
    async def resolve(self, conflict_id: int, take: str, session: str) -> ActionResult:
        return await self._answer(self._resolve(conflict_id, take, session))

    async def _resolve(self, conflict_id: int, take: str, session: str) -> ActionResult:
        async with self.runtime.ledger.transaction(readonly=True) as tx:
            found = await tx.conflicts(ids=[conflict_id])
        try:
            result = await resolve_conflict(self.config, conflict_id, take, runtime=self.runtime,
                                            origin=_origin(session))
            code, message = result.exit_code, result.message
            if code != 0 and not message.startswith(f"conflict {conflict_id}"):
                message = f"conflict {conflict_id} stays open: {message}"
        except VendorError as exc:  # the chosen system could not be read now: nothing changed
            code, message = 1, f"conflict {conflict_id} stays open: {take} could not be read ({exc.describe()})"
        if found and code != 0:
            # done, it is in the lineage already (resolve_conflict records it); refused, it is recorded here
            async with self.runtime.ledger.transaction() as tx:
                await tx.add_lineage([lineage.action(
                    found[0].canonical_id, "resolve", take, "refused",
                    f"conflict {conflict_id}: taking {take}'s version {_origin(session)} was refused; "
                    "it stays open")])
        if found:
            conflict = found[0]
            await self._record(conflict.canonical_id, take, "resolve", session,
                               f"conflict {conflict_id} on {conflict.field}: took {take}: "
                               f"{'done' if code == 0 else message}")
        return ActionResult(code == 0, mask_contact(message))

    async def close(self, timeout: float = CLOSE_WITHIN_S) -> None:
        """Let running actions finish (bounded), then cancel what is left."""
        pending = [t for t in self.tasks if not t.done()]
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if still:
            log.warning("console_actions_abandoned", count=len(still))
