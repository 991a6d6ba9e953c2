"""The vendor registry: the one list of vendor types syncd knows (composition root).

The built-in declarations come from :data:`connectors.PACKAGES` (one :class:`syncd.vendor.VendorPackage`
per ``connectors/<type>/``); :func:`register` adds another at run time (a plug-in, or a test's
throwaway vendor). Config validation, check-config, the sandbox server and the demo all ask here, so
adding a vendor touches ``connectors/<type>/`` and one line of ``connectors/__init__.py``
(docs/architecture.md "Adding a vendor"). This is the only module of ``syncd`` that imports
``connectors``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import connectors
from syncd.errors import ConfigError
from syncd.vendor import VendorPackage

if TYPE_CHECKING:  # config imports the registry: only the type names here
    from syncd.config import ConnectorConfig
    from syncd.connector import Connector, StateStore

__all__ = [
    "auth_keys",
    "create_connector",
    "find",
    "get",
    "packages",
    "register",
    "registered",
    "types",
    "unregister",
    "validate_mappings",
]

_added: dict[str, VendorPackage] = {}


def packages() -> tuple[VendorPackage, ...]:
    """Every declared vendor: the built-in ones in their listed order, then those registered."""
    return tuple(connectors.PACKAGES) + tuple(_added.values())


def types() -> tuple[str, ...]:
    return tuple(package.type for package in packages())


def find(vendor_type: str) -> VendorPackage | None:
    for package in packages():
        if package.type == vendor_type:
            return package
    return None


def get(vendor_type: str) -> VendorPackage:
    package = find(vendor_type)
    if package is None:
        raise KeyError(f"unknown vendor type {vendor_type!r}; one of {', '.join(types())}")
    return package


def auth_keys() -> dict[str, tuple[str, ...]]:
    """Vendor type -> its secret config keys (each held as a Secret)."""
    return {package.type: package.secret_keys for package in packages()}


def register(package: VendorPackage) -> None:
    """Add ``package`` to the registry (ValueError if its type is taken)."""
    if find(package.type) is not None:
        raise ValueError(f"vendor type {package.type!r} is already registered")
    _added[package.type] = package


def unregister(vendor_type: str) -> None:
    """Remove a vendor added by :func:`register` (the built-in ones stay)."""
    _added.pop(vendor_type, None)


@contextmanager
def registered(package: VendorPackage) -> Iterator[VendorPackage]:
    """``package`` registered for the duration of the ``with`` block."""
    register(package)
    try:
        yield package
    finally:
        unregister(package.type)


def create_connector(
    config: ConnectorConfig,
    *,
    state: StateStore | None = None,
    max_rate_limit_wait: float | None = None,
    session: Any = None,
) -> Connector:
    """Build the connector for ``config.type`` (``max_rate_limit_wait``: seconds, None = wait as long
    as the vendor asks; ``session``: an aiohttp session the caller owns)."""
    return get(config.type).create_connector(
        config, state=state, max_rate_limit_wait=max_rate_limit_wait, session=session
    )


def validate_mappings(vendor_types: list[str] | None = None) -> list[str]:
    """Load every mapping file in use; return the problems (empty = all good)."""
    problems: list[str] = []
    for vendor_type in vendor_types or list(types()):
        try:
            get(vendor_type).load_mapping()
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems
