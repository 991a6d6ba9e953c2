"""Zoho CRM (``Appointments__s``): its declaration for the vendor registry (docs/architecture.md "Adding a vendor")."""

from __future__ import annotations

from syncd.vendor import ConfigKey, SandboxFields, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    type="zoho_crm",
    keys=(
        ConfigKey("accounts_url", sandbox="{url}"),
        ConfigKey("client_id", sandbox="sandbox-client"),
        ConfigKey("client_secret", sandbox="sandbox-secret"),
        ConfigKey("refresh_token", sandbox="sandbox-refresh"),
    ),
    defaults=TypeDefaults(poll_interval=120.0, max_requests_per_second=2.0, timezone="UTC"),
    connector="connectors.zoho_crm.connector:ZohoCrmConnector",
    mapfuncs="connectors.zoho_crm.mapfuncs",
    required_functions=("time_in", "time_out", "patient_in", "patient_out", "cancellation_who"),
    sandbox="connectors.zoho_crm.sandbox",
    sandbox_port=8702,
    webhooks="vendor",
    role="crm",
    log_secret_words=("zoho-oauthtoken",),
    sandbox_fields=SandboxFields(
        service="Service_Name.id",
        location="Location",
        start="Appointment_Start_Time",
        reference="Syncd_Id",
    ),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
