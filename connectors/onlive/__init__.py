"""Onlive Open API v2 appointments: its declaration for the vendor registry (docs/architecture.md "Adding a vendor")."""

from __future__ import annotations

from syncd.vendor import ConfigKey, SandboxFields, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    type="onlive",
    keys=(
        ConfigKey("access_key_id", sandbox="OLAK7Q2N4X9EXAMPLE"),
        ConfigKey("secret_access_key", sandbox="olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"),
    ),
    defaults=TypeDefaults(poll_interval=60.0, max_requests_per_second=1.0, timezone="UTC"),
    connector="connectors.onlive.connector:OnliveConnector",
    mapfuncs="connectors.onlive.mapfuncs",
    required_functions=("time_in", "time_out", "patient_in", "patient_out", "location_out"),
    sandbox="connectors.onlive.sandbox",
    sandbox_port=8704,
    webhooks="none",
    role="crm",
    log_secret_words=(r"olak\S*",),
    sandbox_fields=SandboxFields(
        service="serviceId",
        location="extraFields.location",
        start="startAt",
        reference="externalId",
    ),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
