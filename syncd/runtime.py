"""The composition root: the one place that builds a ledger and the configured connectors (from the
vendor registry, :mod:`syncd.registry`) for the daemon, the CLI and the console, and closes them again.

The engine (:mod:`syncd.engine`) is handed what this builds and never imports a vendor package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from syncd.config import Config
from syncd.connector import Connector
from syncd.errors import ConfigError
from syncd.ledger.store import Ledger, ledger_location
from syncd.logging import get_logger
from syncd.registry import create_connector, validate_mappings

__all__ = ["Runtime", "check_mappings", "ledger_for", "new_ledger_notice", "open_runtime", "runtime_for"]

log = get_logger("syncd.runtime")


@dataclass
class Runtime:
    config: Config
    ledger: Ledger
    connectors: dict[str, Connector]
    ledger_created: bool = False
    """The ledger had no schema when this runtime opened it: a new, empty ledger was created."""

    async def close(self) -> None:
        for connector in self.connectors.values():
            await connector.close()
        await self.ledger.close()


def check_mappings(config: Config) -> None:
    """Every mapping file in use loads and validates (a ConfigError otherwise)."""
    problems = validate_mappings(sorted({c.type for c in config.connectors.values()}))
    if problems:
        raise ConfigError(problems)


def new_ledger_notice(where: str) -> str:
    """What ``resync`` and ``run`` say on stderr when they create the ledger they were pointed at."""
    return (f"syncd: no ledger at {where}: creating a NEW, empty ledger there. If syncd ran before, check "
            "--config and [ledger] url (a relative SQLite path is resolved against the config file's "
            "directory). Appointments the systems already hold are linked to each other, not copied "
            "(onboarding); creates into a system wait until its window has been read once.")


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    max_rate_limit_wait: float | None = None,
    upgrade: bool = True,
    on_new_ledger: Callable[[str], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Open the ledger (creating or upgrading its schema) and build every configured connector; on
    exit the connectors are closed, then the ledger (in reverse order of opening, whatever failed).

    A ledger without a schema (a missing SQLite file, an empty PostgreSQL database) is created, as
    docs/reference.md §4 says ``run`` and ``resync`` do; that is logged (``ledger_created``) and handed to
    ``on_new_ledger`` with where it is, so the command can say so plainly."""
    check_mappings(config)
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(config.ledger.url)
        stack.push_async_callback(ledger.close)
        runtime = Runtime(config, ledger, {})
        if upgrade:
            if await ledger.revision() is None:
                runtime.ledger_created = True
                where = ledger_location(config.ledger.url)
                log.warning("ledger_created", path=where)
                if on_new_ledger is not None:
                    on_new_ledger(where)
            await ledger.upgrade()
        for name, cfg in config.connectors.items():
            connector = create_connector(cfg, state=ledger.state_store(name), max_rate_limit_wait=max_rate_limit_wait)
            stack.push_async_callback(connector.close)
            runtime.connectors[name] = connector
        yield runtime


@asynccontextmanager
async def runtime_for(config: Config, runtime: Runtime | None, **options: Any) -> AsyncIterator[Runtime]:
    """``runtime`` itself when given (the daemon's ledger and connectors, left open), else a runtime
    opened for this call and closed after it (the CLI)."""
    if runtime is not None:
        yield runtime
        return
    async with open_runtime(config, **options) as opened:
        yield opened


@asynccontextmanager
async def ledger_for(config: Config, runtime: Runtime | None) -> AsyncIterator[Ledger]:
    """The runtime's ledger when given, else the configured one opened for this call (it must exist)."""
    if runtime is not None:
        yield runtime.ledger
        return
    opened = await Ledger.open(config.ledger.url, create=False)
    try:
        yield opened
    finally:
        await opened.close()
