"""``syncd run``: the daemon (see :mod:`syncd.daemon`)."""

from __future__ import annotations

import click

from syncd.cli.common import EXIT_UNAVAILABLE, config_option, load, run
from syncd.daemon import AlreadyRunning, run_daemon

__all__ = ["run_command"]


@click.command("run")
@config_option
@click.pass_context
def run_command(ctx: click.Context) -> None:
    """Run the daemon: poll every connector on its interval, serve webhooks and /healthz, /readyz,
    /metrics, until SIGTERM/SIGINT; then stop intake, finish or hand back in-flight writes within 30 s
    and exit 0. Sends READY=1 / WATCHDOG=1 / STOPPING=1 to systemd when NOTIFY_SOCKET is set."""
    config = load(ctx)
    try:
        code = run(run_daemon(config))
    except AlreadyRunning as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)
    except OSError as exc:
        click.echo(f"error: cannot serve on {config.server.host}:{config.server.port}: {exc.strerror}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)
    ctx.exit(code)
