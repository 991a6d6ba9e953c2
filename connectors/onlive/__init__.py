"""Onlive Open API v2 appointments: connector factory and mapping loader.

The connector code is imported inside :func:`create_connector` so that importing the sandbox
(``connectors.onlive.sandbox``) never pulls in connector code, and the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.config import ConnectorConfig
from syncd.connector import StateStore
from syncd.mapping import VendorMapping, load_mapping

if TYPE_CHECKING:
    import aiohttp

    from syncd.connector import Connector

__all__ = ["create_connector", "load_vendor_mapping"]

REQUIRED_FUNCTIONS = ("time_in", "time_out", "patient_in", "patient_out", "location_out")


def load_vendor_mapping() -> VendorMapping:
    """Load and validate ``mappings/onlive.toml`` (ConfigError listing every problem)."""
    from connectors.onlive.mapfuncs import FUNCTIONS, NATIVE_STATUSES

    return load_mapping(
        "onlive",
        functions=FUNCTIONS,
        native_statuses=NATIVE_STATUSES,
        required_functions=REQUIRED_FUNCTIONS,
    )


def create_connector(
    config: ConnectorConfig,
    *,
    state: StateStore | None = None,
    max_rate_limit_wait: float | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Connector:
    """Build the Onlive connector for ``config``."""
    from connectors.onlive.connector import OnliveConnector

    return OnliveConnector(
        config,
        load_vendor_mapping(),
        state=state,
        max_rate_limit_wait=max_rate_limit_wait,
        session=session,
    )
