"""Prometheus metrics served by ``syncd run`` at ``GET /metrics`` (docs/reference.md §5).

One registry for the process. The names are part of the external contract; every label value is a
connector name, an operation, an outcome or a kind from a small fixed set, never an appointment,
patient or external id.

Three sources feed it:

* counters and histograms updated where things happen (vendor requests in :mod:`syncd.http`, polls
  in :mod:`syncd.daemon`, reads and writes in the engine);
* gauges read from the ledger by :func:`refresh_from_ledger`, which the daemon runs on a timer
  (:data:`LEDGER_REFRESH_SECONDS`), so a scrape never queries the ledger: backlog (inbox, outbox),
  dead letters, open conflicts, each connector's last successful read, and the outcome of the last
  ``syncd resync``;
* ``syncd resync`` runs in its own process, so it leaves its outcome in the ledger
  (:func:`record_resync`, connector state key :data:`RESYNC_STATE_KEY`), where the daemon's
  ``/metrics`` and ``syncd status`` find it.

Process metrics (``process_*``: CPU, memory, open file descriptors against the limit, start time)
and ``python_info`` / ``python_gc_*`` come from prometheus_client's own collectors.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from syncd.errors import VendorError
from syncd.logging import get_logger

if TYPE_CHECKING:
    from syncd.ledger.store import Ledger

__all__ = [
    "LEDGER_REFRESH_SECONDS",
    "REGISTRY",
    "RESYNC_COUNTERS",
    "RESYNC_STATE_KEY",
    "mark_success",
    "observe_request",
    "observe_sync_latency",
    "record_resync",
    "refresh_from_ledger",
    "request_outcome",
]

log = get_logger("syncd.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

LEDGER_REFRESH_SECONDS = 10.0
"""How often ``syncd run`` refreshes the gauges read from the ledger (a typical scrape interval)."""
RESYNC_STATE_KEY = "status.last_resync"
"""Connector-state key of the last ``resync``'s outcome (read by ``syncd status`` and ``/metrics``)."""
"""Connector state key (ledger table ``connector_state``) holding, per connector, the JSON outcome of
the last ``syncd resync`` that was not a dry run (see :func:`record_resync`)."""
RESYNC_COUNTERS = (
    "read", "changed", "created", "updated", "cancelled", "unchanged",
    "retried", "dead_lettered", "conflicts", "api_calls",
)
"""The per-connector counts of a pass (the ``resync --json`` document), exported by counter name."""


def _version() -> str:
    try:
        return metadata.version("syncd")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


build_info = Info("syncd_build", "The running syncd version (value always 1)", registry=REGISTRY)
build_info.info({"version": _version(), "python": platform.python_version()})

