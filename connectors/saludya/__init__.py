"""SaludYa appointments: its declaration for the vendor registry (docs/architecture.md "Adding a vendor")."""

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
