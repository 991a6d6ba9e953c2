"""Webhook verification shared by the connectors: one HMAC/timestamp scheme, parametrised.

A vendor that signs its deliveries with an HMAC over a signing string that includes a timestamp
declares one :class:`HmacScheme` (header names, signing string, tolerance, the error codes its guide
documents); :data:`GENERIC` is syncd's own scheme (docs/vendors/README.md "Generic webhook
signature"): ``X-Syncd-Timestamp`` (unix seconds) and ``X-Syncd-Signature: v1=<hex
HMAC-SHA256(secret, "<timestamp>.<raw body>")>``, several comma-separated ``v1=`` values allowed,
±300 s, constant-time comparison. Verification runs before the body is parsed (docs/reference.md §7:
401 before 400).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.errors import WebhookError

__all__ = ["GENERIC", "HmacScheme", "dotted", "header", "json_object", "require_secret"]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (any case), stripped; None when absent or blank."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((val for key, val in headers.items() if key.lower() == lowered), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def dotted(timestamp: str, body: bytes) -> bytes:
    """The generic signing string: ``"<timestamp>.<raw body>"``."""
    return timestamp.encode() + b"." + body


@dataclass(frozen=True)
class HmacScheme:
    """An HMAC-SHA256 signature over a signing string that includes a timestamp."""

    timestamp_header: str
    signature_header: str
    signing_string: Callable[[str, bytes], bytes] = dotted
    """(timestamp, raw body) -> the bytes that are signed"""
    version: str = "v1"
    """the ``<version>=<hex>`` prefix of each value of the signature header"""
    tolerance_s: int = 300
    stale_code: str = "timestamp_stale"
    """the error code of a timestamp further than ``tolerance_s`` from our clock"""
    mismatch_code: str = "signature_mismatch"
    """the error code of a signature that matches none of the values sent"""

    def sign(self, secret: str, timestamp: str, body: bytes) -> str:
        """The hex HMAC-SHA256 of the signing string."""
        return hmac.new(secret.encode(), self.signing_string(timestamp, body), hashlib.sha256).hexdigest()

    def verify(self, headers: Mapping[str, str], body: bytes, *, secret: str, now: datetime) -> str:
        """Check the signature; return the signed timestamp or raise ``WebhookError(401)``."""
        timestamp = header(headers, self.timestamp_header)
        signature = header(headers, self.signature_header)
        if timestamp is None or signature is None:
            raise WebhookError(401, "signature_missing",
                               f"{self.timestamp_header} and {self.signature_header} are required")
        try:
            sent = int(timestamp)
        except ValueError:
            raise WebhookError(401, "timestamp_invalid", f"{self.timestamp_header} must be unix seconds") from None
        if abs(now.timestamp() - sent) > self.tolerance_s:
            raise WebhookError(401, self.stale_code,
                               f"the timestamp is more than {self.tolerance_s} s from the receiver's clock")
        expected = self.sign(secret, timestamp, body).encode()
        matched = False
        for part in signature.split(","):
            scheme, _, value = part.strip().partition("=")
            if scheme == self.version and hmac.compare_digest(value.strip().lower().encode(), expected):
                matched = True  # keep comparing: the time taken does not depend on which value matched
        if not matched:
            raise WebhookError(401, self.mismatch_code, f"no {self.version} signature matches")
        return timestamp


GENERIC = HmacScheme("X-Syncd-Timestamp", "X-Syncd-Signature")
"""syncd's generic scheme (docs/vendors/README.md "Generic webhook signature")."""


def require_secret(secret: str | None) -> str:
    """The webhook secret, or ``WebhookError(404)`` when webhooks are off for this connector."""
    if not secret:
        raise WebhookError(404, "webhooks_disabled", "webhooks are disabled for this connector")
    return secret


def json_object(body: bytes) -> dict[str, Any]:
    """The delivery's body as a JSON object, or ``WebhookError(400, "malformed_body")``."""
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError(400, "malformed_body", "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "malformed_body", "the body is not a JSON object")
    return payload
