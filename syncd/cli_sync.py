"""``syncd resync``, ``syncd deadletters ...`` and ``syncd conflicts ...`` (docs/reference.md §4 and §7)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from syncd.cli_common import EXIT_OK, EXIT_PARTIAL, config_option, echo_json, load, run
from syncd.engine.runner import discard_dead_letters, resolve_conflict, resync, retry_dead_letters
from syncd.errors import ConfigError
from syncd.ledger.store import Ledger

__all__ = ["conflicts", "deadletters", "resync_command"]


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date-time: {value!r}", param_hint="--since") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_ids(values: tuple[str, ...], known: set[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, external = value.partition(":")
        if not sep or not name or not external:
            raise click.BadParameter(f"expected NAME:EXTERNAL_ID, got {value!r}", param_hint="--id")
        if name not in known:
            raise click.BadParameter(f"{name!r} is not a configured connector", param_hint="--id")
        out.append((name, external))
    return out


@click.command("resync")
@config_option
@click.option("--connector", "connector_names", multiple=True, metavar="NAME",
              help="Only read these connectors (repeatable; default: all).")
@click.option("--since", metavar="ISO8601", help="Read what changed since this instant instead of the whole window.")
@click.option("--id", "ids", multiple=True, metavar="NAME:EXTERNAL_ID",
              help="Read just these records (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Write nothing anywhere (the ledger included); report what would be done.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document (docs/reference.md §4).")
@click.pass_context
def resync_command(
    ctx: click.Context,
    connector_names: tuple[str, ...],
    since: str | None,
    ids: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """One full pass now: read, reconcile, write, then exit.

    Exit codes: 0 everything done; 1 done, but records were dead-lettered or conflicts are open;
    2 usage or configuration error; 3 could not run (ledger unreachable, a vendor refused
    authentication, a vendor unreachable after retries or asking to wait over 120 s) -- nothing lost.
    """
    config = load(ctx)
    unknown = [n for n in connector_names if n not in config.connectors]
    if unknown:
        raise ConfigError([f"--connector: {n!r} is not a configured connector" for n in unknown])
    result = run(resync(config, connectors=connector_names, since=_parse_since(since),
                        ids=_parse_ids(ids, set(config.connectors)), dry_run=dry_run))
    doc = result.document
    if as_json:
        echo_json(doc)
    else:
        _print_pass(doc)
    ctx.exit(result.exit_code)


def _print_pass(doc: dict[str, Any]) -> None:
    head = "dry run: nothing written" if doc["dry_run"] else "resync done"
    click.echo(f"{head} in {doc['duration_s']}s")
    cols = ["read", "changed", "created", "updated", "cancelled", "unchanged", "retried", "dead_lettered",
            "conflicts", "api_calls"]
    click.echo("connector".ljust(12) + "".join(c.rjust(14) for c in cols))
    for name, stats in doc["connectors"].items():
        click.echo(name.ljust(12) + "".join(str(stats[c]).rjust(14) for c in cols))
    click.echo(f"dead letters: {doc['dead_letters']}  open conflicts: {doc['open_conflicts']}")
    for name, why in doc.get("stopped", {}).items():
        click.echo(f"stopped {name}: {why} (its work stays queued in the ledger)", err=True)


# ---------------------------------------------------------------------------------------- dead letters
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
    changed = run(discard_dead_letters(config, list(ids)))
    click.echo(f"discarded {changed} of {len(ids)}")
    ctx.exit(EXIT_OK if changed == len(ids) else EXIT_PARTIAL)


# ---------------------------------------------------------------------------------------- conflicts
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
@click.option("--dry-run", is_flag=True,
              help="Show what would be written to each system (free text as length + digest); write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: int, take: str, dry_run: bool, as_json: bool) -> None:
    """Settle a conflict by taking connector NAME's current version, and sync it to the others.

    Every member's record is read again first. When a system cannot take that version (its state
    machine, a terminal record, a field it locks), nothing is written, the conflict stays open and
    the answer names the reason and the --take that would work. Exit codes: 0 resolved (or, with
    --dry-run, would be); 1 refused or unknown conflict, nothing written; 2 usage error; 3 a vendor
    could not be reached (the conflict stays open, nothing lost).
    """
    config = load(ctx)
    result = run(resolve_conflict(config, conflict_id, take, dry_run=dry_run))
    if as_json:
        echo_json(result.document)
    else:
        click.echo(result.message)
    sys.stdout.flush()
    ctx.exit(result.exit_code)
