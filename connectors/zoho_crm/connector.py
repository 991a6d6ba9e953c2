"""The Zoho CRM connector (docs/vendors/zoho_crm.md): capabilities, rules, webhooks and watch channels.

Reads, writes and the doctor's checks are in ``reads.py``, ``writes.py`` and ``doctor.py``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.zoho_crm.client import ZohoClient
from connectors.zoho_crm.doctor import STATE_CHANNEL, STATE_EXPIRY, ZohoDoctor
from connectors.zoho_crm.mapfuncs import ZohoMapper, utc_to_zoho_time, zoho_time_to_utc
from connectors.zoho_crm.options import ZohoOptions
from connectors.zoho_crm.reads import _READ_ONLY
from connectors.zoho_crm.rules import write_refusal
from connectors.zoho_crm.webhook import parse_callback
from syncd.connector import Capabilities, Remedy, WebhookDelivery
from syncd.connectorkit import HttpSetup
from syncd.errors import AuthFailure, MappingError, Rejected, VendorError
from syncd.model import Appointment

__all__ = ["STATE_CHANNEL", "STATE_EXPIRY", "ZohoCrmConnector"]


log = structlog.get_logger(__name__)


#: the scopes the refresh token needs (docs/vendors/zoho_crm.md §1)
_NEEDED_SCOPES = ("ZohoCRM.modules.appointments.ALL", "ZohoCRM.notifications.ALL", "ZohoCRM.settings.READ")


#: the create column's mandatory keys syncd fills from the appointment: Appointment_For, Owner,
#: Service_Name, Appointment_Start_Time (docs/vendors/zoho_crm.md §4; Location defaults to Business Address)
_REQUIRED_ON_CREATE = frozenset({"start", "patient", "practitioner", "service_type"})


class ZohoCrmConnector(ZohoDoctor):
    """One Zoho CRM org's appointments, as the core sees them."""

    options_type = ZohoOptions

    def setup(self) -> None:
        self.mapper = ZohoMapper(self.mapping)
        self.read_batch = self.settings.batch_read_size
        self.write_batch = self.settings.batch_write_size
        self.search_lag_s = self.settings.search_lag_s
        self.capabilities = Capabilities(
            webhooks=True,
            batch_read_size=self.read_batch,
            batch_write_size=self.write_batch,
            subscription=True,
            replace_reason=str(self.mapping.defaults["replace_reason"]),
            read_only=_READ_ONLY,
            required_on_create=_REQUIRED_ON_CREATE,
        )
        self._prefs = None
        self._prefs_at = 0.0
        self._subscribed = False

    def connect(self, http: HttpSetup) -> ZohoClient:
        return ZohoClient(self.config, self.options, http, state=self.state)

    # -- replace flow (part 4) -------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.start is not None and desired.start is not None and desired.start < current.start:
            return "start moved earlier: Zoho reschedules only to a later start"
        if current.service_type and desired.service_type and current.service_type != desired.service_type:
            return "service changed: Zoho cannot update Service_Name"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired)

    # -- webhooks and watch channels (part 2 (a)) -----------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        channel = await self.state.get(STATE_CHANNEL) if secret else None
        delivery = parse_callback(body, secret=secret, channel_id=channel, module=self.settings.module)
        log.info("webhook_parsed", connector=self.name, op="webhook", count=len(delivery.events))
        return delivery

    async def _channel_id(self) -> str:
        channel = await self.state.get(STATE_CHANNEL)
        if not channel:
            channel = str(random.SystemRandom().randint(1, 2**53 - 1))
            await self.state.set(STATE_CHANNEL, channel)
        return channel

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        if self.config.webhook_secret is None:
            return {"subscription": "not needed", "reason": "webhooks disabled (no webhook_secret)"}
        if not public_url:
            return {"subscription": "not needed", "reason": "no public_url: incremental polling only"}
        channel = await self._channel_id()
        now = datetime.now(UTC)
        stored = await self.state.get(STATE_EXPIRY)
        expiry: datetime | None = None
        if stored:
            try:
                expiry = zoho_time_to_utc(stored, "channel_expiry")
            except MappingError:
                expiry = None
        renew_below = timedelta(seconds=self.settings.watch_renew_below_s)
        if self._subscribed and expiry is not None and expiry - now > renew_below:
            return {"subscription": "active", "channel_id": channel, "expires": stored, "renewed": False}
        body = {
            "watch": [
                {
                    "channel_id": int(channel),
                    "events": list(self.settings.watch_events),
                    "channel_expiry": utc_to_zoho_time(now + timedelta(days=self.settings.watch_days)),
                    "token": self.config.webhook_secret.reveal(),
                    "notify_url": public_url.rstrip("/") + f"/webhooks/{self.name}",
                    "notify_on_related_action": False,
                }
            ]
        }
        response = await self.client.watch(body)
        answer = response.json_or_none()
        results = answer.get("watch") if isinstance(answer, dict) else None
        result = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else {}
        if result.get("code") != "SUCCESS":
            details = result.get("details") if isinstance(result.get("details"), dict) else {}
            api_name = details.get("api_name") if isinstance(details, dict) else None
            raise Rejected(
                f"watch subscription refused (api_name {api_name})",
                code=str(result.get("code")),
                status=response.status,
                connector=self.name,
                operation="watch",
            )
        events = result.get("details", {}).get("events") or [{}]
        new_expiry = str(events[0].get("channel_expiry") or body["watch"][0]["channel_expiry"])
        await self.state.set(STATE_EXPIRY, new_expiry)
        self._subscribed = True
        log.info("watch_renewed", connector=self.name, op="watch")
        return {"subscription": "active", "channel_id": channel, "expires": new_expiry, "renewed": True}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/zoho_crm.md §1, §2, §6) ---------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        accounts = self.config.auth_value("accounts_url").rstrip("/")
        if error.url is not None and error.url.startswith(accounts) and error.status is None:
            return Remedy(f"{key}.accounts_url")
        scopes = ", ".join(_NEEDED_SCOPES)
        if error.code == "INVALID_DATA" and "Syncd_Id" in error.message:
            return Remedy(
                None,
                f"create the custom field {self.mapping.fields['reference']} (single line) in the Appointments module",
            )
        if not isinstance(error, AuthFailure):
            return None
        by_code = {
            "invalid_code": Remedy(
                f"{key}.refresh_token",
                "Zoho refused the refresh token (revoked, or from "
                "another data centre than accounts_url): generate a new one from the Self Client "
                f"with the scopes {scopes}",
            ),
            "invalid_client": Remedy(
                f"{key}.client_id",
                f"Zoho does not know this client id and secret pair: "
                f"check {key}.client_id and {key}.client_secret (Zoho API console)",
            ),
            "INVALID_TOKEN": Remedy(f"{key}.refresh_token", "a fresh access token was refused too"),
            "OAUTH_SCOPE_MISMATCH": Remedy(
                f"{key}.refresh_token", f"the refresh token lacks a scope: generate a new one with {scopes}"
            ),
            "NO_PERMISSION": Remedy(
                None,
                "the Zoho user behind the token lacks permission on Appointments: "
                "give its profile create and edit rights on the module",
            ),
        }
        return by_code.get(error.code or "", Remedy(f"{key}.refresh_token"))