# -- the contract's metrics ---------------------------------------------------------------------
records_read = Counter(
    "syncd_records_read", "Records read from vendors", ["connector"], registry=REGISTRY
)
writes = Counter(
    "syncd_writes", "Writes sent to vendors by outcome", ["connector", "op", "outcome"], registry=REGISTRY
)
conflicts = Counter("syncd_conflicts", "Conflicts recorded by the merge", registry=REGISTRY)
http_connections_refused = Counter(
    "syncd_http_connections_refused", "Connections answered 503 and closed: server.max_connections reached",
    registry=REGISTRY,
)
http_connections_timed_out = Counter(
    "syncd_http_connections_timed_out", "Connections closed: request headers not sent within server.header_timeout",
    registry=REGISTRY,
)
dead_letters = Gauge("syncd_dead_letters", "Unresolved dead letters in the ledger", registry=REGISTRY)
webhook_events = Counter(
    "syncd_webhook_events", "Webhook deliveries by outcome", ["connector", "outcome"], registry=REGISTRY
)
poll_lag = Gauge(
    "syncd_poll_lag_seconds",
    "Seconds since the connector's last successful read (poll or resync), computed at scrape time",
    ["connector"],
    registry=REGISTRY,
)
vendor_request_seconds = Histogram(
    "syncd_vendor_request_seconds",
    "Vendor HTTP request latency, by outcome: ok, or the error kind (auth, rate_limited, retriable, "
    "conflict, rejected, ...), timeout or network",
    ["connector", "op", "outcome"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
sync_latency = Histogram(
    "syncd_sync_latency_seconds",
    "From the moment syncd learned of a change (the write was planned, right after the poll read or the "
    "stored webhook was processed) to the target's write confirmed, by target",
    ["connector"],
    registry=REGISTRY,
    # sub-second buckets resolve the webhook path (a p99 under 100 ms is a target, docs/development.md)
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600,
             24 * 3600),
)

# -- for alerting -------------------------------------------------------------------------------
inbox_pending = Gauge(
    "syncd_inbox_pending", "Stored webhook deliveries not processed yet", ["connector"], registry=REGISTRY
)
outbox_pending = Gauge(
    "syncd_outbox_pending", "Planned writes queued for the connector (pending or being sent)", ["connector"],
    registry=REGISTRY,
)
open_conflicts = Gauge("syncd_open_conflicts", "Open conflicts in the ledger (settle with `syncd conflicts`)",
                       registry=REGISTRY)
poll_failures = Counter(
    "syncd_poll_failures",
    "Polls (and window reconciliations) that failed, by error kind: auth, rate_limited, retriable, "
    "rejected, ... or internal",
    ["connector", "kind"],
    registry=REGISTRY,
)
auth_failures = Counter(
    "syncd_auth_failures",
    "Credentials refused by the vendor after the one refresh allowed: kind=token (the token endpoint "
    "refused the client or refresh token) or kind=request (an API request refused with valid-looking credentials)",
    ["connector", "kind"],
    registry=REGISTRY,
)
last_success = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the connector's last successful read (poll, reconciliation or resync)",
    ["connector"],
    registry=REGISTRY,
)
poll_interval = Gauge(
    "syncd_poll_interval_seconds",
    "The connector's configured poll_interval (0 = never polled: webhooks and resync only); compare with the lag",
    ["connector"],
    registry=REGISTRY,
)
ledger_refreshed = Gauge(
    "syncd_ledger_gauges_refreshed_timestamp_seconds",
    "Unix time the gauges read from the ledger were last refreshed (stale: the refresh is failing)",
    registry=REGISTRY,
)
resync_last_timestamp = Gauge(
    "syncd_resync_last_timestamp_seconds",
    "Unix time the last `syncd resync` (not a dry run) finished", ["connector"], registry=REGISTRY,
)
resync_last_exit_code = Gauge(
    "syncd_resync_last_exit_code",
    "Exit code of the last `syncd resync` (0 done, 1 dead letters or conflicts left, 3 could not run)",
    ["connector"],
    registry=REGISTRY,
)
resync_last_records = Gauge(
    "syncd_resync_last_records",
    "Counts of the last `syncd resync` for this connector (read from it; the rest as a write target)",
    ["connector", "counter"],
    registry=REGISTRY,
)

# -- helpers --------------------------------------------------------------------------------------


def request_outcome(error: BaseException | None) -> str:
    """The ``outcome`` label of a vendor request: ``ok``, the error's kind, ``timeout`` or ``network``."""
    if error is None:
        return "ok"
    if isinstance(error, VendorError):
        return error.kind
    if isinstance(error, TimeoutError):
        return "timeout"
    return "network"


def observe_request(connector: str, op: str, started: float, error: BaseException | None = None) -> None:
    """Record one vendor request that started at ``started`` (``time.perf_counter()``)."""
    vendor_request_seconds.labels(connector, op, request_outcome(error)).observe(time.perf_counter() - started)


def observe_sync_latency(target: str, learned_at: datetime | None, sent: bool = True) -> None:
    """A write to ``target`` was confirmed; the change behind it was learned at ``learned_at``."""
    if not sent or learned_at is None:
        return
    if learned_at.tzinfo is None:
        learned_at = learned_at.replace(tzinfo=UTC)
    sync_latency.labels(target).observe(max(0.0, (datetime.now(UTC) - learned_at).total_seconds()))


_last_success: dict[str, float] = {}


def mark_success(connector: str, at: float | None = None) -> None:
    """``connector`` was read successfully at ``at`` (Unix time; default now). Keeps the newest."""
    value = time.time() if at is None else at
    known = _last_success.get(connector)
    if known is not None and known >= value:
        return
    _last_success[connector] = value
    last_success.labels(connector).set(value)
    if known is None:
        # the lag is computed when scraped: never a value as old as the last refresh
        poll_lag.labels(connector).set_function(lambda: max(0.0, time.time() - _last_success[connector]))


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


