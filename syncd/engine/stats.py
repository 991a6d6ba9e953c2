"""Per-connector counters of one pass, in the shape of ``resync --json`` (docs/reference.md §4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COUNTERS = (
    "read", "changed", "created", "linked", "updated", "cancelled", "unchanged",
    "retried", "dead_lettered", "conflicts", "api_calls",
)


@dataclass
class ConnectorStats:
    read: int = 0
    """records read from this connector"""
    changed: int = 0
    """records read from it that carried a change"""
    created: int = 0
    linked: int = 0
    """records found already there (onboarding) and linked instead of created"""
    updated: int = 0
    cancelled: int = 0
    unchanged: int = 0
    retried: int = 0
    dead_lettered: int = 0
    conflicts: int = 0
    api_calls: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class PassStats:
    connectors: dict[str, ConnectorStats] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    """connector -> why work for it stopped (auth refused, unreachable, wait too long)."""
    requeued: dict[str, int] = field(default_factory=dict)
    """target -> writes that failed transiently (or were not sent because it stopped) and stay queued."""
    claimed_elsewhere: dict[str, int] = field(default_factory=dict)
    """holder -> queued writes this pass left alone: another live process (``run:<host>:<pid>``)
    holds their appointments' claims."""

    def of(self, name: str) -> ConnectorStats:
        if name not in self.connectors:
            self.connectors[name] = ConnectorStats()
        return self.connectors[name]

    def total(self, counter: str) -> int:
        return sum(getattr(s, counter) for s in self.connectors.values())

    def as_dict(self) -> dict[str, Any]:
        return {name: s.as_dict() for name, s in sorted(self.connectors.items())}
