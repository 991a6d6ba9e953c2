"""A vendor sandbox for the length of a ``with`` block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
