"""Honest health: ``syncd status``, ``/readyz`` and ``syncd_poll_lag_seconds`` over real sandboxes,
a real ledger and a live ``syncd run`` (syncd/health.py holds the definitions tested here)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from syncd.health import FAILING_AFTER, assess, lag_seconds, state_of
from tests.daemon_support import DaemonProcess, cli, eventually, free_port, with_server
from tests.scenarios.harness import World, make_world

MEMBERS = {"dentally": "dentally", "sf": "salesforce_health"}
T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture
async def world(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Dentally (polled every second) and Salesforce (never polled), synced once."""
    w = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=2,
                         connector_extra={"dentally": {"poll_interval": 1}, "sf": {"poll_interval": 0}})
    try:
        await w.seed("dentally")
        await w.seed("sf", appointments=False)
        await w.import_crosswalk()
        first = await w.resync()
        assert first.exit_code == 0, first.document
        with_server(w, free_port())
        yield w
    finally:
        await w.stop()


async def _status(world: World) -> tuple[int, dict, str]:
    code, out, err = await cli(world.config_path, "status", "--json")
    return code, json.loads(out), err


async def _metric(daemon: DaemonProcess, name: str, connector: str) -> float | None:
    async with aiohttp.ClientSession() as s, s.get(daemon.url + "/metrics") as r:
        text = await r.text()
    match = re.search(rf'^{name}{{connector="{connector}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


async def test_rotated_dentally_token_fails_status_and_readyz_until_it_is_fixed(
    world: World, tmp_path: Path
) -> None:
    """The Done-when case: the practice rotates the Dentally token. The next poll is refused; ``status``
    exits 1 naming dentally, the cause and the config key; ``/readyz`` answers 503 naming the
    connector; the lag keeps growing in /metrics and status alike. Restoring the token heals all of it."""
    daemon = DaemonProcess(world.config_path, world.config.server.port, tmp_path)
    try:
        daemon.start()
        await daemon.ready()
        code, doc, err = await _status(world)
        assert code == 0 and doc["ok"] is True, (doc, err[-1000:])
        assert doc["daemon"]["running"] is True and doc["daemon"]["since"] is not None

        await world.control("dentally", "POST", "/_sandbox/options", {"access_token": "rotated-by-the-practice"})
        _, body = await eventually(lambda: daemon.get("/readyz"), lambda r: r[0] == 503, timeout=15,
                                   what="/readyz 503 after the refused poll")
        [reason] = [f for f in body["failed"] if f.startswith("connector dentally")]
        assert "authentication refused" in reason and "connectors.dentally.access_token" in reason, body
        assert "/v1/appointments" in reason and "HTTP 401" in reason, body

        before_status = time.monotonic()
        code, doc, _ = await _status(world)
        after_status = time.monotonic()
        dentally = doc["connectors"]["dentally"]
        assert code == 1 and doc["ok"] is False
        assert dentally["state"] == "failing" and dentally["since"] is not None, dentally
        assert "connectors.dentally.access_token" in dentally["reason"] and "401" in dentally["reason"]
        assert dentally["consecutive_failures"] >= 1
        assert doc["connectors"]["sf"]["state"] == "ok"  # one connector failing does not smear the other
        code, out, _ = await cli(world.config_path, "status")
        assert code == 1 and re.search(r"^dentally: failing since \S+: authentication refused", out, re.M), out

        # one definition of lag: status and /metrics agree (both: time since the last successful poll)
        # (status computed its lag somewhere inside its own run; the scrape comes later by that much)
        metric = await _metric(daemon, "syncd_poll_lag_seconds", "dentally")
        scraped = time.monotonic()
        assert metric is not None and dentally["lag_s"] is not None
        gap = metric - dentally["lag_s"]
        assert scraped - after_status - 1 <= gap <= scraped - before_status + 1, (metric, dentally["lag_s"], gap)
        await eventually(lambda: _metric(daemon, "syncd_poll_lag_seconds", "dentally"),
                         lambda lag: lag is not None and lag > metric, timeout=5, what="a growing lag")

        await world.control("dentally", "POST", "/_sandbox/options", {"access_token": "sandbox-token"})
        await daemon.ready()  # the next poll succeeds: ready again
        code, doc, _ = await _status(world)
        assert code == 0 and doc["connectors"]["dentally"]["state"] == "ok", doc["connectors"]["dentally"]
        lag = await _metric(daemon, "syncd_poll_lag_seconds", "dentally")
        assert lag is not None and lag < 5
    finally:
        await daemon.stop()
    code, doc, _ = await _status(world)
    assert doc["daemon"]["running"] is False  # a stopped daemon clears its heartbeat


async def test_resync_records_its_outcome_where_status_sees_it(world: World) -> None:
    """A refused resync shows in ``status`` (no daemon needed); the next good one clears it. A dry run
    records nothing."""
    await world.control("dentally", "POST", "/_sandbox/options", {"access_token": "rotated"})
    code, out, _ = await cli(world.config_path, "resync", "--dry-run", "--json")
    assert code == 3
    code, doc, _ = await _status(world)
    assert code == 0 and doc["connectors"]["dentally"]["state"] == "ok"  # the dry run left no trace
    assert doc["daemon"]["running"] is False

    code, out, _ = await cli(world.config_path, "resync", "--json")
    assert code == 3 and "connectors.dentally.access_token" in json.loads(out)["stopped"]["dentally"]
    code, doc, _ = await _status(world)
    dentally = doc["connectors"]["dentally"]
    assert code == 1 and dentally["state"] == "failing", dentally
    assert dentally["last_resync"]["ok"] is False and "401" in dentally["last_resync"]["stopped"]
    assert "the last resync" not in dentally["reason"]  # a refused credential is failing at once
    assert doc["connectors"]["sf"]["last_resync"]["ok"] is True

    await world.control("dentally", "POST", "/_sandbox/options", {"access_token": "sandbox-token"})
    code, out, _ = await cli(world.config_path, "resync", "--json")
    assert code == 0, out
    code, doc, _ = await _status(world)
    assert code == 0 and doc["connectors"]["dentally"]["state"] == "ok"
    assert doc["connectors"]["dentally"]["last_resync"]["ok"] is True
    assert doc["connectors"]["dentally"]["last_resync"]["counts"]["api_calls"] > 0


# -- the definitions themselves (pure) ------------------------------------------------------------------


def test_lag_is_the_time_since_the_last_successful_read() -> None:
    assert lag_seconds(None, T0) is None
    assert lag_seconds(T0, T0) == 0.0
    assert lag_seconds(T0 - timedelta(seconds=90), T0) == 90.0


def test_a_failure_degrades_and_the_third_in_a_row_fails() -> None:
    """Unreachable vendors get FAILING_AFTER chances; a refused credential fails at once."""
    def record(n: int, kind: str = "retriable") -> dict:
        return {"failures": n, "failing_since": "2026-12-08T08:00:00Z", "last_error": "unreachable: x",
                "kind": kind, "source": "poll"}

    common: dict[str, Any] = {"poll_interval": 60.0, "last_success_at": T0, "now": T0, "daemon_since": T0}
    assert state_of(assess(record=record(0), **common)) == "ok"
    assert state_of(assess(record=record(FAILING_AFTER - 1), **common)) == "degraded"
    [finding] = assess(record=record(FAILING_AFTER), **common)
    assert finding.severity == "failing" and finding.since == datetime(2026, 12, 8, 8, 0, tzinfo=UTC)
    assert state_of(assess(record=record(1, kind="auth"), **common)) == "failing"


def test_lag_backlog_dead_letters_and_conflicts_degrade() -> None:
    base: dict[str, Any] = {"poll_interval": 60.0, "record": None, "now": T0, "daemon_since": T0 - timedelta(hours=1)}
    assert assess(last_success_at=T0 - timedelta(seconds=170), **base) == []
    [lag] = assess(last_success_at=T0 - timedelta(seconds=200), **base)
    assert lag.severity == "degraded" and "lag 200s is over 180s" in lag.reason
    assert lag.since == T0 - timedelta(seconds=20)
    # without a running daemon nobody polls: lag alone is not judged
    assert assess(last_success_at=T0 - timedelta(days=2), **{**base, "daemon_since": None}) == []
    # a webhooks-only connector (poll_interval 0) has no lag limit
    assert assess(last_success_at=T0 - timedelta(days=2), **{**base, "poll_interval": 0.0}) == []
    old = T0 - timedelta(minutes=30)
    findings = assess(last_success_at=T0, backlog_since=old, outbox_pending=4, dead_letters=2,
                      dead_letters_since=old, open_conflicts=1, conflicts_since=old, **base)
    assert [f.reason.split(":")[0].split(" (")[0] for f in findings] == [
        "backlog", "2 dead letters", "1 open conflict"]
    assert state_of(findings) == "degraded" and all(f.since == old for f in findings)
