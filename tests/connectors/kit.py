"""The per-vendor kit the shared connector contract suite (test_contract.py) runs against.

Each vendor provides ``tests/connectors/kits/<vendor>.py`` with a module-level ``KIT`` implementing
:class:`ContractKit`. The kit knows the vendor's wire shapes (to seed and edit records in its sandbox the
way another user would); the suite itself knows nothing about any vendor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import aiohttp

from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox


async def control(sb: RunningSandbox, method: str, path: str, body: Any = None) -> Any:
    """Call a sandbox control route (``/_sandbox/...``); any answer but 2xx fails the test."""
    async with aiohttp.ClientSession() as s, s.request(method, sb.url + path, json=body) as r:
        text = await r.text()
        assert r.status < 300, text
        return await r.json() if text.strip() else None


async def request_counts(sb: RunningSandbox) -> dict[tuple[str, str], int]:
    """The sandbox's request counters: (method, route template) -> count."""
    rows = (await control(sb, "GET", "/_sandbox/requests"))["requests"]
    return {(r["method"], r["route"]): r["count"] for r in rows}


class KitDefaults:
    """Scenario pieces most vendors share; a kit overrides what its vendor does differently."""

    cancel_reason = "Cancelled by patient via EHR"

    def update_of(self, current: Appointment) -> tuple[Appointment, frozenset[str]]:
        """Move the appointment an hour later and change its notes."""
        assert current.start is not None and current.end is not None
        desired = current.with_changes(
            start=current.start + timedelta(hours=1),
            end=current.end + timedelta(hours=1),
            notes="moved by the contract suite",
        )
        return desired, frozenset({"start", "end", "notes"})

    def cancel_of(self, current: Appointment) -> Appointment:
        return current.with_changes(status=Status.CANCELLED, cancellation_reason=self.cancel_reason)

    async def delete(self, sb: RunningSandbox, external_id: str) -> None:
        await control(sb, "POST", "/_sandbox/records", {"delete": [external_id]})


@dataclass(frozen=True)
class RuleCase:
    """One vendor rule violation: build the desired appointment from a seeded record's current one,
    write it with ``kind`` and expect a :class:`syncd.errors.Rejected` whose text contains ``expect``."""

    id: str
    kind: WriteKind
    build: Callable[[VendorRecord], Appointment]
    expect: str
    prepare: Callable[[RunningSandbox, VendorRecord], Any] | None = None
    """Optional (async) set-up before the write, e.g. move the record to a locked state."""


class ContractKit(Protocol):
    vendor: str
    three_pages: int
    """How many records to seed so that ``changes(None)`` yields at least three pages."""
    create_route: tuple[str, str]
    """(method, path glob) of the create call, for the lost-response fault."""
    read_route: tuple[str, str]
    """(method, path glob) of a call ``read()`` makes, for the rate-limit fault."""
    has_refresh: bool
    """The vendor has an OAuth refresh flow (expired token test)."""
    token_route: str | None
    """Route template of the token endpoint as /_sandbox/requests reports it."""

    def sandbox_options(self) -> dict[str, Any]: ...

    def connector_config(self, base_url: str) -> ConnectorConfig: ...

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        """Seed ``n`` appointments (plus reference data) directly in the sandbox; return their ids."""
        ...

    def new_appointment(self) -> Appointment:
        """A valid appointment to create, referencing seeded reference data by vendor ids."""
        ...

    def update_of(self, current: Appointment) -> tuple[Appointment, frozenset[str]]:
        """A valid in-place update of ``current`` and the fields it changes."""
        ...

    def cancel_of(self, current: Appointment) -> Appointment: ...

    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        """Another user edits the record (its version changes)."""
        ...

    async def delete(self, sb: RunningSandbox, external_id: str) -> None:
        """Delete the record the way the vendor's users can (or via the sandbox control API)."""
        ...

    def rule_cases(self) -> list[RuleCase]: ...

    async def expire_token(self, sb: RunningSandbox) -> None:
        """Make the current access token expire (OAuth vendors only)."""
        ...

    async def revoke(self, sb: RunningSandbox) -> None:
        """Revoke the credentials for good (refresh must fail too where there is one)."""
        ...
