"""Zoho CRM appointments (``Appointments__s``): connector factory and mapping loader.

Declared through :class:`connectors._factory.VendorPackage`: the connector code is imported only when a
connector is built, so importing the sandbox (``connectors.zoho_crm.sandbox``) never pulls it in.
"""

from __future__ import annotations

from connectors._factory import VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    vendor="zoho_crm",
    connector="connectors.zoho_crm.connector:ZohoCrmConnector",
    mapfuncs="connectors.zoho_crm.mapfuncs",
    required_functions=("time_in", "time_out", "patient_in", "patient_out", "cancellation_who"),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
