"""``syncd status [--json]``: how each connector is doing, from the ledger alone (no vendor call, no
vendor secret). What ok, degraded, failing and lag mean is defined once, in :mod:`syncd.health`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    SyncdCommand,
    common_options,
    echo_json,
    iso,
    load,
    open_ledger,
    options,
    run,
    table,
)
from syncd.config import Config, mask_url
from syncd.health import HEARTBEAT_STALE_S, assess, lag_limit, lag_seconds, parse_time, state_of
from syncd.ledger.models import ConflictRow, DeadLetter, Lease, utcnow
from syncd.ledger.store import RESYNC_KEY, ConnectorSummary

__all__ = ["collect", "status"]

RUNTIME_KEYS = ("status.rate_limit", "status.subscription", RESYNC_KEY)


def _loads(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


@dataclass
class _Reads:
    """What ``status`` reads from the ledger (a few grouped queries, one read-only transaction)."""

    revision: str | None
    dialect: str
    summaries: Mapping[str, ConnectorSummary]
    totals: Mapping[str, int]
    runtime_state: Mapping[str, Mapping[str, str]]
    outcomes: Mapping[str, Any]
    daemons: list[dict[str, Any]]
    backlog: Mapping[str, datetime]
    letters: list[DeadLetter]
    conflicts: list[ConflictRow]
    lease: Lease | None
    leases: list[Lease]


async def _read(config: Config) -> _Reads:
    names = list(config.connectors)
    async with open_ledger(config) as ledger:
        revision = await ledger.revision()
        summaries = await ledger.summaries(names)
        async with ledger.transaction(readonly=True) as tx:
            return _Reads(
                revision, ledger.dialect, summaries, await tx.totals(),
                {name: await tx.state_get(name, RUNTIME_KEYS) for name in names}, await tx.read_outcomes(names),
                await tx.daemons(), await tx.backlog_since(names), await tx.dead_letters(), await tx.conflicts(),
                await tx.lease_holder("syncd-run"), await tx.leases())


def _oldest(reads: _Reads) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """connector -> its oldest open dead letter; connector -> its oldest open conflict."""
    oldest_letter: dict[str, datetime] = {}
    for letter in reads.letters:
        oldest_letter.setdefault(letter.connector, letter.first_seen)
    oldest_conflict: dict[str, datetime] = {}
    for conflict in reads.conflicts:
        owner = conflict.connector or (conflict.values.get("target") if isinstance(conflict.values, dict) else None)
        if isinstance(owner, str):
            oldest_conflict.setdefault(owner, conflict.opened)
    return oldest_letter, oldest_conflict


async def collect(config: Config, *, now: datetime | None = None) -> dict[str, Any]:
    """The status document (also used by ``--json``): ledger reads only, a few grouped queries."""
    reads = await _read(config)
    now = now or utcnow()
    alive = [d for d in reads.daemons
             if (beat := parse_time(d.get("heartbeat_at"))) is not None
             and (now - beat).total_seconds() <= HEARTBEAT_STALE_S]
    daemon_since = min((t for d in alive if (t := parse_time(d.get("started_at"))) is not None), default=None)
    held = {row.name: {"holder": row.holder, "expires_at": iso(row.expires_at)} for row in reads.leases
            if row.expires_at >= now}
    oldest = _oldest(reads)
    connectors = {name: _connector(config, name, reads, oldest, held, now=now, daemon_since=daemon_since)
                  for name in config.connectors}
    lease = reads.lease
    return {
        "ok": all(c["state"] == "ok" for c in connectors.values()),
        "ledger": {"url": mask_url(config.ledger.url), "dialect": reads.dialect, "revision": reads.revision},
        "daemon": {
            "running": bool(alive),
            "since": iso(daemon_since),
            "instances": [{"holder": d.get("holder"), "since": d.get("started_at"),
                           "heartbeat_at": d.get("heartbeat_at")} for d in alive],
            "sqlite_lease": None if lease is None or lease.expires_at < now else
            {"holder": lease.holder, "expires_at": iso(lease.expires_at)},
            # which replica holds which lease, and until when (PostgreSQL: poll:<connector> for the
            # replica polling it, syncd-maintain for the one renewing subscriptions, replica:<digest>
            # for each live replica; SQLite: syncd-run)
            "leases": [{"name": name, **entry} for name, entry in held.items()],
        },
        "connectors": connectors,
        "dead_letters": reads.totals["dead_letters"],
        "open_conflicts": reads.totals["open_conflicts"],
    }


def _connector(config: Config, name: str, reads: _Reads, oldest: tuple[dict[str, datetime], dict[str, datetime]],
               held: Mapping[str, Any], *, now: datetime, daemon_since: datetime | None) -> dict[str, Any]:
    """One connector's entry of the status document."""
    conn = config.connectors[name]
    summary = reads.summaries[name]
    group = config.group_of(name)
    record = reads.outcomes.get(name)
    backlog = reads.backlog.get(name)
    findings = assess(
        poll_interval=conn.poll_interval, record=record, last_success_at=summary.last_success_at, now=now,
        daemon_since=daemon_since, dead_letters=summary.dead_letters, dead_letters_since=oldest[0].get(name),
        open_conflicts=summary.open_conflicts, conflicts_since=oldest[1].get(name),
        inbox_pending=summary.inbox_pending, outbox_pending=summary.outbox_pending, backlog_since=backlog,
    )
    lag = lag_seconds(summary.last_success_at, now)
    runtime_state = reads.runtime_state[name]
    return {
        "type": conn.type,
        "sync_group": group.name if group else None,
        "poll_interval": conn.poll_interval,
        "webhooks": conn.webhook_secret is not None,
        "state": state_of(findings),
        "reason": findings[0].reason if findings else None,
        "since": iso(findings[0].since) if findings else None,
        "findings": [f.as_dict() for f in findings],
        "last_success_at": iso(summary.last_success_at),
        "cursor": summary.cursor,
        "lag_s": None if lag is None else round(lag, 1),
        "lag_limit_s": lag_limit(conn.poll_interval),
        "consecutive_failures": int(record.get("failures") or 0) if record else 0,
        "last_attempt_at": record.get("last_attempt_at") if record else None,
        "last_error": summary.last_error or (record.get("last_error") if record else None),
        "last_error_at": record.get("last_error_at") if record else None,
        "inbox_pending": summary.inbox_pending,
        "outbox_pending": summary.outbox_pending,
        "backlog_since": iso(backlog),
        "dead_letters": summary.dead_letters,
        "open_conflicts": summary.open_conflicts,
        # written by a running `syncd run` and by `resync` (absent when neither has run yet)
        "rate_limit": _loads(runtime_state.get("status.rate_limit")),
        "subscription": _loads(runtime_state.get("status.subscription")),
        "last_resync": _loads(runtime_state.get(RESYNC_KEY)),
        # PostgreSQL: the replica that polls it now (its poll:<name> lease), None when none does
        "poller": held.get(f"poll:{name}"),
    }


