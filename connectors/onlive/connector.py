"""The Onlive connector (docs/vendors/onlive.md): polling, reads, partial writes, cancels, replace flow.

Onlive has no webhooks, no batch calls and no concurrency token: syncd polls ``updatedSince`` (with a
window reconciliation as fallback and at start), reads one record per call, and re-reads every record
right before a PUT or a cancel (part 8). This module holds its capabilities, rules and doctor checks;
``reads.py`` and ``writes.py`` the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import structlog

from connectors.onlive.client import OnliveClient
from connectors.onlive.mapfuncs import OnliveMapper
from connectors.onlive.options import OnliveOptions
from connectors.onlive.rules import write_refusal
from connectors.onlive.webhook import parse_webhook
from connectors.onlive.writes import OnliveWrites
from syncd.connector import Capabilities, Remedy, WebhookDelivery
from syncd.doctor import Diagnosis
from syncd.errors import AuthFailure, VendorError
from syncd.model import Appointment

__all__ = ["OnliveConnector"]


log = structlog.get_logger(__name__)


#: a create needs startAt, endAt, calendarIds and guests (docs/vendors/onlive.md §4; the title is syncd's)
_REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner"})


def _total(body: Any) -> Any:
    """The ``meta.total`` of a list answer, or "?"."""
    meta = body.get("meta") if isinstance(body, dict) else None
    return meta.get("total", "?") if isinstance(meta, dict) else "?"


class OnliveConnector(OnliveWrites):
    """One Onlive organisation's appointments, as the core sees them."""

    client_type = OnliveClient
    options_type = OnliveOptions

    def setup(self) -> None:
        self.mapper = OnliveMapper(self.mapping)
        self.defaults = self.mapping.defaults
        self.capabilities = Capabilities(
            webhooks=False,
            replace_reason=str(self.defaults["replace_reason"]),
            # every canonical field has an Onlive field syncd may write (docs/vendors/onlive.md §9); only
            # the completed and no-show statuses are Onlive's own, per record (see _mark)
            required_on_create=_REQUIRED_ON_CREATE,
        )
        if self.config.webhook_secret is not None:
            log.warning("webhook_secret_ignored", connector=self.name, op="start")

    # -- replace flow (part 4) -------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.practitioner and desired.practitioner and current.practitioner != desired.practitioner:
            return "practitioner changed: Onlive cannot update calendarIds"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, replace=self.needs_replace(current, desired), now=now)

    # -- webhooks and upkeep ---------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        return parse_webhook(headers, body)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {"subscription": "not needed", "reason": "onlive sends no webhooks: changes are polled"}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/onlive.md §1, §7) ---------------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        if not isinstance(error, AuthFailure):
            return None
        if error.code == "UNKNOWN_ACCESS_KEY":
            return Remedy(
                f"{key}.access_key_id",
                "Onlive does not know this access key id (revoked?): create "
                "a key pair in Onlive and put both halves in the config",
            )
        if error.code == "SIGNATURE_MISMATCH":
            return Remedy(
                f"{key}.secret_access_key",
                "the signature does not match: the secret access key is not the one paired with the access key id",
            )
        if error.code == "REQUEST_EXPIRED":
            return Remedy(
                None,
                "this host's clock is more than 15 minutes off Onlive's, even after one "
                "correction: synchronise the clock (NTP)",
            )
        if error.status == 403:
            return Remedy(f"{key}.access_key_id", "the key pair lacks access to these appointments in Onlive")
        return Remedy(f"{key}.access_key_id", "Onlive refused the signed request")

    async def checks(self, d: Diagnosis, public_url: str | None) -> None:
        """The access key pair and signature with one list request, this host's clock against Onlive's
        (requests more than 15 minutes off are refused), the rate-limit window, and the lack of
        webhooks. No write."""
        answer = await d.attempt(
            "authenticate",
            self.client.http.request("doctor", "GET", self.client._path("", {"limit": "1", "page": "1"})),
        )
        if answer is None:
            d.skip_blocked("read", "clock", "rate limit")
        else:
            d.ok("authenticate", f"{self.client.http.base_url} accepted the signed request")
            d.ok("read", f"read one page: {_total(answer.json_or_none())} appointments")
            try:
                server = parsedate_to_datetime(answer.headers.get("Date", ""))
            except (TypeError, ValueError):
                server = None
            if server is None:
                d.skip("clock", "the answer carried no Date header")
            else:
                offset = (server.astimezone(UTC) - datetime.now(UTC)).total_seconds()
                if abs(offset) > 60:
                    d.warn(
                        "clock",
                        f"this host's clock is {abs(offset):.0f}s {'behind' if offset > 0 else 'ahead of'} "
                        "Onlive's; syncd corrects it once, but Onlive refuses requests 15 minutes off",
                        "synchronise this host's clock (NTP)",
                    )
                else:
                    d.ok("clock", f"this host's clock is within {max(1.0, abs(offset)):.0f}s of Onlive's")
            remaining, limit = answer.headers.get("X-RateLimit-Remaining"), answer.headers.get("X-RateLimit-Limit")
            if remaining is None or limit is None:
                d.skip("rate limit", "the answer carried no X-RateLimit headers")
            else:
                d.ok("rate limit", f"{remaining} of {limit} requests left in the current minute")
        d.skip("webhooks", f"Onlive sends no webhooks: syncd polls every {self.config.poll_interval:g}s")
