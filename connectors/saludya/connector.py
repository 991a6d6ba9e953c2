"""The SaludYa connector (docs/vendors/saludya.md): date-window scans, single reads, PUT/POST writes.

SaludYa has no webhooks, no modified-since filter, no batch calls and no concurrency token. Changes are
found by scanning date windows (hot / near / full, part 2) and comparing each record's ``updated_at``
and fingerprint with what the cursor remembers; deletions by GETting known ids a complete pass did not
see. Every PUT is preceded by a re-read (part 8); creates carry a ``[syncd:<id>]`` marker line in
``notes`` so that a lost create response is found again, not repeated (part 9). This module holds its
capabilities, rules and doctor checks; ``reads.py`` and ``writes.py`` the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from connectors.saludya.client import SaludYaClient
from connectors.saludya.mapfuncs import SaludYaMapper
from connectors.saludya.options import SaludYaOptions
from connectors.saludya.reads import NOT_STORED, READ_ONLY, ScanState
from connectors.saludya.rules import write_refusal
from connectors.saludya.webhook import parse_webhook as _parse_webhook
from connectors.saludya.writes import SaludYaWrites
from syncd.connector import Capabilities, Remedy, WebhookDelivery
from syncd.doctor import Diagnosis
from syncd.errors import AuthFailure, VendorError
from syncd.model import Appointment

__all__ = ["SaludYaConnector", "ScanState"]


log = structlog.get_logger(__name__)


#: a create needs the patient, the doctor, the date and the time (docs/vendors/saludya.md §4)
REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner"})


#: the Free tier's tightest sustained pace: 300 requests per hour (docs/vendors/saludya.md §7)
_QUOTA_PACE = 300 / 3600


class SaludYaConnector(SaludYaWrites):
    """One SaludYa organisation's appointments, as the core sees them."""

    client_type = SaludYaClient
    options_type = SaludYaOptions

    def setup(self) -> None:
        self.zone = ZoneInfo(self.config.timezone)
        self.mapper = SaludYaMapper(self.mapping, self.config.timezone)
        self.replace_reason = str(self.mapping.defaults["replace_reason"])
        self.capabilities = Capabilities(
            webhooks=False,
            patient_change=False,  # patient_id is immutable (docs/vendors/saludya.md §4)
            replace_reason=self.replace_reason,
            # docs/vendors/saludya.md §4: a patient-only change cancels first (the old record holds the slot)
            replace_cancel_first_when=frozenset({"patient"}),
            not_stored=NOT_STORED,
            read_only=READ_ONLY,
            required_on_create=REQUIRED_ON_CREATE,
        )
        self.poll_interval = float(self.config.poll_interval) if self.config.poll_interval > 0 else 300.0
        self.list_required = self.settings.list_required
        self._hints = {}

    # -- replace flows (part 4) -----------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.practitioner and desired.practitioner and current.practitioner != desired.practitioner:
            return "doctor changed: SaludYa doctor_id is immutable (create the new appointment, then cancel the old)"
        if current.patient and desired.patient and current.patient != desired.patient:
            return "patient changed: SaludYa patient_id is immutable (cancel the old appointment first, then create)"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, self.needs_replace(current, desired))

    # -- webhooks, upkeep -----------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        return _parse_webhook(headers, body)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {"subscription": "not needed", "webhooks": False, "detail": "saludya is poll-only (date-window scans)"}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/saludya.md §1, §7) --------------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}.api_key"
        if isinstance(error, AuthFailure):
            return Remedy(
                key,
                "SaludYa refused the API key (unknown or revoked): copy the organization's current key from SaludYa",
            )
        if error.status == 403:
            return Remedy(
                key, "the API key may not see this clinic's or doctor's appointments: widen its access in SaludYa"
            )
        return None

    async def checks(self, d: Diagnosis, public_url: str | None) -> None:
        """The API key and the request quotas (``X-RateLimit-*``) with one list request, the client-side
        pace against the quota, and the lack of webhooks. SaludYa's quota is small: one request."""
        today = self._today().isoformat()
        answer = await d.attempt(
            "authenticate",
            self.client.http.request(
                "doctor",
                "GET",
                self.client._path(),
                params={"date_from": today, "date_to": today, "page": "1", "limit": "1"},
            ),
        )
        if answer is None:
            d.skip_blocked("read", "quota")
        else:
            d.ok("authenticate", f"{self.client.http.base_url} accepted the API key")
            body = answer.json_or_none()
            pagination = body.get("pagination") if isinstance(body, dict) else None
            total = pagination.get("total", "?") if isinstance(pagination, dict) else "?"
            d.ok("read", f"read one page: {total} appointments on {today}")
            remaining = answer.headers.get("X-RateLimit-Remaining")
            limit = answer.headers.get("X-RateLimit-Limit")
            window = answer.headers.get("X-RateLimit-Window")
            if remaining is None or limit is None or not (remaining.isdigit() and limit.isdigit()):
                d.skip("quota", "the answer carried no X-RateLimit headers")
            elif int(remaining) <= self.settings.guard_remaining:
                d.warn(
                    "quota",
                    f"{remaining} of {limit} requests left in the current {window or '?'} s window",
                    "syncd waits for the window to reset by itself; a paid SaludYa tier raises the quotas",
                )
            else:
                d.ok("quota", f"{remaining} of {limit} requests left in the current {window or '?'} s window")
        pace = self.config.max_requests_per_second
        if pace > _QUOTA_PACE:
            d.warn(
                "pace",
                f"max_requests_per_second = {pace:g} spends the Free tier's 300-per-hour quota faster than it refills",
                f"lower connectors.{self.name}.max_requests_per_second to 0.08 (the default)",
                f"connectors.{self.name}.max_requests_per_second",
            )
        else:
            d.ok("pace", f"max_requests_per_second = {pace:g} stays within SaludYa's quotas")
        d.skip("webhooks", f"SaludYa has no webhooks: syncd scans date windows every {self.config.poll_interval:g}s")
