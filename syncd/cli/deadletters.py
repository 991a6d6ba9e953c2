"""``syncd deadletters list / retry / discard``: records that could not be synced (docs/reference.md §4, §7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from syncd.cli.common import EXIT_OK, EXIT_PARTIAL, config_option, echo_json, load, run
from syncd.engine.runner import retry_dead_letters
from syncd.ledger.store import Ledger

__all__ = ["deadletters"]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


@click.group("deadletters")
def deadletters() -> None:
    """Inspect, replay or drop records that could not be synced."""


@deadletters.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@click.pass_context
def deadletters_list(ctx: click.Context, as_json: bool) -> None:
    """List unresolved dead letters (exit 0 whenever the list could be read)."""
    config = load(ctx)

    async def go() -> list[dict[str, Any]]:
        ledger = await Ledger.open(config.ledger.url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                rows = await tx.dead_letters()
        finally:
            await ledger.close()
        return [{"id": r.id, "connector": r.connector, "canonical_id": r.canonical_id, "external_id": r.external_id,
                 "kind": r.kind, "reason": r.reason, "attempts": r.attempts, "first_seen": _iso(r.first_seen),
                 "last_tried": _iso(r.last_tried)} for r in rows]

    rows = run(go())
    if as_json:
        echo_json({"dead_letters": rows})
        return
    if not rows:
        click.echo("no dead letters")
    for r in rows:
        click.echo(f"#{r['id']} {r['connector']} {r['kind']} canonical={r['canonical_id']} "
                   f"external={r['external_id']} attempts={r['attempts']}: {r['reason']}")


@deadletters.command("retry")
@config_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Retry every unresolved dead letter.")
@click.pass_context
def deadletters_retry(ctx: click.Context, ids: tuple[int, ...], all_: bool) -> None:
    """Replay dead letters (after fixing their cause, e.g. importing a crosswalk row)."""
    if bool(ids) == all_:
        raise click.UsageError("give dead-letter IDs or --all (not both)")
    config = load(ctx)
    code, results = run(retry_dead_letters(config, None if all_ else list(ids)))
    for r in results:
        click.echo(f"#{r['id']}: {r['result']}")
    if not results:
        click.echo("nothing to retry")
    ctx.exit(code)


@deadletters.command("discard")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@click.pass_context
def deadletters_discard(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Drop dead letters for good (kept in the ledger as resolved)."""
    config = load(ctx)

    async def go() -> int:
        ledger = await Ledger.open(config.ledger.url, create=False)
        try:
            async with ledger.transaction() as tx:
                return await tx.resolve_dead_letters(ids)
        finally:
            await ledger.close()

    changed = run(go())
    click.echo(f"discarded {changed} of {len(ids)}")
    ctx.exit(EXIT_OK if changed == len(ids) else EXIT_PARTIAL)
