"""A vendor sandbox, or a local webhook receiver, for the length of a ``with`` block."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from syncd.sandboxkit import RunningSandbox, start_sandbox


@asynccontextmanager
async def sandbox_serving(vendor: str, host: str = "127.0.0.1", port: int = 0, **options: Any
                          ) -> AsyncIterator[RunningSandbox]:
    """:func:`start_sandbox` (the same arguments), stopped on the way out."""
    running = await start_sandbox(vendor, host, port, **options)
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def serving(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """``app`` served on a free local port (over TLS with ``ssl_context``); yields its base URL
    (``http://127.0.0.1:PORT``, the scheme is always http) and stops it on the way out."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving_hook(path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> AsyncIterator[str]:
    """:func:`serving` an app whose POST ``path`` is ``handler``."""
    app = web.Application()
    app.router.add_post(path, handler)
    async with serving(app) as base:
        yield base
