"""Onlive Open API v2 appointments: connector factory and mapping loader.

Declared through :class:`connectors._factory.VendorPackage`: the connector code is imported only when a
connector is built, so importing the sandbox (``connectors.onlive.sandbox``) never pulls it in.
"""

from __future__ import annotations

from connectors._factory import VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    vendor="onlive",
    connector="connectors.onlive.connector:OnliveConnector",
    mapfuncs="connectors.onlive.mapfuncs",
    required_functions=("time_in", "time_out", "patient_in", "patient_out", "location_out"),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