@click.command("status", cls=SyncdCommand, exit_codes={
    EXIT_OK: "every connector is ok",
    EXIT_PARTIAL: "a connector is degraded or failing (the reason and since when are shown)",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: "could not run: the ledger is unreachable or not initialised",
})
@common_options
@click.pass_context
def status(ctx: click.Context) -> None:
    """Per connector: its state (ok, degraded or failing, with the reason and since when), last
    successful poll, lag, pending inbox/outbox, dead letters, open conflicts, rate-limit state, the
    last resync; and whether a `syncd run` holds the ledger, and which replica holds which lease.
    Reads the ledger only: needs no vendor secret.

    Lag is the time since the connector's last successful read pass (a poll, or a resync over it),
    the same value /metrics exports as syncd_poll_lag_seconds. A connector is failing after 3 failed
    read passes in a row or a refused credential (/readyz then answers 503), degraded when its last
    pass failed, its lag is over 3 x poll_interval while a daemon runs, work has waited over 10 min,
    or it has dead letters or open conflicts.
    """
    config = load(ctx, secrets=False)
    document = run(collect(config))
    code = EXIT_OK if document["ok"] else EXIT_PARTIAL
    if options(ctx).json:
        echo_json(document)
        ctx.exit(code)
    ledger = document["ledger"]
    click.echo(f"ledger: {ledger['url']} ({ledger['dialect']}, revision {ledger['revision']})")
    daemon = document["daemon"]
    if daemon["running"]:
        holders = ", ".join(str(i["holder"]) for i in daemon["instances"])
        click.echo(f"daemon: running since {daemon['since']} ({holders})")
    else:
        click.echo("daemon: no `syncd run` holds this ledger (no heartbeat in the last 30 s)")
    for lease in daemon["leases"]:
        click.echo(f"lease: {lease['name']} held by {lease['holder']} until {lease['expires_at']}")
    header = ("connector", "type", "state", "last success (UTC)", "lag s", "inbox", "outbox", "dead", "conflicts")
    rows = [header]
    for name, info in document["connectors"].items():
        rows.append((
            name, info["type"], info["state"], info["last_success_at"] or "never",
            "-" if info["lag_s"] is None else f"{info['lag_s']:.0f}", str(info["inbox_pending"]),
            str(info["outbox_pending"]), str(info["dead_letters"]), str(info["open_conflicts"]),
        ))
    for line in table(rows):
        click.echo(line)
    for name, info in document["connectors"].items():
        for finding in info["findings"]:
            since = f" since {finding['since']}" if finding["since"] else ""
            click.echo(f"{name}: {finding['state']}{since}: {finding['reason']}")
        resync = info["last_resync"]
        if isinstance(resync, dict) and not resync.get("ok") and options(ctx).verbose:
            click.echo(f"{name}: last resync at {resync.get('at')} stopped: {resync.get('stopped')}")
    click.echo(f"dead letters: {document['dead_letters']}, open conflicts: {document['open_conflicts']}")
    click.echo("status: ok" if document["ok"] else "status: NOT ok (exit 1)")
    ctx.exit(code)
