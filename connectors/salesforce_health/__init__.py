"""Salesforce Health Cloud: its declaration for the vendor registry (docs/architecture.md "Adding a vendor")."""

from __future__ import annotations

from syncd.vendor import ConfigKey, SandboxFields, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "create_connector", "load_vendor_mapping"]

PACKAGE = VendorPackage(
    type="salesforce_health",
    keys=(
        ConfigKey("token_url", sandbox="{url}/services/oauth2/token"),
        ConfigKey("client_id", sandbox="sandbox-client"),
        ConfigKey("client_secret", sandbox="sandbox-secret"),
        ConfigKey("refresh_token", sandbox="sandbox-refresh"),
        ConfigKey("api_version", sandbox="65.0"),
    ),
    defaults=TypeDefaults(poll_interval=60.0, max_requests_per_second=5.0, timezone="UTC"),
    connector="connectors.salesforce_health.connector:SalesforceHealthConnector",
    mapfuncs="connectors.salesforce_health.mapfuncs",
    required_functions=("time_in", "time_out", "status_in"),
    # StatusCategory API values and the standard Status labels (orgs relabel Status; syncd maps on the category)
    native_statuses=frozenset((
        "None", "Scheduled", "Dispatched", "InProgress", "Completed", "CannotComplete", "Canceled",
        "In Progress", "Cannot Complete",
    )),
    sandbox="connectors.salesforce_health.sandbox",
    sandbox_port=8701,
    webhooks="generic",
    role="crm",
    sandbox_fields=SandboxFields(
        service="WorkTypeId",
        location="ServiceTerritoryId",
        start="SchedStartTime",
        reference="Syncd_Id__c",
    ),
)
load_vendor_mapping = PACKAGE.load_mapping
create_connector = PACKAGE.create_connector
