"""Zoho CRM v7 Appointments sandbox (docs/vendors/zoho_crm.md); never imports the connector."""

from connectors.zoho_crm.sandbox.app import ZohoCrmSandbox, create_sandbox
from connectors.zoho_crm.sandbox.seed import seed_body

__all__ = ["ZohoCrmSandbox", "create_sandbox", "seed_body"]
