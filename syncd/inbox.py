"""What a webhook delivery looks like in the ledger's inbox (``inbox.body``) and how it is deduplicated.

The receiver (:mod:`syncd.server`) stores each verified delivery as one JSON document::

    {"format": 1,
     "events": [{"external_id": "757579675", "deleted": false}, ...],
     "signed_timestamp": "1795345200",
     "raw": "<the request body, as text>"}

``events`` is what the engine acts on (re-read each id, or mark it deleted); ``raw`` is kept for
audit only and is emptied by the ledger when the row is marked processed. Whole records that a
vendor might push inside a delivery are not kept: the engine re-reads every id (no vendor syncd
supports sends trustworthy content in its notifications).

:func:`dedup_key` follows docs/reference.md §7: the vendor's event id where the payload has one
(``delivery.dedup_key``, e.g. an event ``id``), else the SHA-256 of the signed timestamp and the raw
body, so that a new notification about the same ids is not a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from syncd.connector import WebhookDelivery, WebhookEvent

__all__ = ["FORMAT", "InboxFormatError", "decode_delivery", "dedup_key", "encode_delivery"]

FORMAT = 1
_KEY_MAX = 255  # inbox.dedup_key column width
_TIMESTAMP_HEADER = "x-syncd-timestamp"


class InboxFormatError(ValueError):
    """A stored inbox body is not a document this version of syncd wrote."""


def encode_delivery(delivery: WebhookDelivery, raw_body: bytes) -> bytes:
    """The ``inbox.body`` bytes for a verified delivery (``raw_body`` must be UTF-8, as checked on intake)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "events": [{"external_id": e.external_id, "deleted": bool(e.deleted)} for e in delivery.events],
        "signed_timestamp": delivery.signed_timestamp,
        "raw": raw_body.decode("utf-8", errors="replace"),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_delivery(body: bytes) -> list[WebhookEvent]:
    """The events of a stored delivery, in order. Raises :class:`InboxFormatError` when malformed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InboxFormatError(f"inbox body is not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InboxFormatError("inbox body has an unknown format")
    raw_events = document.get("events")
    if not isinstance(raw_events, list):
        raise InboxFormatError("inbox body has no event list")
    events: list[WebhookEvent] = []
    for item in raw_events:
        if not isinstance(item, dict):
            raise InboxFormatError("inbox event is not an object")
        external_id = item.get("external_id")
        deleted = item.get("deleted", False)
        if not isinstance(external_id, str) or not external_id or not isinstance(deleted, bool):
            raise InboxFormatError("inbox event has no valid external_id/deleted")
        events.append(WebhookEvent(external_id=external_id, deleted=deleted))
    return events


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def dedup_key(delivery: WebhookDelivery, headers: Mapping[str, str], raw_body: bytes) -> str:
    """The inbox dedup key of a delivery (unique per connector in the ledger).

    ``event:<vendor event id>`` when the vendor names its events (ids too long for the column are
    hashed); else ``sha256:<hex of "<signed timestamp>.<raw body>">``, the timestamp being the one
    the connector verified, or the ``X-Syncd-Timestamp`` header, or empty when there is none.
    """
    if delivery.dedup_key:
        key = f"event:{delivery.dedup_key}"
        if len(key) <= _KEY_MAX:
            return key
        return "event-sha256:" + hashlib.sha256(delivery.dedup_key.encode("utf-8")).hexdigest()
    timestamp = delivery.signed_timestamp
    if timestamp is None:
        timestamp = (_header(headers, _TIMESTAMP_HEADER) or "").strip()
    digest = hashlib.sha256(timestamp.encode("utf-8") + b"." + raw_body).hexdigest()
    return f"sha256:{digest}"
