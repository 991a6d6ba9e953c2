"""``syncd run``: the daemon (see :mod:`syncd.daemon`)."""

from __future__ import annotations

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    SyncdCommand,
    common_options,
    echo_json,
    fail,
    load,
    options,
    run,
)
from syncd.daemon import AlreadyRunning, run_daemon
from syncd.runtime import new_ledger_notice

__all__ = ["run_command"]


@click.command("run", cls=SyncdCommand, exit_codes={
    EXIT_OK: "stopped by SIGTERM/SIGINT after finishing or handing back in-flight work",
    EXIT_CONFIG: "usage or configuration error, nothing started",
    EXIT_UNAVAILABLE: "could not start: ledger unreachable, another `syncd run` holds this SQLite ledger, or the "
    "server address cannot be bound",
})
@common_options
@click.pass_context
def run_command(ctx: click.Context) -> None:
    """Run the daemon: poll every connector on its interval, serve webhooks and /healthz, /readyz,
    /metrics, /openapi.json (and the operator console at /console/ when [server] console_token is set),
    until SIGTERM/SIGINT; then stop intake, finish or hand back in-flight writes within 30 s and exit 0.
    Sends READY=1 / WATCHDOG=1 / STOPPING=1 to systemd when NOTIFY_SOCKET is set.

    /readyz answers 503 while a connector is failing: 3 polls in a row failed, or the vendor refused
    its credentials. Under --json one document is printed when the daemon stops."""
    config = load(ctx)
    try:
        code = run(run_daemon(config, on_new_ledger=lambda where: click.echo(new_ledger_notice(where), err=True)))
    except AlreadyRunning as exc:
        fail(ctx, "already_running", f"error: {exc}", EXIT_UNAVAILABLE)
    except OSError as exc:
        where = f"{config.server.host}:{config.server.port}"
        fail(ctx, "cannot_serve", f"error: cannot serve on {where}: {exc.strerror or type(exc).__name__} "
             "(check [server] host and port)", EXIT_UNAVAILABLE)
    if options(ctx).json:
        echo_json({"ok": code == EXIT_OK, "exit_code": code})
    ctx.exit(code)
