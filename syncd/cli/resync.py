"""``syncd resync``: one full pass now (docs/reference.md §4 and §7)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
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
    load,
    options,
    progress,
    run,
)
from syncd.engine.core import Decision
from syncd.errors import ConfigError
from syncd.passes import resync
from syncd.runtime import new_ledger_notice

__all__ = ["resync_command"]


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


@click.command("resync", cls=SyncdCommand, exit_codes={
    EXIT_OK: "everything done (faults that were retried away included)",
    EXIT_PARTIAL: "done, but records were dead-lettered or conflicts are open (--dry-run: would be)",
    EXIT_CONFIG: "usage or configuration error, nothing done",
    EXIT_UNAVAILABLE: "could not run for a connector (ledger unreachable, a vendor refused authentication, "
    "stayed unreachable after retries or asked to wait over 120 s): its work stays queued, nothing lost",
})
@common_options
@click.option("--connector", "connector_names", multiple=True, metavar="NAME",
              help="Only read these connectors (repeatable; default: all).")
@click.option("--since", metavar="ISO8601", help="Read what changed since this instant instead of the whole window.")
@click.option("--id", "ids", multiple=True, metavar="NAME:EXTERNAL_ID",
              help="Read just these records (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Write nothing anywhere (the ledger included); report what would be done.")
@click.pass_context
def resync_command(
    ctx: click.Context,
    connector_names: tuple[str, ...],
    since: str | None,
    ids: tuple[str, ...],
    dry_run: bool,
) -> None:
    """One full pass now: read, reconcile, write, then exit. Safe beside a running `syncd run`.

    Progress shows on stderr while a terminal is attached (not under --json or --quiet). The outcome
    per connector is kept in the ledger, where `syncd status` shows it (except for --dry-run).
    """
    config = load(ctx)
    unknown = [n for n in connector_names if n not in config.connectors]
    if unknown:
        raise ConfigError([f"--connector: {n!r} is not a configured connector" for n in unknown])
    seen: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    with progress(ctx, "resync") as bar:

        def on_decision(decision: Decision) -> None:
            seen[decision.connector] += 1
            if decision.action not in ("unchanged", "echo"):
                changed[decision.connector] += 1
            bar.update(" · ".join(f"{n}: {seen[n]} records, {changed[n]} changes" for n in sorted(seen)))

        result = run(resync(config, connectors=connector_names, since=_parse_since(since),
                            ids=_parse_ids(ids, set(config.connectors)), dry_run=dry_run, on_decision=on_decision,
                            on_new_ledger=lambda where: click.echo(new_ledger_notice(where), err=True)))
    doc = result.document
    if options(ctx).json:
        echo_json(doc)
    else:
        _print_pass(doc)
    ctx.exit(result.exit_code)


def _print_pass(doc: dict[str, Any]) -> None:
    head = "dry run: nothing written" if doc["dry_run"] else "resync done"
    click.echo(f"{head} in {doc['duration_s']}s")
    cols = ["read", "changed", "created", "linked", "updated", "cancelled", "unchanged", "retried",
            "dead_lettered", "conflicts", "api_calls"]
    click.echo("connector".ljust(12) + "".join(c.rjust(14) for c in cols))
    for name, stats in doc["connectors"].items():
        click.echo(name.ljust(12) + "".join(str(stats[c]).rjust(14) for c in cols))
    click.echo(f"dead letters: {doc['dead_letters']}  open conflicts: {doc['open_conflicts']}")
    if doc.get("ledger_created"):
        click.echo("this pass created a new, empty ledger (see the notice above)", err=True)
    for name, why in doc.get("stopped", {}).items():
        click.echo(f"stopped {name}: {why} (its work stays queued in the ledger)", err=True)
    for holder, count in doc.get("claimed_elsewhere", {}).items():
        click.echo(f"skipped {count} queued write(s): {holder} holds their appointments (another syncd process, "
                   "alive); they stay queued for it; run resync again once it has finished or stopped", err=True)
