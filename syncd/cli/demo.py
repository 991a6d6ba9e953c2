"""``syncd demo``: sandboxes, daemon and a scripted story in one process (the package :mod:`syncd.demo`)."""

from __future__ import annotations

import sys
import time

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    SyncdCommand,
    common_options,
    echo_json,
    fail,
    load,
    options,
    run,
)

__all__ = ["demo_command"]


@click.command("demo", cls=SyncdCommand, exit_codes={
    EXIT_OK: "all five scripted outcomes hold",
    EXIT_PARTIAL: "some scripted outcome did not hold (the summary names it)",
    EXIT_CONFIG: "usage or configuration error (e.g. no sync group with a CRM and an EHR)",
})
@common_options
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
    directory (removed afterwards unless --keep); the daemon's JSON log goes to a file there. Under
    --json the live view goes to stderr and stdout gets one document with the outcome."""
    # imported here: the demo package (sandboxes, story) stays out of every other command's start-up
    from syncd.demo import DemoError, console_for, run_demo, workspace

    config = load(ctx, configure_logs=False)
    as_json = options(ctx).json
    console = console_for(sys.stderr if as_json else None)
    started = time.monotonic()
    with workspace(keep) as (workdir, log_file):
        try:
            code = run(run_demo(config, console, workdir=workdir, log_file=log_file))
        except DemoError as exc:
            fail(ctx, "config_error", f"error: {exc}", EXIT_CONFIG)
        if keep:
            console.print(f"ledger and JSON log kept in {workdir}")
    if as_json:
        echo_json({"ok": code == EXIT_OK, "exit_code": code, "duration_s": round(time.monotonic() - started, 1),
                   "kept": str(workdir) if keep else None})
    ctx.exit(code)
