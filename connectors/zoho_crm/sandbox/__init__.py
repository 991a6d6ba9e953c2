"""Zoho CRM v7 Appointments sandbox (docs/vendors/zoho_crm.md); never imports the connector."""

from __future__ import annotations

from typing import Any

from connectors.zoho_crm.sandbox._sandbox import ZohoCrmSandbox
from connectors.zoho_crm.sandbox._seed import seed_body

__all__ = ["ZohoCrmSandbox", "create_sandbox", "seed_body"]


def create_sandbox(**options: Any) -> ZohoCrmSandbox:
    """A Zoho CRM sandbox with ``options`` over ``ZohoCrmSandbox.DEFAULT_OPTIONS``."""
    return ZohoCrmSandbox(**options)
