"""``syncd db upgrade``: create or migrate the ledger schema."""

from __future__ import annotations

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    SyncdGroup,
    common_options,
    echo_json,
    load,
    open_ledger,
    options,
    run,
)
from syncd.config import mask_url
from syncd.logging import get_logger

__all__ = ["db"]

_CODES = {
    EXIT_OK: "the ledger is at the newest revision (migrated now, or already)",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: "could not run: the ledger is unreachable (host and port, or the SQLite path, are named)",
}


@click.group("db", cls=SyncdGroup, exit_codes=_CODES)
@common_options
def db() -> None:
    """Ledger schema management."""


@db.command("upgrade", exit_codes=_CODES)
@common_options
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or migrate the ledger schema to the newest revision (a no-op when current). Needs no
    vendor secret."""
    config = load(ctx, secrets=False)
    log = get_logger("syncd.db")

    async def go() -> tuple[str | None, str | None]:
        async with open_ledger(config, create=True, current=False) as ledger:
            before = await ledger.revision()
            after = await ledger.upgrade()
        return before, after

    before, after = run(go())
    log.info("ledger_upgraded", revision=after, outcome="unchanged" if before == after else "migrated")
    where = mask_url(config.ledger.url)
    if options(ctx).json:
        echo_json({"ok": True, "ledger": where, "revision_before": before, "revision": after,
                   "migrated": before != after})
    elif before == after:
        click.echo(f"ledger {where}: already at revision {after}")
    else:
        click.echo(f"ledger {where}: upgraded from {before or 'empty'} to revision {after}")
