"""``syncd demo``: sandboxes, daemon and a scripted story in one process (see :mod:`syncd.demo`)."""

from __future__ import annotations

import click

from syncd.cli.common import EXIT_CONFIG, config_option, load, run
from syncd.demo import DemoError, console_for, run_demo, workspace

__all__ = ["demo_command"]


@click.command("demo")
@config_option
@click.option("--keep", is_flag=True,
              help="Keep the temporary directory with the demo's SQLite ledger and JSON log.")
@click.pass_context
def demo_command(ctx: click.Context, keep: bool) -> None:
    """Start the sandboxes and the daemon in one process, seed realistic appointments, make scripted
    changes on several sides (a reschedule, a cancellation, a GET/PUT race, a patient change the EHR
    forbids, a missing crosswalk entry), show every sync decision live, print a summary; exit 0 when
    all five scripted outcomes hold, else 1.

    The config's connectors, groups and owners run against built-in sandboxes on free ports, with
    the sandboxes' own credentials, a 1-second poll interval and a fresh SQLite ledger in a temporary
    directory (removed afterwards unless --keep); the daemon's JSON log goes to a file there."""
    config = load(ctx, configure_logs=False)
    console = console_for()
    with workspace(keep) as (workdir, log_file):
        try:
            code = run(run_demo(config, console, workdir=workdir, log_file=log_file))
        except DemoError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        if keep:
            console.print(f"ledger and JSON log kept in {workdir}")
    ctx.exit(code)
