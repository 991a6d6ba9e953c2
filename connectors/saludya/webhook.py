"""SaludYa has no webhooks (docs/vendors/saludya.md §2, docs/vendors/README.md rule 14): every delivery is refused."""

from __future__ import annotations

from collections.abc import Mapping

from syncd.connector import WebhookDelivery
from syncd.errors import WebhookError

__all__ = ["parse_webhook"]


def parse_webhook(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    """Always ``WebhookError(404, "webhooks_disabled")``: SaludYa is poll-only (date-window scans)."""
    raise WebhookError(404, "webhooks_disabled", "saludya has no webhooks; changes are found by date-window scans")
