"""``syncd conflicts list / show / resolve``: conflicts the merge could not settle (docs/reference.md §4,
§7). ``list`` and ``show`` read the ledger only and need no vendor secret."""

from __future__ import annotations

import sys
from typing import Any

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    LIST_EXIT_CODES,
    SyncdGroup,
    common_options,
    echo_json,
    echo_next_step,
    fail,
    iso,
    load,
    open_ledger,
    options,
    run,
    show_exit_codes,
)
from syncd.cli.views import format_value, format_values, systems_view
from syncd.repairs import resolve_conflict

__all__ = ["conflicts"]


@click.group("conflicts", cls=SyncdGroup)
@common_options
def conflicts() -> None:
    """Inspect conflicts the merge could not settle by policy, and settle them."""


@conflicts.command("list", exit_codes=LIST_EXIT_CODES)
@common_options
@click.pass_context
def conflicts_list(ctx: click.Context) -> None:
    """List open conflicts (exit 0 whenever the list could be read)."""
    config = load(ctx, secrets=False)

    async def go() -> list[dict[str, Any]]:
        async with open_ledger(config) as ledger, ledger.transaction(readonly=True) as tx:
            rows = await tx.conflicts()
        return [{"id": r.id, "canonical_id": r.canonical_id, "field": r.field, "values": r.values,
                 "reason": r.reason, "opened": iso(r.opened)} for r in rows]

    rows = run(go())
    if options(ctx).json:
        echo_json({"conflicts": rows})
        return
    if not rows:
        click.echo("no open conflicts")
    for r in rows:
        values = "; ".join(f"{name}: {format_value(v)}" for name, v in r["values"].items())
        click.echo(f"#{r['id']} appointment {r['canonical_id']}, field {r['field']}: {r['reason']}"
                   + (f" ({values})" if values else ""))
    echo_next_step(ctx, rows, "syncd conflicts show ID")


@conflicts.command("show", exit_codes=show_exit_codes("conflict"))
@common_options
@click.argument("conflict_id", metavar="ID", type=int)
@click.pass_context
def conflicts_show(ctx: click.Context, conflict_id: int) -> None:
    """One conflict: the field, each side's value, the connector it belongs to, each system's record id
    and what it holds as far as syncd knows (free text only as length and digest), and the command
    that settles it."""
    config = load(ctx, secrets=False)

    async def go() -> dict[str, Any] | None:
        async with open_ledger(config) as ledger, ledger.transaction(readonly=True) as tx:
            found = await tx.conflicts(ids=[conflict_id], include_resolved=True)
            if not found:
                return None
            conflict = found[0]
            links = (await tx.links_of([conflict.canonical_id])).get(conflict.canonical_id, [])
            row = (await tx.appointments([conflict.canonical_id])).get(conflict.canonical_id)
        owner = conflict.connector or (conflict.values.get("target") if isinstance(conflict.values, dict) else None)
        members = [lk.connector for lk in links]
        take = sorted(n for n in members if n in config.connectors)
        return {
            "id": conflict.id, "canonical_id": conflict.canonical_id, "field": conflict.field,
            "values": conflict.values, "reason": conflict.reason, "opened": iso(conflict.opened),
            "connector": owner, "resolved_at": iso(conflict.resolved_at), "resolution": conflict.resolution,
            "records": {lk.connector: lk.external_id for lk in links},
            "systems": systems_view(row, links),
            "next": None if conflict.resolved_at else [
                f"syncd conflicts resolve {conflict.id} --take {name}" for name in take],
        }

    doc = run(go())
    if doc is None:
        fail(ctx, "not_found", f"no conflict #{conflict_id} in the ledger (see `syncd conflicts list`)", EXIT_PARTIAL)
    if options(ctx).json:
        echo_json({"conflict": doc})
        return
    state = f"resolved {doc['resolved_at']} ({doc['resolution']})" if doc["resolved_at"] else "open"
    click.echo(f"conflict #{doc['id']} ({state}) on appointment {doc['canonical_id']}, field {doc['field']}")
    click.echo(f"  belongs to: {doc['connector'] or '-'}; opened {doc['opened']}")
    click.echo(f"  reason: {doc['reason']}")
    for name, value in doc["values"].items():
        click.echo(f"  {name}: {format_value(value)}")
    click.echo("  records and what each system holds, as far as syncd knows (free text as length and digest):")
    for name, info in doc["systems"].items():
        ident = f" {info['external_id']}" if info.get("external_id") else ""
        click.echo(f"    {name}{ident}: {format_values(info['values'])}")
    if doc["next"]:
        click.echo("  next, to take one system's version: " + " | ".join(doc["next"]))


@conflicts.command("resolve", exit_codes={
    EXIT_OK: "the conflict is resolved and the chosen version synced to the others (with --dry-run: it would be)",
    EXIT_PARTIAL: "refused (a system cannot take that version: the reason and the --take that would work are "
                  "printed), unknown or already resolved, or a vendor refused the write; nothing else written",
    EXIT_CONFIG: "usage or configuration error (e.g. --take names no connector)",
    EXIT_UNAVAILABLE: "could not run: the ledger or a vendor is unreachable, or a vendor refused authentication; "
                      "the conflict stays open, nothing lost",
})
@common_options
@click.argument("conflict_id", type=int)
@click.option("--take", required=True, metavar="NAME", help="The connector whose version wins.")
@click.option("--dry-run", is_flag=True,
              help="Show what would be written to each system (free text as length + digest); write nothing.")
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: int, take: str, dry_run: bool) -> None:
    """Settle a conflict by taking connector NAME's current version, and sync it to the others.

    Every member's record is read again first. When a system cannot take that version (its state
    machine, a terminal record, a field it locks), nothing is written, the conflict stays open and
    the answer names the reason and the --take that would work.
    """
    config = load(ctx)
    result = run(resolve_conflict(config, conflict_id, take, dry_run=dry_run))
    if options(ctx).json:
        echo_json({"ok": result.exit_code == EXIT_OK, "id": conflict_id, "take": take, "dry_run": dry_run,
                   "message": result.message, **result.document})
    else:
        click.echo(result.message)  # the answer, refusals included (exit 1 says it was refused)
    sys.stdout.flush()
    ctx.exit(result.exit_code)
