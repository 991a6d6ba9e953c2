"""``syncd check-config``: validate the config (and optionally a crosswalk file) without any I/O."""

from __future__ import annotations

import click

from syncd import registry
from syncd.cli.common import EXIT_CONFIG, EXIT_OK, SyncdCommand, common_options, echo_json, load, options
from syncd.cli.crosswalk import read_csv_text
from syncd.config import Config
from syncd.crosswalk import CrosswalkRow, parse_csv
from syncd.errors import ConfigError
from syncd.runtime import check_mappings

__all__ = ["check_config"]


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


def ignored_webhook_secrets(config: Config) -> list[str]:
    """A ``webhook_secret`` set on a connector whose vendor sends no webhooks (its registry declaration
    says ``webhooks="none"``): not an error, but the key does nothing."""
    return [
        f"note: connectors.{name}.webhook_secret: type {cfg.type} sends no webhooks; the key is ignored "
        "(changes are found by polling)"
        for name, cfg in config.connectors.items()
        if cfg.webhook_secret is not None and registry.get(cfg.type).webhooks == "none"
    ]


@click.command("check-config", cls=SyncdCommand, exit_codes={
    EXIT_OK: "the config, the mappings it uses (and the crosswalk file) are valid",
    EXIT_CONFIG: "a problem was found: one line per problem on stderr, naming the key",
})
@common_options
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

    Touches neither the ledger nor the network; every ${NAME} must resolve.
    """
    config = load(ctx, configure_logs=False)
    check_mappings(config)  # every mapping file in use: unknown functions or statuses are config errors
    rows = None
    if crosswalk_file is not None:
        parsed, problems = parse_csv(read_csv_text(crosswalk_file), config.connectors)
        if problems:
            raise ConfigError([f"crosswalk {p}" for p in problems])
        missing = default_location_problems(config, parsed, crosswalk_file)
        if missing:
            raise ConfigError(missing)
        rows = len(parsed)
    for note in ignored_webhook_secrets(config):
        click.echo(note, err=True)
    groups = [g.name for g in config.sync]
    if options(ctx).json:
        echo_json({"ok": True, "config": config.path, "connectors": {n: c.type for n, c in config.connectors.items()},
                   "sync_groups": groups, "crosswalk_rows": rows})
        ctx.exit(EXIT_OK)
    if rows is not None:
        click.echo(f"crosswalk OK: {rows} rows")
    click.echo(
        f"config OK: {config.path}: {len(config.connectors)} connectors "
        f"({', '.join(config.connectors)}), sync groups: {', '.join(groups) or 'none'}"
    )
    ctx.exit(EXIT_OK)
