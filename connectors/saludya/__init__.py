"""SaludYa appointments: the vendor declaration.

Config keys, defaults (docs/vendors/saludya.md §1), the connector, the mapping, the sandbox and the webhook
scheme, declared once as a :class:`syncd.vendor.VendorPackage` and listed in ``connectors/__init__.py``.
The connector and sandbox modules are imported only when one is built, so importing the sandbox
(``connectors.saludya.sandbox``) never pulls in the connector.
"""

from __future__ import annotations

from syncd.vendor import ConfigKey, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    type="saludya",
    keys=(ConfigKey("api_key", sandbox="sandbox-key"),),
    defaults=TypeDefaults(poll_interval=300.0, max_requests_per_second=0.08, timezone=None),
    connector="connectors.saludya.connector:SaludYaConnector",
    mapfuncs="connectors.saludya.mapfuncs",
    required_functions=("time_in", "time_out", "duration_out", "notes_in", "notes_out"),
    sandbox="connectors.saludya.sandbox",
    sandbox_port=8703,
    webhooks="none",
    role="clinical",
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
