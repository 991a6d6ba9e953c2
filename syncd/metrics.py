"""Prometheus metrics (CONTRACT section 5). One registry for the process; names are contract."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

records_read = Counter(
    "syncd_records_read", "Records read from vendors", ["connector"], registry=REGISTRY
)
writes = Counter(
    "syncd_writes", "Writes sent to vendors by outcome", ["connector", "op", "outcome"], registry=REGISTRY
)
conflicts = Counter("syncd_conflicts", "Conflicts recorded by the merge", registry=REGISTRY)
dead_letters = Gauge("syncd_dead_letters", "Unresolved dead letters in the ledger", registry=REGISTRY)
webhook_events = Counter(
    "syncd_webhook_events", "Webhook deliveries by outcome", ["connector", "outcome"], registry=REGISTRY
)
poll_lag = Gauge("syncd_poll_lag_seconds", "Seconds since the last successful poll", ["connector"], registry=REGISTRY)
vendor_request_seconds = Histogram(
    "syncd_vendor_request_seconds",
    "Vendor HTTP request latency",
    ["connector", "op"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
