"""Dentally webhooks (docs/vendors/dentally.md §2 (a)): verification and parsing.

Dentally's own signature scheme is unconfirmed, so the generic one applies: ``X-Syncd-Timestamp``
(unix seconds) and ``X-Syncd-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``,
several comma-separated ``v1=`` values allowed, ±300 s, constant-time comparison. Deliveries carry
ids only: ``appointment.created`` / ``appointment.updated`` are re-read, ``appointment.deleted`` is a
claim the drain confirms by a re-read (a 404 means deleted, a 200 is an update; docs/vendors/dentally.md
§2); ``patient.*``, ``payment.*`` and other events are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from syncd.connector import WebhookDelivery, WebhookEvent
from syncd.connectorkit import GENERIC, json_object, require_secret
from syncd.errors import WebhookError

__all__ = ["TOLERANCE_S", "parse_delivery", "sign", "verify_signature"]

TOLERANCE_S = GENERIC.tolerance_s
_REREAD = frozenset({"appointment.created", "appointment.updated"})
_DELETED = "appointment.deleted"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` (the generic scheme)."""
    return GENERIC.sign(secret, timestamp, body)


def verify_signature(headers: Mapping[str, str], body: bytes, *, secret: str, now: datetime) -> str:
    """Check the generic signature; return the signed timestamp or raise ``WebhookError(401)``."""
    return GENERIC.verify(headers, body, secret=secret, now=now)


def _appointment_id(value: object) -> bool:
    """A Dentally appointment id: a positive integer, or its digits as a string (never a boolean)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 < value < 10**20
    return isinstance(value, str) and value.isascii() and value.isdigit() and 0 < len(value) <= 20


def parse_delivery(headers: Mapping[str, str], body: bytes, *, secret: str | None, now: datetime) -> WebhookDelivery:
    """Verify one delivery and return its events (ids to re-read, deletions) and the event id."""
    timestamp = verify_signature(headers, body, secret=require_secret(secret), now=now)
    payload = json_object(body)
    event_id = payload.get("id")
    event = payload.get("event")
    if not isinstance(event_id, str) or not event_id or not isinstance(event, str) or not event:
        raise WebhookError(400, "malformed_body", "the delivery lacks its event id or name")
    if event not in _REREAD and event != _DELETED:
        return WebhookDelivery(events=[], dedup_key=event_id, signed_timestamp=timestamp)  # accepted, ignored
    data = payload.get("data")
    record_id = data.get("id") if isinstance(data, dict) else None
    if not _appointment_id(record_id):
        raise WebhookError(400, "malformed_body", "the delivery lacks data.id (an appointment id: digits)")
    events = [WebhookEvent(external_id=str(record_id), deleted=event == _DELETED)]
    return WebhookDelivery(events=events, dedup_key=event_id, signed_timestamp=timestamp)