async def refresh_from_ledger(ledger: Ledger, connectors: Sequence[str]) -> None:
    """Set the gauges read from the ledger (one read-only transaction): backlog, dead letters, open
    conflicts, last successful reads and the last ``resync``'s outcome."""
    names = list(connectors)
    async with ledger.transaction(readonly=True) as tx:
        summaries = await tx.connector_summaries(names)
        totals = await tx.totals()
        resyncs = {name: (await tx.state_get(name, [RESYNC_STATE_KEY])).get(RESYNC_STATE_KEY) for name in names}
    for name in names:
        summary = summaries[name]
        inbox_pending.labels(name).set(summary.inbox_pending)
        outbox_pending.labels(name).set(summary.outbox_pending)
        if summary.last_success_at is not None:
            mark_success(name, _timestamp(summary.last_success_at))
        outcome = _loads(resyncs[name])
        if outcome is not None:
            _export_resync(name, outcome)
    dead_letters.set(totals.get("dead_letters", 0))
    open_conflicts.set(totals.get("open_conflicts", 0))
    ledger_refreshed.set(time.time())


def _loads(value: str | None) -> Mapping[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, Mapping) else None


def _export_resync(name: str, outcome: Mapping[str, Any]) -> None:
    try:
        finished = datetime.fromisoformat(str(outcome["finished_at"]).replace("Z", "+00:00"))
        exit_code = int(outcome["exit_code"])
    except (KeyError, TypeError, ValueError):
        return  # written by another version: not exported rather than guessed
    resync_last_timestamp.labels(name).set(_timestamp(finished))
    resync_last_exit_code.labels(name).set(exit_code)
    counts = outcome.get("counts")
    if isinstance(counts, Mapping):
        for counter in RESYNC_COUNTERS:
            value = counts.get(counter)
            if isinstance(value, int | float) and not isinstance(value, bool):
                resync_last_records.labels(name, counter).set(value)


def resync_outcome(exit_code: int, document: Mapping[str, Any], *, finished_at: datetime | None = None
                   ) -> dict[str, str]:
    """The :data:`RESYNC_STATE_KEY` value (JSON) per connector of a ``resync --json`` document::

        {"finished_at": "2026-12-07T10:02:11Z", "at": (the same), "ok": true, "exit_code": 0, "duration_s": 1.42,
         "counts": {"read": 120, "created": 2, ...}, "stopped": null}

    ``counts`` are the connector's counts in that pass (``read`` from it, the rest as a write
    target); ``stopped`` is why work for it stopped (authentication refused, unreachable, a wait too
    long), else null. ``exit_code`` is the whole pass's.
    """
    at = (finished_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stopped = document.get("stopped") or {}
    out: dict[str, str] = {}
    for name, counts in (document.get("connectors") or {}).items():
        out[name] = json.dumps(
            {
                "finished_at": at,
                "at": at,
                "ok": stopped.get(name) is None,
                "exit_code": int(exit_code),
                "duration_s": document.get("duration_s"),
                "counts": {k: counts.get(k, 0) for k in RESYNC_COUNTERS},
                "stopped": stopped.get(name),
            },
            sort_keys=True,
        )
    return out


async def record_resync(ledger: Ledger, exit_code: int, document: Mapping[str, Any]) -> None:
    """Store a finished ``resync``'s outcome in the ledger for ``/metrics`` and ``syncd status`` (one
    transaction). A dry run stores nothing: it writes nothing anywhere, the ledger included.

    The pass itself is over and its exit code stands: a ledger that fails just now is logged
    (``resync_outcome_not_recorded``), not turned into a failure of the pass."""
    if document.get("dry_run"):
        return
    values = resync_outcome(exit_code, document)
    try:
        async with ledger.transaction() as tx:
            for name, value in values.items():
                await tx.state_set(name, {RESYNC_STATE_KEY: value})
    except Exception as exc:
        log.warning("resync_outcome_not_recorded", error_type=type(exc).__name__)
