"""``syncd crosswalk import FILE`` / ``export [FILE]`` / ``remove KIND KEY CONNECTOR`` (docs/reference.md §3).

None of them needs a vendor secret: they touch the ledger only.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    LEDGER_UNAVAILABLE,
    SyncdGroup,
    common_options,
    echo_json,
    fail,
    load,
    open_ledger,
    options,
    run,
)
from syncd.crosswalk import (
    ImportReport,
    RemoveReport,
    export_csv,
    import_rows,
    parse_csv,
    remove_reference,
    sort_problems,
)
from syncd.errors import ConfigError
from syncd.logging import get_logger

__all__ = ["crosswalk", "read_csv_text"]

_LEDGER_CODES = {EXIT_UNAVAILABLE: LEDGER_UNAVAILABLE}


def read_csv_text(file: str) -> str:
    """The text of a crosswalk CSV (``-``: stdin), UTF-8 with or without Excel's byte-order mark."""
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        return raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        what = "not UTF-8 text (save it as \"CSV UTF-8\")" if isinstance(exc, UnicodeDecodeError) else (
            exc.strerror or type(exc).__name__)
        raise ConfigError([f"crosswalk: cannot read {file}: {what}"]) from None


@click.group("crosswalk", cls=SyncdGroup)
@common_options
def crosswalk() -> None:
    """Reference ids across systems (patients, practitioners, locations, services, appointments)."""


@crosswalk.command("import", exit_codes={
    EXIT_OK: "every row is in force (added now or already present)",
    EXIT_PARTIAL: "some rows were reported (one per line on stderr) and not applied; the others were",
    EXIT_CONFIG: "usage or configuration error, or the file cannot be read; nothing applied",
    **_LEDGER_CODES,
})
@common_options
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Report what the import would do; apply nothing.")
@click.option("--replace", is_flag=True,
              help="A patient, practitioner, location or service row replaces the rows it contradicts (to "
                   "correct a wrong row) instead of being reported. Appointment rows are never replaced.")
@click.pass_context
def import_command(ctx: click.Context, file: str, dry_run: bool, replace: bool) -> None:
    """Import a crosswalk CSV (idempotent; header kind,key,connector,external_id; UTF-8, Excel's "CSV
    UTF-8" too). Rows that are invalid or contradict what the ledger holds are reported one per line
    and not applied (exit 1); the others are applied."""
    config = load(ctx, secrets=False)
    log = get_logger("syncd.crosswalk")
    rows, problems = parse_csv(read_csv_text(file), config.connectors)

    async def go() -> ImportReport:
        async with open_ledger(config, create=not dry_run, upgrade=not dry_run) as ledger:
            return await import_rows(ledger, rows, config, replace=replace, dry_run=dry_run)

    report = run(go())
    report.problems = sort_problems(problems + report.problems)
    for problem in report.problems:
        click.echo(problem, err=True)
    log.info("crosswalk_imported", added=report.added, unchanged=report.unchanged, rejected=report.rejected,
             dry_run=dry_run)
    if options(ctx).json:
        echo_json({"ok": report.exit_code == EXIT_OK, "dry_run": dry_run, "added": report.added,
                   "replaced": report.replaced, "unchanged": report.unchanged, "not_applied": report.rejected,
                   "problems": report.problems})
    else:
        head = "crosswalk import (dry run, nothing applied)" if dry_run else "crosswalk import"
        replaced = f", {report.replaced} replaced" if replace else ""
        click.echo(f"{head}: {report.added} added{replaced}, {report.unchanged} already present, "
                   f"{report.rejected} not applied")
    ctx.exit(report.exit_code)


@crosswalk.command("export", exit_codes={
    EXIT_OK: "every entry and link in force was written",
    EXIT_CONFIG: "usage or configuration error",
    **_LEDGER_CODES,
})
@common_options
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def export_command(ctx: click.Context, file: str | None) -> None:
    """Write every crosswalk entry and link in force as CSV (to FILE, or stdout); --json prints the rows
    as one JSON document instead (when FILE is given, the CSV still goes there)."""
    config = load(ctx, secrets=False)

    async def go() -> str:
        async with open_ledger(config) as ledger:
            return await export_csv(ledger)

    text = run(go())
    rows = list(csv.DictReader(io.StringIO(text)))
    to_file = file is not None and file != "-"
    if to_file:
        assert file is not None
        try:
            Path(file).write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(ctx, "config_error", f"crosswalk: cannot write {file}: {exc.strerror or type(exc).__name__}",
                 EXIT_CONFIG)
    if options(ctx).json:
        echo_json({"crosswalk": rows, "file": file if to_file else None})
    elif to_file:
        if not options(ctx).quiet:
            click.echo(f"crosswalk export: {len(rows)} rows written to {file}", err=True)
    else:
        click.echo(text, nl=False)


@crosswalk.command("remove", exit_codes={
    EXIT_OK: "the row was removed (or, with --dry-run, would be)",
    EXIT_PARTIAL: "no such row, or an appointment row (which is never removed); nothing changed",
    EXIT_CONFIG: "usage or configuration error",
    **_LEDGER_CODES,
})
@common_options
@click.argument("kind", type=click.Choice(["patient", "practitioner", "location", "service", "appointment"]))
@click.argument("key")
@click.argument("connector")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.pass_context
def remove_command(ctx: click.Context, kind: str, key: str, connector: str, dry_run: bool) -> None:
    """Remove a wrong reference row: KIND (patient, practitioner, location, service) KEY on CONNECTOR.
    Import the right row afterwards (or use `crosswalk import --replace FILE` to do both at once).

    Records already dead-lettered for the missing row need `syncd deadletters retry` once it is right.
    """
    config = load(ctx, secrets=False)
    if connector not in config.connectors:
        raise click.BadParameter(f"{connector!r} is not a configured connector", param_hint="CONNECTOR")

    async def go() -> RemoveReport:
        async with open_ledger(config) as ledger:
            return await remove_reference(ledger, kind, key, connector, dry_run=dry_run)

    report = run(go())
    code = EXIT_OK if report.problem is None else EXIT_PARTIAL
    if options(ctx).json:
        # the external id is left out: a patient's may be an e-mail address (some vendors)
        echo_json({"ok": code == EXIT_OK, "dry_run": dry_run, "removed": [
            {"kind": e.kind, "key": e.key, "connector": e.connector} for e in report.removed],
            "problem": report.problem})
    elif report.problem is not None:
        click.echo(f"crosswalk remove: {report.problem}", err=True)
    else:
        verb = "would remove" if dry_run else "removed"
        for entry in report.removed:
            click.echo(f"crosswalk remove: {verb} {entry.kind} {entry.key} on {entry.connector}")
    ctx.exit(code)
