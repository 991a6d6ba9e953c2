"""Vendor connectors: one sub-package per vendor type (client, connector, webhook parsing, sandbox).

Each sub-package's ``__init__`` declares its :class:`syncd.vendor.VendorPackage` as ``PACKAGE``;
:data:`PACKAGES` lists them, and :mod:`syncd.registry` reads that list (adding a vendor: its folder
and one line here; docs/architecture.md "Adding a vendor").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors import dentally, onlive, salesforce_health, saludya, zoho_crm
from syncd.vendor import VendorPackage

if TYPE_CHECKING:
    from syncd.config import ConnectorConfig
    from syncd.connector import Connector, StateStore

__all__ = ["PACKAGES", "create_connector"]

PACKAGES: tuple[VendorPackage, ...] = (
    salesforce_health.PACKAGE,
    zoho_crm.PACKAGE,
    saludya.PACKAGE,
    onlive.PACKAGE,
    dentally.PACKAGE,
)
"""The built-in vendors, in the order ``syncd sandbox`` numbers their ports."""


def create_connector(config: ConnectorConfig, *, state: StateStore | None = None, **options: Any) -> Connector:
    """Build the connector for ``config.type`` (a built-in vendor; syncd itself builds through
    :func:`syncd.registry.create_connector`). ``options``: ``max_rate_limit_wait``, ``session``."""
    for package in PACKAGES:
        if package.type == config.type:
            return package.create_connector(config, state=state, **options)
    raise KeyError(f"unknown vendor type {config.type!r}")
