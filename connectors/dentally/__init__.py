"""Dentally appointments: its declaration for the vendor registry (docs/architecture.md "Adding a vendor")."""

from __future__ import annotations

from syncd.vendor import ConfigKey, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    type="dentally",
    keys=(
        ConfigKey("access_token", sandbox="sandbox-token"),
        ConfigKey("user_agent", sandbox="syncd-demo/1.0 (ops@clinic.example)"),
    ),
    defaults=TypeDefaults(poll_interval=60.0, max_requests_per_second=1.0, timezone="Europe/London"),
    connector="connectors.dentally.connector:DentallyConnector",
    mapfuncs="connectors.dentally.mapfuncs",
    required_functions=("time_in", "time_out", "ref_in", "ref_out", "text_in", "text_out"),
    sandbox="connectors.dentally.sandbox",
    sandbox_port=8705,
    webhooks="generic",
    role="clinical",
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
