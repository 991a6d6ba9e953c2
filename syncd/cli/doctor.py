"""``syncd doctor [--connector NAME]... [--json]``: is every connector set up the way syncd needs it?

Per connector (side by side): reach the base URL, authenticate, check the fields, scopes, permissions
and webhook set-up its vendor needs, read one page; for each check that does not pass, what to
change and where (the config key, or the vendor setting). Never writes to a vendor. The checks live
with each connector (``Connector.diagnose``); :mod:`syncd.doctor` runs them.
"""

from __future__ import annotations

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
from syncd.config import Config
from syncd.connector import CheckStatus, Connector, MemoryStateStore, StateStore
from syncd.doctor import ConnectorDiagnosis, DoctorReport, run_doctor
from syncd.errors import ConfigError
from syncd.ledger.store import Ledger, LedgerUnavailable
from syncd.registry import create_connector
from syncd.runtime import check_mappings

__all__ = ["doctor"]

_MARK = {
    CheckStatus.OK: "ok",
    CheckStatus.FAILED: "FAILED",
    CheckStatus.UNREACHABLE: "UNREACHABLE",
    CheckStatus.WARNING: "warning",
    CheckStatus.SKIPPED: "skipped",
}


async def diagnose(config: Config, names: list[str], on_done: Any = None) -> DoctorReport:
    """Open the ledger for the connectors' own state (a rotated refresh token, a watch
    channel), without creating or migrating it; without a ledger, in-memory state and a note."""
    notes: list[str] = []
    ledger: Ledger | None = None
    try:
        ledger = await Ledger.open(config.ledger.url, create=False)
        if await ledger.revision() != Ledger.head_revision():
            notes.append("the ledger is not at the newest schema (run `syncd db upgrade`): its connector state "
                         "was not used")
            await ledger.close()
            ledger = None
    except LedgerUnavailable as exc:
        notes.append(f"connector state from the ledger not used: {exc}")
        ledger = None
    states: dict[str, StateStore] = {
        name: ledger.state_store(name) if ledger is not None else MemoryStateStore() for name in names
    }

    def build(name: str, state: StateStore | None) -> Connector:
        return create_connector(config.connectors[name], state=state)

    try:
        report = await run_doctor(config, names, build, states=states, on_done=on_done)
    finally:
        if ledger is not None:
            await ledger.close()
    report.notes.extend(notes)
    return report


@click.command("doctor", cls=SyncdCommand, exit_codes={
    EXIT_OK: "every check passed (warnings and checks that cannot be made from here allowed)",
    EXIT_PARTIAL: "something syncd needs is missing or wrong (a field, a scope, a setting): see each fix",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: "a connector cannot be reached or its credentials are refused (URL, cause and config "
    "key are named)",
})
@common_options
@click.option("--connector", "connector_names", multiple=True, metavar="NAME",
              help="Only check these connectors (repeatable; default: all).")
@click.pass_context
def doctor(ctx: click.Context, connector_names: tuple[str, ...]) -> None:
    """Check each connector's set-up: reach the vendor, authenticate, the fields, scopes, permissions
    and webhook set-up syncd needs, one page read; say what to change and where for each check that
    does not pass. Makes no write to any vendor (a few read requests each)."""
    config = load(ctx)
    unknown = [n for n in connector_names if n not in config.connectors]
    if unknown:
        raise ConfigError([f"--connector: {n!r} is not a configured connector" for n in unknown])
    check_mappings(config)
    names = list(dict.fromkeys(connector_names)) or list(config.connectors)
    verbose = options(ctx).verbose
    with progress(ctx, "doctor") as bar:
        finished: list[str] = []

        def on_done(result: ConnectorDiagnosis) -> None:
            finished.append(result.name)
            bar.update(f"{len(finished)}/{len(names)} connectors checked")

        report = run(diagnose(config, names, on_done))
    if options(ctx).json:
        echo_json(report.as_dict())
        ctx.exit(report.exit_code)
    for name in names:
        result = report.connectors[name]
        verdict = {EXIT_OK: "ok", EXIT_PARTIAL: "something is missing", EXIT_UNAVAILABLE: "cannot connect"}
        click.echo(f"{name} ({result.type}): {verdict[result.exit_code]}")
        for check in result.checks:
            if check.status is CheckStatus.SKIPPED and not verbose and check.fix is None:
                continue
            click.echo(f"  [{_MARK[check.status]}] {check.name}: {check.detail}")
            if check.fix and check.status is not CheckStatus.OK:
                click.echo(f"      fix: {check.fix}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    ctx.exit(report.exit_code)
