"""Start sandboxes in-process (tests, demo) or as a server (`syncd sandbox`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from syncd import registry
from syncd.sandboxkit.base import SandboxBase

# Which vendors have a sandbox, where its module is and its default port: the vendor registry
# (each declaration's ``sandbox`` module exposes ``create_sandbox(**options)``).


@dataclass
class RunningSandbox:
    vendor: str
    sandbox: SandboxBase
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


def make_sandbox(vendor: str, **options: Any) -> SandboxBase:
    package = registry.find(vendor)
    if package is None:
        raise KeyError(f"unknown vendor {vendor!r}; one of {', '.join(registry.types())}")
    return package.make_sandbox(**options)


async def start_sandbox(vendor: str, host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningSandbox:
    """Start one vendor sandbox on ``host:port`` (0 = a free port) and return it with its URL."""
    sandbox = make_sandbox(vendor, **options)
    app = sandbox.build_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    real_port = sockets[0].getsockname()[1] if sockets else port
    url = f"http://{host}:{real_port}"
    sandbox.base_url = url
    return RunningSandbox(vendor=vendor, sandbox=sandbox, runner=runner, url=url)
