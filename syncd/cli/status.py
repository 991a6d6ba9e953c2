"""``syncd status [--json]``: what the ledger holds, per configured connector."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from syncd.cli.common import config_option, echo_json, load, run
from syncd.config import Config, mask_url
from syncd.ledger.models import utcnow
from syncd.ledger.store import ConnectorSummary, Ledger, LedgerUnavailable

RUNTIME_KEYS = ("status.rate_limit", "status.subscription")


def _loads(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


async def collect(config: Config) -> dict[str, Any]:
    """The status document (also used by ``--json``)."""
    ledger = await Ledger.open(config.ledger.url, create=False)
    try:
        revision = await ledger.revision()
        if revision is None:
            raise LedgerUnavailable("ledger not initialised (run `syncd db upgrade`)")
        if revision != Ledger.head_revision():
            raise LedgerUnavailable(f"ledger schema at revision {revision}, not current (run `syncd db upgrade`)")
        summaries = await ledger.summaries(list(config.connectors))
        async with ledger.transaction(readonly=True) as tx:
            totals = await tx.totals()
            runtime_state = {name: await tx.state_get(name, RUNTIME_KEYS) for name in config.connectors}
        dialect = ledger.dialect
    finally:
        await ledger.close()
    now = utcnow()
    connectors: dict[str, Any] = {}
    for name, conn in config.connectors.items():
        summary: ConnectorSummary = summaries[name]
        group = config.group_of(name)
        lag = None if summary.last_success_at is None else round((now - summary.last_success_at).total_seconds(), 1)
        connectors[name] = {
            "type": conn.type,
            "sync_group": group.name if group else None,
            "poll_interval": conn.poll_interval,
            "webhooks": conn.webhook_secret is not None,
            "last_success_at": _iso(summary.last_success_at),
            "cursor": summary.cursor,
            "lag_s": lag,
            "last_error": summary.last_error,
            "inbox_pending": summary.inbox_pending,
            "outbox_pending": summary.outbox_pending,
            "dead_letters": summary.dead_letters,
            "open_conflicts": summary.open_conflicts,
            # written by a running `syncd run` (absent when no daemon has run yet)
            "rate_limit": _loads(runtime_state[name].get("status.rate_limit")),
            "subscription": _loads(runtime_state[name].get("status.subscription")),
        }
    return {
        "ok": True,
        "ledger": {"url": mask_url(config.ledger.url), "dialect": dialect, "revision": revision},
        "connectors": connectors,
        "dead_letters": totals["dead_letters"],
        "open_conflicts": totals["open_conflicts"],
    }


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per connector: last successful poll, cursor, lag, pending inbox/outbox, dead letters, conflicts."""
    config = load(ctx)
    document = run(collect(config))
    if as_json:
        echo_json(document)
        return
    ledger = document["ledger"]
    click.echo(f"ledger: {ledger['url']} ({ledger['dialect']}, revision {ledger['revision']})")
    header = ("connector", "type", "last poll (UTC)", "lag s", "inbox", "outbox", "dead", "conflicts")
    rows = [header]
    for name, info in document["connectors"].items():
        rows.append(
            (
                name,
                info["type"],
                info["last_success_at"] or "never",
                "-" if info["lag_s"] is None else f"{info['lag_s']:.0f}",
                str(info["inbox_pending"]),
                str(info["outbox_pending"]),
                str(info["dead_letters"]),
                str(info["open_conflicts"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for name, info in document["connectors"].items():
        if info["last_error"]:
            click.echo(f"{name}: last error: {info['last_error']}")
    click.echo(f"dead letters: {document['dead_letters']}, open conflicts: {document['open_conflicts']}")
