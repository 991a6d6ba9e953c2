"""The Salesforce Health Cloud connector (docs/vendors/salesforce_health.md §1-§9).

Reads ``ServiceAppointment`` rows through the REST API (composite batch read of 200 + one
AssignedResource query per batch for the practitioner), detects changes with the ``updated/`` and
``deleted/`` replication feeds (window reconciliation by SOQL when there is no usable cursor), and
writes through the IAM Connect API (POST create, PUT update, PATCH cancel) plus small sObject
PATCHes for ``Status``, ``Comments``, ``Description`` and ``Syncd_Id__c``. This module holds its
capabilities, rules and webhooks; ``reads.py``, ``writes.py``, ``create.py`` and ``doctor.py`` the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from connectors.salesforce_health.client import SalesforceClient
from connectors.salesforce_health.doctor import SalesforceDoctor
from connectors.salesforce_health.options import SalesforceOptions
from connectors.salesforce_health.rules import write_refusal
from connectors.salesforce_health.webhook import parse as parse_delivery
from syncd.connector import Capabilities, Remedy, WebhookDelivery
from syncd.connectorkit import HttpSetup
from syncd.errors import AuthFailure, VendorError
from syncd.model import Appointment

__all__ = ["SalesforceHealthConnector"]


_REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner", "location", "service_type"})


log = structlog.get_logger(__name__)


class SalesforceHealthConnector(SalesforceDoctor):
    """One Salesforce Health Cloud org, as syncd's core sees it."""

    options_type = SalesforceOptions

    def setup(self) -> None:
        self.options = dict(self.mapping.options)
        self.fields = list(self.settings.api_fields)
        self.batch = self.settings.batch_read_size
        self._unstamped = set()
        self.capabilities = Capabilities(
            webhooks=True,
            batch_read_size=self.batch,
            # every canonical field has a field syncd writes (docs/vendors/salesforce_health.md §9), so
            # nothing is declared not stored or read-only. A create needs a Patient, a Facility and a
            # Practitioner participant and a workTypeId, besides its times (§4)
            required_on_create=_REQUIRED_ON_CREATE,
        )

    def connect(self, http: HttpSetup) -> SalesforceClient:
        return SalesforceClient(self.config, http, state=self.state, options=self.options)

    # -- the rest --------------------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        # every change can be made in place (the patient too: ParentRecordId follows the PUT)
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapping, current, desired)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        return parse_delivery(secret, headers, body, now=now)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        usage = self.client.api_usage
        return {
            "subscription": "not needed",
            "webhooks": "org Flow callout, generic signature" if self.config.webhook_secret else "disabled",
            "api_usage": f"{usage[0]}/{usage[1]}" if usage else None,
            **self.client.http.stats(),
        }

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/salesforce_health.md §1, §3, §6, §7) ---
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        token_url = self.config.auth_value("token_url")
        if error.url is not None and error.url.startswith(token_url.split("?")[0]) and error.status is None:
            return Remedy(f"{key}.token_url")
        if not isinstance(error, AuthFailure):
            return None
        field = self.mapping.fields["reference"]
        by_code = {
            "invalid_grant": Remedy(
                f"{key}.refresh_token",
                "the refresh token is revoked or expired: authorise "
                "the connected app again and put the new refresh token in the config",
            ),
            "invalid_client_id": Remedy(
                f"{key}.client_id", "Salesforce does not know this connected app's consumer key"
            ),
            "invalid_client": Remedy(f"{key}.client_secret", "the consumer secret does not match the connected app"),
            "INVALID_SESSION_ID": Remedy(
                f"{key}.refresh_token",
                "a fresh access token was refused too: check the "
                "connected app's OAuth policies and the integration user",
            ),
            "INSUFFICIENT_ACCESS": Remedy(
                None,
                "the integration user lacks a permission or the Health Cloud "
                "licence (permission set for Intelligent Appointment Management)",
            ),
            "FUNCTIONALITY_NOT_ENABLED": Remedy(None, "Health Cloud appointment management is not enabled in this org"),
            "INVALID_FIELD": Remedy(
                None,
                f"create the custom field {field} on ServiceAppointment (Text 64, "
                "External ID, Unique) and give the integration user read and edit access "
                "to it (field-level security)",
            ),
        }
        return by_code.get(error.code or "", Remedy(f"{key}.refresh_token"))
