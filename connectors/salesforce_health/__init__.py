"""Salesforce Health Cloud.

Its declaration for the vendor registry is ``vendor.toml`` (docs/architecture.md "Adding a vendor").
"""

from __future__ import annotations

from syncd.vendor import VendorPackage

__all__ = ["PACKAGE"]

PACKAGE = VendorPackage.load(__name__, __file__)
