"""Onlive sends no webhooks (docs/vendors/onlive.md §2; docs/vendors/README.md rule 14): every delivery is refused."""

from __future__ import annotations

from collections.abc import Mapping

from syncd.connector import WebhookDelivery
from syncd.errors import WebhookError

__all__ = ["parse_webhook"]


def parse_webhook(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    """``/webhooks/<onlive connector>`` answers 404: Onlive has no webhooks, syncd polls instead."""
    raise WebhookError(404, "webhooks_disabled", "onlive sends no webhooks: changes are polled")
