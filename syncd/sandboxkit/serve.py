"""Start sandboxes in-process (tests, demo) or as a server (`syncd sandbox`)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from syncd.sandboxkit.base import SandboxBase

#: vendor type -> (module, default port) ; each module exposes ``create_sandbox(**options)``
SANDBOXES: dict[str, tuple[str, int]] = {
    "salesforce_health": ("connectors.salesforce_health.sandbox", 8701),
    "zoho_crm": ("connectors.zoho_crm.sandbox", 8702),
    "saludya": ("connectors.saludya.sandbox", 8703),
    "onlive": ("connectors.onlive.sandbox", 8704),
    "dentally": ("connectors.dentally.sandbox", 8705),
}


@dataclass
class RunningSandbox:
    vendor: str
    sandbox: SandboxBase
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


def make_sandbox(vendor: str, **options: Any) -> SandboxBase:
    if vendor not in SANDBOXES:
        raise KeyError(f"unknown vendor {vendor!r}; one of {', '.join(SANDBOXES)}")
    module = importlib.import_module(SANDBOXES[vendor][0])
    sandbox: SandboxBase = module.create_sandbox(**options)
    return sandbox


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
