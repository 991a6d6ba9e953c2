"""Salesforce Health Cloud (``salesforce_health``): connector factory and mapping loader.

Declared through :class:`connectors._factory.VendorPackage`: the connector code is imported only when a
connector is built, so importing the sandbox (``connectors.salesforce_health.sandbox``) never pulls it in.
"""

from __future__ import annotations

from connectors._factory import VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    vendor="salesforce_health",
    connector="connectors.salesforce_health.connector:SalesforceHealthConnector",
    mapfuncs="connectors.salesforce_health.mapfuncs",
    required_functions=("time_in", "time_out", "status_in"),
    # StatusCategory API values and the standard Status labels (orgs relabel Status; syncd maps on the category)
    native_statuses=frozenset((
        "None", "Scheduled", "Dispatched", "InProgress", "Completed", "CannotComplete", "Canceled",
        "In Progress", "Cannot Complete",
    )),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
