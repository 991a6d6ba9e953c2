"""``syncd check-config``: validate the config (and optionally a crosswalk file) without any I/O."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli_common import EXIT_OK, config_option, load
from syncd.config import Config
from syncd.crosswalk import CrosswalkRow, parse_csv
from syncd.engine.runner import check_mappings
from syncd.errors import ConfigError


def default_location_problems(config: Config, rows: list[CrosswalkRow], source: str) -> list[str]:
    """Each connector's ``default_location`` must be a location key of the crosswalk (``source`` names the
    file): a key missing there would dead-letter every appointment of that system at run time."""
    keys = {row.key for row in rows if row.kind == "location"}
    problems = []
    for name, cfg in config.connectors.items():
        key = cfg.default_location
        if key is not None and key not in keys:
            problems.append(
                f"connectors.{name}.default_location: location {key!r} is not in the crosswalk {source}; "
                f"add a row location,{key},<connector>,<its id there> for each member that needs a location"
            )
    return problems


@click.command("check-config")
@config_option
@click.option(
    "--crosswalk",
    "crosswalk_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Also validate this crosswalk CSV (kinds, keys, connectors, each default_location's key) without "
         "importing it.",
)
@click.pass_context
def check_config(ctx: click.Context, crosswalk_file: str | None) -> None:
    """Validate the config, the mapping files it uses (and a crosswalk file): exit 0, or 2 with one
    line per problem. With --crosswalk, every connector's default_location must be a location key in it.

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
        missing = default_location_problems(config, rows, crosswalk_file)
        if missing:
            raise ConfigError(missing)
        click.echo(f"crosswalk OK: {len(rows)} rows")
    groups = ", ".join(g.name for g in config.sync) or "none"
    click.echo(
        f"config OK: {config.path}: {len(config.connectors)} connectors "
        f"({', '.join(config.connectors)}), sync groups: {groups}"
    )
    ctx.exit(EXIT_OK)
