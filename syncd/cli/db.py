"""``syncd db upgrade``: create or migrate the ledger schema."""

from __future__ import annotations

import click

from syncd.cli.common import config_option, load, run
from syncd.config import mask_url
from syncd.ledger.store import Ledger
from syncd.logging import get_logger


@click.group("db")
@config_option
def db() -> None:
    """Ledger schema management."""


@db.command("upgrade")
@config_option
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or migrate the ledger schema to the newest revision (a no-op when current)."""
    config = load(ctx)
    log = get_logger("syncd.db")

    async def go() -> tuple[str | None, str | None]:
        ledger = await Ledger.open(config.ledger.url)
        try:
            before = await ledger.revision()
            after = await ledger.upgrade()
        finally:
            await ledger.close()
        return before, after

    before, after = run(go())
    log.info("ledger_upgraded", revision=after, outcome="unchanged" if before == after else "migrated")
    where = mask_url(config.ledger.url)
    if before == after:
        click.echo(f"ledger {where}: already at revision {after}")
    else:
        click.echo(f"ledger {where}: upgraded from {before or 'empty'} to revision {after}")
