"""The Dentally connector (docs/vendors/dentally.md): its capabilities, rules and webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from connectors.dentally.client import DentallyClient
from connectors.dentally.doctor import DentallyDoctor
from connectors.dentally.mapfuncs import DentallyMapper
from connectors.dentally.options import DentallyOptions
from connectors.dentally.reads import _NOT_STORED
from connectors.dentally.rules import write_refusal
from connectors.dentally.webhook import parse_delivery
from syncd.connector import Capabilities, Remedy, WebhookDelivery
from syncd.errors import AuthFailure, VendorError
from syncd.model import Appointment

__all__ = ["DentallyConnector"]


log = structlog.get_logger(__name__)


#: a create needs start_time, finish_time and practitioner_id (docs/vendors/dentally.md §4)
_REQUIRED_ON_CREATE = frozenset({"start", "end", "practitioner"})


class DentallyConnector(DentallyDoctor):
    """One Dentally practice's appointments, as the core sees them."""

    client_type = DentallyClient
    options_type = DentallyOptions

    def setup(self) -> None:
        self.mapper = DentallyMapper(self.mapping)
        self.capabilities = Capabilities(
            webhooks=True,
            patient_change=False,
            replace_reason=str(self.mapping.defaults["replace_reason"]),
            not_stored=_NOT_STORED,
            required_on_create=_REQUIRED_ON_CREATE,
        )
        self._reasons = None
        self._replace_of = {}
        self._attempts = {}
        self._known = None
        self._known_saved = None
        self._count_checked_at = None

    # -- replace flow (part 4, seed) -------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.patient is not None and desired.patient != current.patient:
            return "patient change: Dentally can not change the patient of an appointment (seed)"
        if (
            current.patient is None
            and desired.patient is not None
            and current.native_status not in (None, self.mapper.open_state)
        ):
            return f"patient added outside Pending ({current.native_status}): Dentally can not change it"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, self.needs_replace(current, desired))

    # -- webhooks (part 2 (a)) -------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        delivery = parse_delivery(headers, body, secret=secret, now=now)
        log.info("webhook_parsed", connector=self.name, op="webhook", count=len(delivery.events))
        return delivery

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {
            "subscription": "not needed",
            "reason": "Dentally webhooks are set up by a practice admin (Settings > Developer > Webhooks)",
        }

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/dentally.md §1, §2, §6, §7) ----------
    def remedy(self, error: VendorError) -> Remedy | None:
        if not isinstance(error, AuthFailure):
            return None
        key = f"connectors.{self.name}"
        text = error.message.lower()
        if "user-agent" in text:
            return Remedy(f"{key}.user_agent", "Dentally requires a User-Agent naming the integration and a contact")
        if "scope" in text:
            return Remedy(
                f"{key}.access_token",
                "the token lacks the appointment scope: create a token with the "
                "appointment, patient:read and user:read scopes",
            )
        return Remedy(
            f"{key}.access_token",
            "the token is unknown, revoked or unused for 14 days: create a new "
            "API token in Dentally (Settings > Developer Settings)",
        )
