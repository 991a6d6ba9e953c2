"""Salesforce wire helpers for the sandbox: 18-character ids, datetime formats, error answers.

Written from docs/vendors/salesforce_health.md for the sandbox only; the connector has its own (docs/development.md:
sandbox and connector share no vendor protocol code).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")

# sObject key prefixes the sandbox uses
PREFIX = {
    "ServiceAppointment": "08p",
    "Account": "001",
    "ServiceTerritory": "0Hh",
    "ServiceResource": "0Hn",
    "WorkType": "08q",
    "EngagementChannelType": "0eF",
    "AssignedResource": "03r",
    "Asset": "02i",
}


def id_checksum(id15: str) -> str:
    """The 3-character suffix that makes a 15-character id case-insensitive-safe."""
    out = []
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(_CHECKSUM_ALPHABET[bits])
    return "".join(out)


def to_id18(value: str) -> str | None:
    """A 15- or 18-character id as its 18-character form; None when it is not an id."""
    if not _ID_RE.match(value):
        return None
    if len(value) == 15:
        return value + id_checksum(value)
    return value[:15] + id_checksum(value[:15])


def base62(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, r = divmod(n, 62)
        chars.append(_BASE62[r])
    return "".join(reversed(chars))


def make_id(prefix: str, pod: str, n: int) -> str:
    """An 18-character id: 3-char prefix + 2-char pod + 10 base62 digits + checksum."""
    id15 = prefix + pod + base62(n, 10)
    return id15 + id_checksum(id15)


def hashed_id(prefix: str, *parts: str) -> str:
    """A deterministic 18-character id derived from ``parts`` (seeding)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return make_id(prefix, "Sd", int.from_bytes(digest[:8], "big"))


def sf_datetime(value: datetime | None) -> str | None:
    """``2026-11-22T10:15:03.000+0000`` (UTC, second precision)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def parse_iso(value: str, zone: str | None = None) -> datetime:
    """An ISO 8601 instant; a value without an offset is read in ``zone`` (UTC when None)."""
    if not isinstance(value, str) or not value or " " in value:
        raise ValueError(f"not an ISO 8601 datetime: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone) if zone else UTC)
    return parsed.astimezone(UTC)


def parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def valid_zone(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def seconds(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


def minute(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def sf_json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers, content_type="application/json")


class SfError(Exception):
    """A REST error answer: HTTP status + the array body ``[{"message", "errorCode", "fields"?}]``."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def response(self) -> web.Response:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return sf_json([item], status=self.status)


class ConnectFailure(Exception):
    """A Connect business-rule failure: HTTP 200 with ``isSuccess: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def not_found() -> SfError:
    return SfError(404, "NOT_FOUND", "The requested resource does not exist")


def session_invalid() -> web.Response:
    return sf_json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], status=401)


def total_requests_exceeded() -> web.Response:
    return sf_json([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)


def concurrent_exceeded() -> web.Response:
    return sf_json([{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)


def oauth_error(error: str, description: str) -> web.Response:
    return sf_json({"error": error, "error_description": description}, status=400)
