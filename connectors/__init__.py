"""Vendor connectors: one sub-package per vendor type (client, connector, webhook parsing, sandbox).

Each sub-package's ``__init__`` defines ``create_connector(config, *, state, **options)`` (importing its
connector code lazily, so that importing a sandbox never pulls in the connector) and
``load_vendor_mapping()`` (validates ``mappings/<type>.toml``).
"""

from __future__ import annotations

import importlib
from typing import Any

from syncd.config import CONNECTOR_TYPES, ConnectorConfig
from syncd.connector import Connector, StateStore
from syncd.errors import ConfigError

__all__ = ["create_connector", "validate_mappings"]


def create_connector(config: ConnectorConfig, *, state: StateStore | None = None, **options: Any) -> Connector:
    """Build the connector for ``config.type``. ``options``: ``max_rate_limit_wait`` (seconds; None =
    wait as long as the vendor asks), ``session`` (an aiohttp session the caller owns)."""
    module = importlib.import_module(f"connectors.{config.type}")
    connector: Connector = module.create_connector(config, state=state, **options)
    return connector


def validate_mappings(types: list[str] | None = None) -> list[str]:
    """Load every mapping file in use; return the problems (empty = all good)."""
    problems: list[str] = []
    for vendor in types or list(CONNECTOR_TYPES):
        module = importlib.import_module(f"connectors.{vendor}")
        try:
            module.load_vendor_mapping()
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems
