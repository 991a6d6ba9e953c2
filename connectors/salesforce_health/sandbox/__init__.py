"""Salesforce Health Cloud sandbox (docs/vendors/salesforce_health.md, default port 8701)."""

from connectors.salesforce_health.sandbox.app import SalesforceHealthSandbox, create_sandbox
from connectors.salesforce_health.sandbox.seed import seed_body

__all__ = ["SalesforceHealthSandbox", "create_sandbox", "seed_body"]
