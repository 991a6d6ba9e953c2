"""Salesforce org Flow callouts (docs/vendors/salesforce_health.md §2 a): the generic scheme.

``X-Syncd-Timestamp: <unix seconds>`` and ``X-Syncd-Signature: v1=<hex HMAC-SHA256(secret,
"<timestamp>.<raw body>")>`` (several comma-separated ``v1=`` values allowed), ±300 s. The body is
``{"ids": [...]}`` (at most 200 ids, no fields): every id is re-read, deletions are not pushed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime

from syncd.connector import WebhookDelivery, WebhookEvent
from syncd.errors import WebhookError

__all__ = ["MAX_IDS", "TOLERANCE_S", "parse_ids", "sign", "verify"]

TOLERANCE_S = 300
MAX_IDS = 200


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` (the generic scheme)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime) -> str:
    """Check the generic signature; return the signed timestamp or raise ``WebhookError(401)``."""
    timestamp = _header(headers, "X-Syncd-Timestamp")
    signature = _header(headers, "X-Syncd-Signature")
    if not timestamp or not signature:
        raise WebhookError(401, "signature_missing", "X-Syncd-Timestamp and X-Syncd-Signature are required")
    timestamp = timestamp.strip()
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookError(401, "timestamp_invalid", "X-Syncd-Timestamp must be unix seconds") from None
    if abs(now.timestamp() - sent) > TOLERANCE_S:
        raise WebhookError(401, "timestamp_out_of_range", "timestamp is more than 300 s from the receiver's clock")
    expected = sign(secret, timestamp, body)
    matched = False
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1" and value and hmac.compare_digest(value.strip().lower().encode(), expected.encode()):
            matched = True
    if not matched:
        raise WebhookError(401, "signature_invalid", "no v1 signature matches")
    return timestamp


def parse_ids(body: bytes) -> list[str]:
    """The ids of ``{"ids": [...]}``; ``WebhookError(400)`` when malformed."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError(400, "malformed_body", "body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise WebhookError(400, "malformed_body", 'expected {"ids": [...]}')
    ids = data["ids"]
    if len(ids) > MAX_IDS:
        raise WebhookError(400, "malformed_body", f"at most {MAX_IDS} ids per delivery")
    if not all(isinstance(i, str) and i.isalnum() and len(i) in (15, 18) for i in ids):
        raise WebhookError(400, "malformed_body", "ids must be Salesforce record ids")
    return list(dict.fromkeys(ids))


def parse(secret: str | None, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
    """Verify then parse one delivery (docs/reference.md §7 order: 401 before 400)."""
    if secret is None:
        raise WebhookError(404, "webhooks_disabled", "no webhook_secret is configured for this connector")
    timestamp = verify(secret, headers, body, now=now)
    ids = parse_ids(body)
    return WebhookDelivery(
        events=[WebhookEvent(external_id=i) for i in ids],
        dedup_key=None,
        signed_timestamp=timestamp,
    )
