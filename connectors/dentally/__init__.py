"""Dentally appointments: connector factory and mapping loader.

Declared through :class:`connectors._factory.VendorPackage`: the connector code is imported only when a
connector is built, so importing the sandbox (``connectors.dentally.sandbox``) never pulls it in.
"""

from __future__ import annotations

from connectors._factory import VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    vendor="dentally",
    connector="connectors.dentally.connector:DentallyConnector",
    mapfuncs="connectors.dentally.mapfuncs",
    required_functions=("time_in", "time_out", "ref_in", "ref_out", "text_in", "text_out"),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
