"""Salesforce org Flow callouts (docs/vendors/salesforce_health.md §2 a): the generic scheme.

``X-Syncd-Timestamp: <unix seconds>`` and ``X-Syncd-Signature: v1=<hex HMAC-SHA256(secret,
"<timestamp>.<raw body>")>`` (several comma-separated ``v1=`` values allowed), ±300 s. The body is
``{"ids": [...]}`` (at most 200 ids, no fields): every id is re-read, deletions are not pushed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from syncd.connector import WebhookDelivery, WebhookEvent
from syncd.connectorkit import GENERIC, HmacScheme, require_secret
from syncd.errors import WebhookError

__all__ = ["MAX_IDS", "SCHEME", "TOLERANCE_S", "parse_ids", "sign", "verify"]

MAX_IDS = 200
#: the generic scheme, with the codes this guide names (docs/vendors/salesforce_health.md §2 a)
SCHEME = HmacScheme(
    GENERIC.timestamp_header,
    GENERIC.signature_header,
    stale_code="timestamp_out_of_range",
    mismatch_code="signature_invalid",
)
TOLERANCE_S = SCHEME.tolerance_s


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` (the generic scheme)."""
    return SCHEME.sign(secret, timestamp, body)


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime) -> str:
    """Check the generic signature; return the signed timestamp or raise ``WebhookError(401)``."""
    return SCHEME.verify(headers, body, secret=secret, now=now)


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
    timestamp = verify(require_secret(secret), headers, body, now=now)
    ids = parse_ids(body)
    return WebhookDelivery(
        events=[WebhookEvent(external_id=i) for i in ids],
        dedup_key=None,
        signed_timestamp=timestamp,
    )
