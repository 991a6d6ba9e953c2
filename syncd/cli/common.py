"""Shared pieces of the click commands: ``--config``, exit codes, config and ledger loading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from syncd.config import Config, load_config, resolve_config_path
from syncd.errors import EXIT_CONFIG, EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE
from syncd.logging import configure_logging

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_UNAVAILABLE",
    "config_option",
    "echo_json",
    "load",
    "run",
]

_CONFIG_KEY = "syncd.config_path"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[_CONFIG_KEY] = value


def config_option(func: F) -> F:
    """``--config PATH`` (else ``$SYNCD_CONFIG``, else ``./config.toml``), on any command or group."""
    option = click.option(
        "--config",
        "config_path",
        metavar="PATH",
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="Config file (default: $SYNCD_CONFIG, else ./config.toml).",
    )
    return option(func)


def load(ctx: click.Context, *, configure_logs: bool = True) -> Config:
    """Load and validate the config (raises ConfigError, turned into exit 2 by the main group)."""
    config = load_config(resolve_config_path(ctx.meta.get(_CONFIG_KEY)))
    if configure_logs:
        configure_logging(config.log.level, config.log.format)
    return config


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from a (synchronous) click command."""

    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def echo_json(document: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(document, sort_keys=True, default=str))
