"""``syncd check-config``: validate the config (and optionally a crosswalk file) without any I/O."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli.common import EXIT_OK, config_option, load
from syncd.crosswalk import parse_csv
from syncd.engine.runner import check_mappings
from syncd.errors import ConfigError


@click.command("check-config")
@config_option
@click.option(
    "--crosswalk",
    "crosswalk_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Also validate this crosswalk CSV (kinds, keys, connectors) without importing it.",
)
@click.pass_context
def check_config(ctx: click.Context, crosswalk_file: str | None) -> None:
    """Validate the config, the mapping files it uses (and a crosswalk file): exit 0, or 2 with one
    line per problem.

    Touches neither the ledger nor the network.
    """
    config = load(ctx, configure_logs=False)
    check_mappings(config)  # every mapping file in use: unknown functions or statuses are config errors
    if crosswalk_file is not None:
        try:
            text = Path(crosswalk_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"crosswalk: cannot read {crosswalk_file}: {type(exc).__name__}"]) from None
        rows, problems = parse_csv(text, config.connectors)
        if problems:
            raise ConfigError([f"crosswalk {p}" for p in problems])
        click.echo(f"crosswalk OK: {len(rows)} rows")
    groups = ", ".join(g.name for g in config.sync) or "none"
    click.echo(
        f"config OK: {config.path}: {len(config.connectors)} connectors "
        f"({', '.join(config.connectors)}), sync groups: {groups}"
    )
    ctx.exit(EXIT_OK)
