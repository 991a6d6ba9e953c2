"""The one factory every vendor package uses: load its mapping, build its connector lazily.

A vendor's ``__init__`` declares a :class:`VendorPackage`; the connector module is imported only when a
connector is built, so importing a vendor's sandbox never pulls in its connector code.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from syncd.config import ConnectorConfig
from syncd.connector import Connector, StateStore
from syncd.mapping import VendorMapping, load_mapping

__all__ = ["VendorPackage"]


@dataclass(frozen=True)
class VendorPackage:
    vendor: str
    """the connector type (also the mapping file's name)"""
    connector: str
    """``module:Class`` of the connector; the class takes ``(config, mapping, *, state,
    max_rate_limit_wait, session)``"""
    mapfuncs: str
    """module exposing ``FUNCTIONS`` (name -> callable) and, unless ``native_statuses`` is given,
    ``NATIVE_STATUSES``"""
    required_functions: tuple[str, ...] = ()
    native_statuses: Collection[str] | None = None

    def load_mapping(self) -> VendorMapping:
        """Load and validate ``mappings/<vendor>.toml`` (ConfigError listing every problem)."""
        module = importlib.import_module(self.mapfuncs)
        statuses = self.native_statuses if self.native_statuses is not None else module.NATIVE_STATUSES
        return load_mapping(
            self.vendor,
            functions=module.FUNCTIONS,
            native_statuses=statuses,
            required_functions=self.required_functions,
        )

    def create_connector(
        self,
        config: ConnectorConfig,
        *,
        state: StateStore | None = None,
        max_rate_limit_wait: float | None = None,
        session: Any = None,
    ) -> Connector:
        """Build the connector for ``config`` (``session``: an aiohttp session the caller owns)."""
        module_name, _, class_name = self.connector.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        connector: Connector = cls(
            config, self.load_mapping(), state=state, max_rate_limit_wait=max_rate_limit_wait, session=session
        )
        return connector
