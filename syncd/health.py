"""What "healthy" means, in one place: for ``syncd status``, ``/readyz`` and ``syncd_poll_lag_seconds``.

**Lag** of a connector is the time since its last successful read pass: the end of the last poll (or
``resync`` pass over it) that read every page without a vendor error. It is 0 right after such a
pass and grows until the next one; ``status`` shows it, ``/metrics`` exports it at scrape time as
``syncd_poll_lag_seconds``. A connector never read successfully has no lag (``null``).

**State** of a connector, worst finding first:

- ``failing``: its last :data:`FAILING_AFTER` read passes in a row failed, or the vendor refused its
  credentials (once is enough: a refused credential does not heal by itself). ``/readyz`` answers
  503 naming it while any connector is failing.
- ``degraded``: its last read pass failed (fewer times in a row than that); or, while a daemon
  runs, its lag is over :data:`LAG_FACTOR` times ``poll_interval`` (at least ``poll_interval`` +
  :data:`LAG_GRACE_S`); or an inbox delivery or queued write has waited over :data:`BACKLOG_AGE_S`;
  or it has dead letters or open conflicts.
- ``ok`` otherwise.

Each finding has a reason (with the error's URL, cause and config key) and the time since when it
holds. ``status`` is ok, and exits 0, only when every connector is ok.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "BACKLOG_AGE_S",
    "FAILING_AFTER",
    "HEARTBEAT_STALE_S",
    "LAG_FACTOR",
    "LAG_GRACE_S",
    "Finding",
    "assess",
    "failing_reason",
    "lag_limit",
    "lag_seconds",
    "parse_time",
    "state_of",
]

FAILING_AFTER = 3
"""Consecutive failed read passes after which a connector is failing (and ``/readyz`` answers 503)."""
LAG_FACTOR = 3.0
LAG_GRACE_S = 60.0
BACKLOG_AGE_S = 600.0
"""An inbox delivery or a queued write older than this is a backlog."""
HEARTBEAT_STALE_S = 30.0
"""A daemon whose last heartbeat is older than this is taken for gone (it beats every 5 s)."""

OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    """``degraded`` or ``failing``"""
    reason: str
    since: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.severity, "reason": self.reason, "since": _iso(self.since)}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time written by the ledger's health bookkeeping, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def lag_seconds(last_success_at: datetime | None, now: datetime) -> float | None:
    """The one definition of lag: seconds since the last successful read pass (None: never)."""
    if last_success_at is None:
        return None
    return max(0.0, (now - last_success_at).total_seconds())


def lag_limit(poll_interval: float) -> float | None:
    """The lag over which a polled connector is degraded; None for a webhooks-only connector."""
    if poll_interval <= 0:
        return None
    return max(LAG_FACTOR * poll_interval, poll_interval + LAG_GRACE_S)


def failing_reason(record: Mapping[str, Any] | None) -> str | None:
    """Why a connector is failing, from its read-outcome record (None: it is not)."""
    if not record:
        return None
    failures = int(record.get("failures") or 0)
    if failures <= 0:
        return None
    error = str(record.get("last_error") or "failed")
    if record.get("kind") == "auth":
        return error
    if failures >= FAILING_AFTER:
        return f"{failures} read passes in a row failed; last: {error}"
    return None


def assess(
    *,
    poll_interval: float,
    record: Mapping[str, Any] | None,
    last_success_at: datetime | None,
    now: datetime,
    daemon_since: datetime | None,
    dead_letters: int = 0,
    dead_letters_since: datetime | None = None,
    open_conflicts: int = 0,
    conflicts_since: datetime | None = None,
    inbox_pending: int = 0,
    outbox_pending: int = 0,
    backlog_since: datetime | None = None,
) -> list[Finding]:
    """Everything wrong with one connector, worst first (an empty list: ok). ``daemon_since`` is when
    the running daemon started (None: no daemon runs, so lag is not judged)."""
    findings: list[Finding] = []
    failing = failing_reason(record)
    since = parse_time(record.get("failing_since")) if record else None
    if failing is not None:
        findings.append(Finding(FAILING, failing, since))
    elif record and int(record.get("failures") or 0) > 0:
        source = record.get("source") or "read"
        findings.append(Finding(DEGRADED, f"the last {source} failed ({record.get('failures')} in a row, failing "
                                          f"after {FAILING_AFTER}): {record.get('last_error')}", since))
    limit = lag_limit(poll_interval)
    if daemon_since is not None and limit is not None:
        lag = lag_seconds(last_success_at, now)
        if lag is not None and lag > limit and last_success_at is not None:
            findings.append(Finding(DEGRADED, f"lag {lag:.0f}s is over {limit:.0f}s ({LAG_FACTOR:g} x poll_interval "
                                              f"{poll_interval:g}s)", last_success_at + timedelta(seconds=limit)))
        elif lag is None and (now - daemon_since).total_seconds() > limit:
            findings.append(Finding(DEGRADED, f"no successful read since the daemon started {_iso(daemon_since)}",
                                    daemon_since + timedelta(seconds=limit)))
    if backlog_since is not None and (now - backlog_since).total_seconds() > BACKLOG_AGE_S:
        findings.append(Finding(DEGRADED, f"backlog: {inbox_pending} webhook deliveries and {outbox_pending} "
                                          f"queued writes, the oldest waiting over {BACKLOG_AGE_S:.0f}s",
                                backlog_since))
    if dead_letters:
        findings.append(Finding(DEGRADED, f"{dead_letters} dead letter{'s' if dead_letters != 1 else ''} "
                                          "(`syncd deadletters list`)", dead_letters_since))
    if open_conflicts:
        findings.append(Finding(DEGRADED, f"{open_conflicts} open conflict{'s' if open_conflicts != 1 else ''} "
                                          "(`syncd conflicts list`)", conflicts_since))
    return findings


def state_of(findings: list[Finding]) -> str:
    """``ok``, ``degraded`` or ``failing``: the worst of ``findings``."""
    worst = OK
    for finding in findings:
        if _RANK[finding.severity] > _RANK[worst]:
            worst = finding.severity
    return worst
