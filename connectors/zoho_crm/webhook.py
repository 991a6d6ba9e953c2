"""Zoho watch-channel callbacks (docs/vendors/zoho_crm.md §2 (a)): verification and parsing.

Zoho's own scheme applies, not the generic HMAC one: the callback body echoes the channel's
``token`` (= ``webhook_secret``), its ``channel_id`` and the ``module``. A body that is not JSON is
a 400 before the token check (docs/reference.md §7); a wrong token, channel or module is a 401.
Callbacks carry ids only: every id is re-read, delete ids included -- the drain cancels only what the
batch read no longer returns (docs/vendors/zoho_crm.md §2).
"""

from __future__ import annotations

import hmac
import re

from syncd.connector import WebhookDelivery, WebhookEvent
from syncd.connectorkit import json_object, require_secret
from syncd.errors import WebhookError

__all__ = ["parse_callback"]

_OPERATIONS = frozenset({"insert", "update", "delete"})
_RECORD_ID_RE = re.compile(r"[0-9]{1,32}")


def _same(a: str, b: str) -> bool:
    # a JSON string may hold a lone surrogate: compare its code points, never fail on it
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def _record_id(value: object) -> bool:
    """A Zoho record id: digits (sent as a string or a number; never a boolean, never empty)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 < value < 10**32
    return isinstance(value, str) and _RECORD_ID_RE.fullmatch(value) is not None


def parse_callback(body: bytes, *, secret: str | None, channel_id: str | None, module: str) -> WebhookDelivery:
    """Verify one callback and return its events (ids to re-read, deletions)."""
    secret = require_secret(secret)
    payload = json_object(body)
    token = payload.get("token")
    if not isinstance(token, str) or not token:
        raise WebhookError(401, "token_missing", "the callback carries no token")
    if not _same(token, secret):
        raise WebhookError(401, "token_mismatch", "the callback token does not match")
    got_channel = payload.get("channel_id")
    if channel_id is None or got_channel is None or not _same(str(got_channel), str(channel_id)):
        raise WebhookError(401, "channel_mismatch", "the callback names an unknown watch channel")
    if payload.get("module") != module:
        raise WebhookError(401, "module_mismatch", "the callback is for another module")
    ids = payload.get("ids")
    operation = payload.get("operation")
    if not isinstance(ids, list) or not all(_record_id(i) for i in ids):
        raise WebhookError(400, "malformed_body", "ids must be a list of record ids (digits)")
    if not isinstance(operation, str) or operation not in _OPERATIONS:
        raise WebhookError(400, "malformed_body", "unknown operation")
    deleted = operation == "delete"
    events = [WebhookEvent(external_id=str(i), deleted=deleted) for i in dict.fromkeys(str(i) for i in ids)]
    server_time = payload.get("server_time")
    return WebhookDelivery(
        events=events,
        dedup_key=None,  # Zoho callbacks carry no event id: the receiver hashes timestamp + body
        signed_timestamp=str(server_time) if isinstance(server_time, (int, str)) else None,
    )
