"""Salesforce Health Cloud (``salesforce_health``): connector factory and mapping loader.

The connector modules are imported inside the functions, so importing the sandbox
(``connectors.salesforce_health.sandbox``) never pulls in connector code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import ConnectorConfig
    from syncd.connector import Connector, StateStore
    from syncd.mapping import VendorMapping

__all__ = ["create_connector", "load_vendor_mapping"]


def load_vendor_mapping() -> VendorMapping:
    """Load and validate ``mappings/salesforce_health.toml``."""
    from connectors.salesforce_health.mapfuncs import FUNCTIONS
    from syncd.mapping import load_mapping

    categories = ("None", "Scheduled", "Dispatched", "InProgress", "Completed", "CannotComplete", "Canceled")
    values = ("None", "Scheduled", "Dispatched", "In Progress", "Completed", "Cannot Complete", "Canceled")
    return load_mapping(
        "salesforce_health",
        functions=FUNCTIONS,
        native_statuses=set(categories) | set(values),
        required_functions=("time_in", "time_out", "status_in"),
    )


def create_connector(
    config: ConnectorConfig,
    *,
    state: StateStore | None = None,
    max_rate_limit_wait: float | None = None,
    session: Any = None,
) -> Connector:
    from connectors.salesforce_health.connector import SalesforceHealthConnector

    return SalesforceHealthConnector(
        config, load_vendor_mapping(), state=state, max_rate_limit_wait=max_rate_limit_wait, session=session
    )
