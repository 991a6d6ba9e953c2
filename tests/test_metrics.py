"""Metrics for alerting (docs/reference.md §5), on a real ledger (SQLite and PostgreSQL).

* the gauges read from the ledger take exactly what the ledger holds, in one read-only pass;
* ``resync`` leaves its outcome in the ledger (state key ``status.last_resync``), a dry run nothing;
* a real ``syncd run`` over the Zoho and Dentally sandboxes, with Dentally's token rotated away,
  exports on ``/metrics``: backlog (inbox, outbox), poll and auth failures by connector and kind,
  the last success per connector, the ``outcome`` label of the request histogram, the failed
  resync's exit code and counts, ``syncd_build_info`` and the process metrics; no label carries an
  appointment or patient id. Its log shows APScheduler at warning only, jobs named by connector,
  and times unmasked.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from connectors.dentally.webhook import sign
from syncd import metrics
from syncd.ledger.models import OutboxItem
from syncd.ledger.store import Ledger
from tests.daemon_support import DaemonProcess, cli, eventually, free_port, with_server
from tests.scenarios.harness import make_world

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def _registry_value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


# -- gauges from the ledger ---------------------------------------------------------------------------


async def test_ledger_gauges_take_what_the_ledger_holds(ledger: Ledger) -> None:
    a, b = f"ga{uuid.uuid4().hex[:8]}", f"gb{uuid.uuid4().hex[:8]}"
    success = datetime(2026, 12, 7, 10, 2, 11, tzinfo=UTC)
    async with ledger.transaction() as tx:
        await tx.inbox_put_many([(a, "k1", b"{}"), (a, "k2", b"{}"), (b, "k3", b"{}")])
        done = (await tx.inbox_pending(connector=b))[0]
        await tx.inbox_mark_done([done.id] if done.id is not None else [])
        await tx.outbox_add([
            OutboxItem(idempotency_key=f"w{i}", canonical_id=f"apt_{i}", connector=b, op="update", payload={})
            for i in range(3)
        ])
        await tx.add_dead_letter(a, "read", "missing crosswalk: patient P-1 for " + b, external_id="x1")
        await tx.add_dead_letter(b, "write", "rejected", external_id="x2")
        await tx.open_conflict("apt_1", "status", {a: "booked", b: "cancelled"}, "equal times")
        await tx.set_cursor(a, "cursor-1", success_at=success)
    await metrics.refresh_from_ledger(ledger, [a, b])
    assert _registry_value("syncd_inbox_pending", connector=a) == 2
    assert _registry_value("syncd_inbox_pending", connector=b) == 0
    assert _registry_value("syncd_outbox_pending", connector=a) == 0
    assert _registry_value("syncd_outbox_pending", connector=b) == 3
    assert _registry_value("syncd_dead_letters") == 2
    assert _registry_value("syncd_open_conflicts") == 1
    assert _registry_value("syncd_last_success_timestamp_seconds", connector=a) == success.timestamp()
    assert _registry_value("syncd_last_success_timestamp_seconds", connector=b) is None  # never succeeded
    lag = _registry_value("syncd_poll_lag_seconds", connector=a)
    assert lag is not None and abs(lag - (time.time() - success.timestamp())) < 5  # computed when read
    refreshed = _registry_value("syncd_ledger_gauges_refreshed_timestamp_seconds")
    assert refreshed is not None and abs(refreshed - time.time()) < 5

    async with ledger.transaction() as tx:
        await tx.outbox_update([i.id for i in await tx.outbox_pending(limit=10) if i.id is not None], state="done")
        await tx.resolve_dead_letters([dl.id for dl in await tx.dead_letters() if dl.id is not None])
    await metrics.refresh_from_ledger(ledger, [a, b])
    assert _registry_value("syncd_outbox_pending", connector=b) == 0
    assert _registry_value("syncd_dead_letters") == 0


def _document(a: str, b: str, *, dry_run: bool = False) -> dict[str, object]:
    counts = {c: 0 for c in metrics.RESYNC_COUNTERS}
    return {"ok": False, "dry_run": dry_run, "duration_s": 1.5,
            "connectors": {a: {**counts, "read": 7, "unchanged": 7}, b: {**counts, "created": 2, "api_calls": 4}},
            "dead_letters": 0, "open_conflicts": 0, "stopped": {b: "authentication refused (HTTP 401)"}}


async def test_resync_outcome_is_stored_for_metrics_and_status_and_a_dry_run_stores_nothing(ledger: Ledger) -> None:
    a, b = f"ra{uuid.uuid4().hex[:8]}", f"rb{uuid.uuid4().hex[:8]}"
    await metrics.record_resync(ledger, 3, _document(a, b, dry_run=True))
    async with ledger.transaction(readonly=True) as tx:
        assert await tx.state_get(a, [metrics.RESYNC_STATE_KEY]) == {}
    before = datetime.now(UTC).replace(microsecond=0)
    await metrics.record_resync(ledger, 3, _document(a, b))
    async with ledger.transaction(readonly=True) as tx:
        stored = {n: json.loads((await tx.state_get(n, [metrics.RESYNC_STATE_KEY]))[metrics.RESYNC_STATE_KEY])
                  for n in (a, b)}
    assert stored[a]["exit_code"] == stored[b]["exit_code"] == 3
    assert stored[a]["counts"]["read"] == 7 and stored[b]["counts"]["created"] == 2
    assert stored[a]["stopped"] is None and stored[b]["stopped"] == "authentication refused (HTTP 401)"
    finished = datetime.strptime(stored[a]["finished_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= finished <= datetime.now(UTC) + timedelta(seconds=1)
    await metrics.refresh_from_ledger(ledger, [a, b])
    assert _registry_value("syncd_resync_last_exit_code", connector=b) == 3
    assert _registry_value("syncd_resync_last_records", connector=a, counter="read") == 7
    assert _registry_value("syncd_resync_last_records", connector=b, counter="api_calls") == 4
    assert _registry_value("syncd_resync_last_timestamp_seconds", connector=a) == finished.timestamp()


def test_request_outcome_labels_are_a_small_fixed_set() -> None:
    from syncd.errors import AuthFailure, RateLimited, Rejected, Retriable, UnknownOutcome

    assert metrics.request_outcome(None) == "ok"
    assert metrics.request_outcome(AuthFailure("x")) == "auth"
    assert metrics.request_outcome(RateLimited("x", wait=3)) == "rate_limited"
    assert metrics.request_outcome(Rejected("x")) == "rejected"
    assert metrics.request_outcome(Retriable("x")) == "retriable"
    assert metrics.request_outcome(UnknownOutcome("x")) == "unknown_outcome"
    assert metrics.request_outcome(TimeoutError()) == "timeout"
    assert metrics.request_outcome(aiohttp.ClientConnectionError()) == "network"


# -- the daemon: /metrics for alerting, and its log ----------------------------------------------------


def _dentally_webhook(record_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": f"evt-{uuid.uuid4().hex[:8]}", "event": "appointment.updated",
                       "data": {"id": record_id}}).encode()
    stamp = str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-Syncd-Timestamp": stamp,
                  "X-Syncd-Signature": "v1=" + sign("sandbox-webhook-secret", stamp, body)}


async def _scrape(daemon: DaemonProcess) -> Samples:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(daemon.url + "/metrics") as r:
            return parse(await r.text()) if r.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError):
        return {}


def _alerting_state_reached(s: Samples) -> bool:
    return bool(
        (value(s, "syncd_outbox_pending", connector="dentally") or 0) >= 1
        and (value(s, "syncd_inbox_pending", connector="dentally") or 0) >= 1
        and (value(s, "syncd_poll_failures_total", connector="dentally", kind="auth") or 0) >= 1
        and (value(s, "syncd_auth_failures_total", connector="dentally", kind="request") or 0) >= 1
        and value(s, "syncd_last_success_timestamp_seconds", connector="zoho") is not None
        and value(s, "syncd_resync_last_exit_code", connector="dentally") is not None
    )


async def test_daemon_exports_what_alerts_need_and_logs_quietly(tmp_path: Path, ledger_url: str) -> None:
    world = await make_world(tmp_path, ledger_url, {"zoho": "zoho_crm", "dentally": "dentally"}, n_appointments=2,
                             connector_extra={"zoho": {"poll_interval": 1}, "dentally": {"poll_interval": 1}})
    daemon: DaemonProcess | None = None
    try:
        await world.seed("zoho")
        await world.seed("dentally", appointments=False)
        await world.import_crosswalk()
        latency_before = _registry_value("syncd_sync_latency_seconds_count", connector="dentally") or 0
        first = await world.resync_within(30)
        assert first.exit_code == 0 and first.document["connectors"]["dentally"]["created"] == 2, first.document
        # the pass ran in this process: each confirmed create was timed from when it was planned
        assert _registry_value("syncd_sync_latency_seconds_count", connector="dentally") == latency_before + 2
        dentally_id = str((await world.records("dentally"))[0]["id"])
        zoho_id = str((await world.records("zoho"))[0]["id"])

        # Dentally's token is rotated on the vendor side: the config still holds the old one
        text = world.config_path.read_text(encoding="utf-8")
        text = text.replace('access_token = "sandbox-token"', 'access_token = "rotated-away"')
        world.config_path.write_text(text.replace('level = "warning"', 'level = "info"'), encoding="utf-8")
        code, out, err = await cli(world.config_path, "resync", "--json", timeout=60)
        assert code == 3, (out, err[-2000:])
        assert "dentally" in json.loads(out)["stopped"]

        with_server(world, free_port())
        # the first poll of Zoho hangs for 2.5 s: the next runs of poll:zoho are skipped meanwhile
        await world.fault("zoho", "GET", "*", {"type": "delay", "seconds": 2.5})
        daemon = DaemonProcess(world.config_path, world.config.server.port, tmp_path)
        daemon.start()
        # Dentally's credentials are refused, so /readyz answers 503 naming it: wait for the process
        await daemon.ready(path="/healthz")
        await world.edit("zoho", zoho_id, {"Additional_Information": "moved to the afternoon"})
        body, headers = _dentally_webhook(dentally_id)
        assert (await daemon.post_webhook("dentally", body, headers))[0] == 202

        samples = await eventually(lambda: _scrape(daemon), _alerting_state_reached, timeout=45,
                                   what="the alerting metrics of a failing Dentally", interval=1.0)
        ready_status, ready_body = await daemon.get("/readyz")
        assert ready_status == 503 and "dentally" in json.dumps(ready_body), (ready_status, ready_body)
    finally:
        if daemon is not None:
            await daemon.stop()
        await world.stop()

    # backlog, failures by connector and kind, last success, the failed resync
    assert value(samples, "syncd_poll_failures_total", connector="zoho", kind="auth") in (None, 0)
    assert value(samples, "syncd_auth_failures_total", connector="zoho", kind="request") in (None, 0)
    zoho_success = value(samples, "syncd_last_success_timestamp_seconds", connector="zoho")
    assert zoho_success is not None and time.time() - zoho_success < 30
    assert value(samples, "syncd_poll_interval_seconds", connector="zoho") == 1
    lag = value(samples, "syncd_poll_lag_seconds", connector="zoho")
    assert lag is not None and 0 <= lag < 30
    assert value(samples, "syncd_last_success_timestamp_seconds", connector="dentally") is not None  # first resync
    assert value(samples, "syncd_resync_last_exit_code", connector="dentally") == 3
    assert value(samples, "syncd_resync_last_exit_code", connector="zoho") == 3
    assert value(samples, "syncd_resync_last_records", connector="zoho", counter="read") == 2
    assert value(samples, "syncd_dead_letters") == 0 and value(samples, "syncd_open_conflicts") == 0
    # the request histogram by outcome
    assert total(samples, "syncd_vendor_request_seconds_count", connector="dentally", outcome="auth") >= 1
    assert total(samples, "syncd_vendor_request_seconds_count", connector="zoho", outcome="ok") >= 1
    assert total(samples, "syncd_vendor_request_seconds_count", connector="dentally", outcome="ok") == 0
    # build and process
    build = [dict(lbl) for (n, lbl), v in samples.items() if n == "syncd_build_info" and v == 1]
    assert len(build) == 1 and build[0]["version"] and build[0]["version"] != "unknown", build
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "process_cpu_seconds_total"):
        assert value(samples, name) is not None, name
    # no label value is an id: only connector names and fixed words
    _assert_labels_carry_no_ids(samples, {zoho_id, dentally_id})

    log = daemon.log_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(lines) == len(log.splitlines()), log[-2000:]
    scheduler = [line for line in lines if str(line.get("logger", "")).startswith("apscheduler")]
    assert scheduler and all(line["level"] in ("warning", "error", "critical") for line in scheduler), scheduler
    skipped = [line["event"] for line in scheduler if "maximum number of running instances" in line["event"]]
    assert skipped and all(e.startswith('Execution of job "poll:zoho (trigger: interval[0:00:01], next run at: 20')
                           for e in skipped), skipped
    assert "[phone]" not in log and "<locals>" not in log and "Running job" not in log
    assert any(line["event"] == "poll_failed" and line["connector"] == "dentally" and line["kind"] == "auth"
               for line in lines)


def _assert_labels_carry_no_ids(samples: Samples, ids: set[str]) -> None:
    allowed_keys = {"connector", "op", "outcome", "kind", "counter", "le", "version", "python", "implementation",
                    "major", "minor", "patchlevel", "generation", "quantile"}
    for (name, labels) in samples:
        for key, label_value in labels:
            assert key in allowed_keys, (name, key)
            assert label_value not in ids, (name, key, label_value)
            if key == "connector":
                assert label_value in ("zoho", "dentally", "_unknown"), (name, label_value)

