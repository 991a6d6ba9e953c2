"""``syncd crosswalk import FILE`` / ``export [FILE]`` (CONTRACT section 3)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from syncd.cli.common import EXIT_CONFIG, config_option, load, run
from syncd.crosswalk import ImportReport, export_csv, import_rows, parse_csv, sort_problems
from syncd.ledger.store import Ledger
from syncd.logging import get_logger


@click.group("crosswalk")
@config_option
def crosswalk() -> None:
    """Reference ids across systems (patients, practitioners, locations, services, appointments)."""


@crosswalk.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def import_command(ctx: click.Context, file: str) -> None:
    """Import a crosswalk CSV (idempotent). Rows that are invalid or contradict what the ledger
    holds are reported one per line and not applied (exit 1); the others are applied."""
    config = load(ctx)
    log = get_logger("syncd.crosswalk")
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"crosswalk: cannot read {file}: {type(exc).__name__}", err=True)
        ctx.exit(EXIT_CONFIG)
    rows, problems = parse_csv(text, config.connectors)

    async def go() -> ImportReport:
        ledger = await Ledger.open(config.ledger.url)
        try:
            await ledger.upgrade()
            return await import_rows(ledger, rows, config)
        finally:
            await ledger.close()

    report = run(go())
    report.problems = sort_problems(problems + report.problems)
    for problem in report.problems:
        click.echo(problem, err=True)
    log.info("crosswalk_imported", added=report.added, unchanged=report.unchanged, rejected=report.rejected)
    click.echo(
        f"crosswalk import: {report.added} added, {report.unchanged} already present, "
        f"{report.rejected} not applied"
    )
    ctx.exit(report.exit_code)


@crosswalk.command("export")
@config_option
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def export_command(ctx: click.Context, file: str | None) -> None:
    """Write every crosswalk entry and link in force as CSV (to FILE, or stdout)."""
    config = load(ctx)

    async def go() -> str:
        ledger = await Ledger.open(config.ledger.url, create=False)
        try:
            await ledger.upgrade()
            return await export_csv(ledger)
        finally:
            await ledger.close()

    text = run(go())
    if file is None or file == "-":
        click.echo(text, nl=False)
    else:
        Path(file).write_text(text, encoding="utf-8")
        click.echo(f"crosswalk export: {text.count(chr(10)) - 1} rows written to {file}", err=True)
