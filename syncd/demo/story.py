"""What the scripted steps share: the story's state, its reads of the ledger and sandboxes, and how a
step waits for its outcome and reports it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from syncd.config import Config
from syncd.demo.data import STEP_TIMEOUT, DemoError
from syncd.demo.feed import Feed
from syncd.demo.roles import CrmGroup, SaludYaGroup
from syncd.demo.sandboxes import Sandboxes
from syncd.ledger.models import DeadLetter
from syncd.ledger.store import Ledger, Tx
from syncd.sandboxkit.seedgen import SeedDataset


@dataclass
class Outcome:
    number: int
    title: str
    ok: bool = False
    detail: str = "not run"


@dataclass(frozen=True)
class TypedByHand:
    both: tuple[int, ...]
    """data set indices of the holder's bookings also typed into the group's other systems"""
    ids: dict[str, list[str]]
    """connector -> the external ids of those hand-typed records, in the order of ``both``"""
    crm_only_id: str
    """the CRM record of a booking typed into the CRM alone"""


@dataclass
class Story:
    console: Console
    config: Config
    crm: CrmGroup
    sandboxes: Sandboxes
    feed: Feed
    dataset: SeedDataset
    crosswalk: dict[str, list[tuple[str, str, str]]]
    missing_patient: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """set when the daemon stops (Ctrl-C): pending checks give up at once"""
    typed: TypedByHand | None = None
    """the bookings staff typed by hand before go-live (the onboarding scenario)"""
    saludya: SaludYaGroup | None = None
    """the group where a booking born in SaludYa must reach a CRM (the last step), if configured"""
    saludya_dataset: SeedDataset | None = None
    """that group's seeded data set"""

    async def links(self, connector: str) -> dict[str, str]:
        """canonical id -> external id of ``connector`` (links in force)."""
        async with self._ledger() as tx:
            return {lk.canonical_id: lk.external_id for lk in await tx.links_of_connector(connector)}

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter in the demo's ledger."""
        async with self._ledger() as tx:
            return list(await tx.dead_letters())

    @contextlib.asynccontextmanager
    async def _ledger(self) -> AsyncIterator[Tx]:
        """A read-only transaction on the demo's ledger, closed afterwards."""
        ledger = await Ledger.open(self.config.ledger.url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                yield tx
        finally:
            await ledger.close()

    async def link_of(self, connector: str, external_id: str) -> str | None:
        """canonical id of ``connector``'s record ``external_id``."""
        for cid, ext in (await self.links(connector)).items():
            if ext == external_id:
                return cid
        return None

    def ref(self, connector: str, kind: str, key: str) -> str | None:
        return next((ext for k, cw_key, ext in self.crosswalk[connector] if k == kind and cw_key == key), None)

    def seeded_id(self, index: int) -> str:
        key = self.dataset.appointments[index].key
        found = self.ref(self.crm.ehr, "appointment", key)
        assert found is not None
        return found

    async def ids_of(self, index: int) -> tuple[str, dict[str, str]]:
        """canonical id of seeded appointment ``index`` and its external id in each member."""
        cid = await self.link_of(self.crm.ehr, self.seeded_id(index))
        if cid is None:
            raise DemoError(f"appointment {self.seeded_id(index)} was not linked by the first sync")
        ids = {m: (await self.links(m)).get(cid, "") for m in self.crm.group.members}
        return cid, ids

    async def until(
        self, check: Callable[[], Awaitable[str | None]], *, cid: str | None = None, timeout: float = STEP_TIMEOUT
    ) -> str | None:
        """Poll ``check`` (None = holds, else why not) until it holds or ``timeout`` passes; stop early,
        naming the ledger's reason, when the daemon dead-letters appointment ``cid`` or opens a conflict
        on it."""
        started = time.monotonic()
        deadline = started + timeout
        why: str | None = "not checked"
        while time.monotonic() < deadline:
            why = await check()
            if why is None:
                return None
            if self.stop.is_set():
                return f"interrupted ({why})"
            if cid is not None and any(
                e.canonical_id == cid and e.action in ("dead_letter", "conflict") and e.at >= started
                for e in self.feed.events
            ):
                return await self.failure_reason(cid) or why
            await asyncio.sleep(0.25)
        return why

    async def failure_reason(self, cid: str) -> str | None:
        """The ledger's reason for the dead letter or open conflict on ``cid`` (PHI-free by design)."""
        async with self._ledger() as tx:
            letters = [dl for dl in await tx.dead_letters() if dl.canonical_id == cid]
            conflicts = [c for c in await tx.conflicts() if c.canonical_id == cid]
        if letters:
            letter = letters[-1]
            return f"{letter.connector} dead-lettered it ({letter.kind}): {letter.reason}"
        if conflicts:
            conflict = conflicts[-1]
            return f"conflict opened on {conflict.field}: {conflict.reason}"
        return None

    def say(self, text: str) -> None:
        self.console.print(Text("  " + text, style="dim italic"))

    async def settle(self, outcome: Outcome, why: str | None, success: str) -> None:
        if why is None:
            await self.feed.settled()
        outcome.ok = why is None
        outcome.detail = success if why is None else why
        mark = Text("  ✓ " if outcome.ok else "  ✗ ", style="bold green" if outcome.ok else "bold red")
        mark.append(outcome.detail)
        self.console.print(mark)
