"""``syncd conflicts list / resolve``: conflicts the merge could not settle (docs/reference.md §4, §7)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from syncd.cli.common import EXIT_OK, config_option, echo_json, load, run
from syncd.engine.runner import resolve_conflict
from syncd.ledger.store import Ledger

__all__ = ["conflicts"]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


@click.group("conflicts")
def conflicts() -> None:
    """Inspect conflicts the merge could not settle by policy, and settle them."""


@conflicts.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@click.pass_context
def conflicts_list(ctx: click.Context, as_json: bool) -> None:
    """List open conflicts (exit 0 whenever the list could be read)."""
    config = load(ctx)

    async def go() -> list[dict[str, Any]]:
        ledger = await Ledger.open(config.ledger.url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                rows = await tx.conflicts()
        finally:
            await ledger.close()
        return [{"id": r.id, "canonical_id": r.canonical_id, "field": r.field, "values": r.values,
                 "reason": r.reason, "opened": _iso(r.opened)} for r in rows]

    rows = run(go())
    if as_json:
        echo_json({"conflicts": rows})
        return
    if not rows:
        click.echo("no open conflicts")
    for r in rows:
        click.echo(f"#{r['id']} {r['canonical_id']} {r['field']}: {r['reason']} {r['values']}")


@conflicts.command("resolve")
@config_option
@click.argument("conflict_id", type=int)
@click.option("--take", required=True, metavar="NAME", help="The connector whose version wins.")
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: int, take: str) -> None:
    """Settle a conflict by taking connector NAME's current version, and sync it to the others."""
    config = load(ctx)
    code, message = run(resolve_conflict(config, conflict_id, take))
    click.echo(message, err=code != EXIT_OK)
    sys.stdout.flush()
    ctx.exit(code)
