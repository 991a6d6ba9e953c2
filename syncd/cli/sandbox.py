"""``syncd sandbox``: serve the built-in vendor sandboxes until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from syncd import registry
from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    SyncdCommand,
    common_options,
    echo_json,
    fail,
    options,
)
from syncd.sandboxkit.serve import RunningSandbox, start_sandbox

__all__ = ["sandbox"]

ORDER = list(registry.types())
"""The vendors known when the CLI is loaded (the registry's order)."""


async def serve_sandboxes(
    vendors: list[str], host: str, port_base: int, *, rate_limits: bool = True
) -> list[RunningSandbox]:
    """Start ``vendors`` on ``port_base`` + the offset of their default port from the registry's first
    (the first vendor on ``port_base`` itself)."""
    started: list[RunningSandbox] = []
    first = registry.packages()[0].sandbox_port
    try:
        for vendor in vendors:
            port = port_base + registry.get(vendor).sandbox_port - first if port_base else 0
            options = {} if rate_limits else {"rate_limits": False}
            started.append(await start_sandbox(vendor, host=host, port=port, **options))
    except BaseException:
        for running in started:
            await running.stop()
        raise
    return started


def _port_help() -> str:
    """``"a on this port, b +1, ..."``: each vendor's offset from the first one's default port."""
    first = registry.packages()[0].sandbox_port
    offsets = [f"{t} +{registry.get(t).sandbox_port - first}" for t in ORDER[1:]]
    return f"{ORDER[0]} on this port, {', '.join(offsets)} (0: free ports)."


@click.command("sandbox", cls=SyncdCommand, exit_codes={
    EXIT_OK: "stopped by SIGINT/SIGTERM",
    EXIT_CONFIG: "usage error",
    EXIT_UNAVAILABLE: "a port cannot be bound",
})
@common_options
@click.option("--vendor", "vendors", multiple=True, type=click.Choice(ORDER), metavar="NAME",
              help=f"Serve only these vendors (repeatable): {', '.join(ORDER)}. Default: all of them.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port-base", default=8701, show_default=True, type=click.IntRange(0, 65531),
              help=_port_help())
@click.option("--no-rate-limits", is_flag=True, help="Turn the vendors' rate limits off (benchmarks).")
@click.pass_context
def sandbox(ctx: click.Context, vendors: tuple[str, ...], host: str, port_base: int, no_rate_limits: bool) -> None:
    """Serve the built-in vendor sandboxes (stateful fakes of the five vendor APIs) until Ctrl-C.

    Needs no config. Under --json one document with each sandbox's URL is printed once they serve."""
    chosen = [v for v in ORDER if v in vendors] if vendors else ORDER
    as_json = options(ctx).json

    async def main() -> None:
        try:
            running = await serve_sandboxes(chosen, host, port_base, rate_limits=not no_rate_limits)
        except OSError as exc:
            fail(ctx, "cannot_serve", f"error: cannot bind {host}: {exc.strerror or exc}", EXIT_UNAVAILABLE)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before saying we serve: a signal right after is handled
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if as_json:
            echo_json({"ok": True, "sandboxes": {rs.vendor: rs.url for rs in running}})
        else:
            for rs in running:
                click.echo(f"{rs.vendor:18} {rs.url}")
        click.echo("sandboxes running; Ctrl-C to stop", err=as_json)
        try:
            await stop.wait()
        finally:
            for rs in running:
                await rs.stop()
            click.echo("sandboxes stopped", err=as_json)

    asyncio.run(main())
