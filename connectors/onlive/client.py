"""Onlive Open API v2 over HTTP (docs/vendors/onlive.md §1, §3, §4, §6, §7): signing, classification, calls.

Every call goes through :class:`syncd.http.HttpClient` (timeouts, retries, Retry-After, rate-limit gate).
This module knows Onlive's wire shapes (signed requests, error bodies, list envelope); it does no
canonical mapping. Written from docs/vendors/onlive.md: nothing here is shared with the Onlive sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote

import structlog
import yarl

from syncd.config import ConnectorConfig
from syncd.connectorkit import HttpSetup, VendorClient, vendor_http
from syncd.errors import AuthFailure, Conflict, RateLimited, Rejected, Retriable, UnknownOutcome, VendorError
from syncd.http import Response, SharedRefresh

__all__ = [
    "OnliveAuth",
    "OnliveClient",
    "UpdatedSinceRefused",
    "canonical_query",
    "classify",
    "mask",
    "sign",
    "string_to_sign",
]

log = structlog.get_logger(__name__)

SCHEME = "ONLIVESITE"
DATE_HEADER = "x-onlive-site-date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"  # with A-Z a-z 0-9, which quote() never escapes

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")

#: the server ``Date`` of the last REQUEST_EXPIRED answer seen in this task
_EXPIRED_DATE: ContextVar[datetime | None] = ContextVar("onlive_expired_date", default=None)
#: the offset generation the current task's last request was signed with (shared correction bookkeeping)
_SEEN_GENERATION: ContextVar[int] = ContextVar("onlive_seen_generation", default=-1)


def mask(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked (vendor messages are stored)."""
    return _PHONE.sub("***", _EMAIL.sub("***@***", text))


# -- signing (part 1) ------------------------------------------------------------------------------------
def _encode(text: str) -> str:
    return quote(text, safe=_UNRESERVED, encoding="utf-8")


def canonical_query(raw_query: str) -> str:
    """Part 1 step 1: decode each pair, RFC 3986-encode name and value, sort, join with ``&``."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_encode(unquote(name.replace("+", " "))), _encode(unquote(value.replace("+", " ")))))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def query_string(params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """``params`` in the canonical form syncd sends (part 1: "syncd sends its query in exactly this form")."""
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    return "&".join(sorted(f"{_encode(str(k))}={_encode(str(v))}" for k, v in items))


def string_to_sign(method: str, path: str, raw_query: str, date: str, body: bytes) -> str:
    """Part 1 step 2 (four newlines)."""
    digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    return "\n".join((method.upper(), path, canonical_query(raw_query), date, digest))


def sign(secret: str, method: str, path: str, raw_query: str, date: str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of the string to sign, keyed with the UTF-8 secret access key."""
    message = string_to_sign(method, path, raw_query, date, body)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(key_id: str, signature: str) -> str:
    return f"{SCHEME} Credential={key_id}, Signature={signature}"


class OnliveAuth:
    """Signs every request (part 1). On ``REQUEST_EXPIRED`` it takes the clock offset from the answer's
    ``Date`` header and asks for one corrected repeat; every other auth failure is final. Concurrent
    callers that were refused with the same offset share one correction."""

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id = key_id
        self._secret = secret
        self.offset = timedelta(0)
        self.shared = SharedRefresh()
        self.corrections = 0

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        _SEEN_GENERATION.set(self.shared.generation)
        date = self.now().strftime(DATE_FORMAT)
        signature = sign(self._secret, method, url.raw_path, url.raw_query_string, date, body)
        headers[DATE_HEADER] = date
        headers["Authorization"] = authorization(self.key_id, signature)
        headers.setdefault("Accept", "application/json")

    async def refresh(self) -> bool:
        server = _EXPIRED_DATE.get()
        if server is None:
            return False  # nothing to refresh: static key pair (part 1)
        _EXPIRED_DATE.set(None)
        generation = _SEEN_GENERATION.get()

        async def correct() -> None:
            self.offset = server - datetime.now(UTC)
            self.corrections += 1
            log.warning("clock_offset_corrected", op="auth", duration_s=round(self.offset.total_seconds(), 3))

        await self.shared.run(generation, correct)
        return True


# -- classification (parts 6 and 7) ------------------------------------------------------------------------
class UpdatedSinceRefused(Rejected):
    """A 400 naming the ``updatedSince`` field: the caller switches to window mode (part 2)."""


def _body(response: Response) -> dict[str, Any] | None:
    data = response.json_or_none()
    return data if isinstance(data, dict) else None


def _server_date(response: Response) -> datetime | None:
    raw = response.headers.get("Date")
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def error_text(body: Mapping[str, Any] | None, status: int) -> tuple[str | None, str, list[str]]:
    """(code, masked message with field errors appended, the fields named in ``errors``)."""
    if body is None:
        return None, f"HTTP {status}", []
    code = str(body["code"]) if body.get("code") else None
    message = str(body.get("message") or f"HTTP {status}")
    fields: list[str] = []
    details: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                name = str(item.get("field") or "")
                fields.append(name)
                details.append(f"{name}: {item.get('message', '')}" if name else str(item.get("message", "")))
    if details:
        message = f"{message} ({'; '.join(details)})"
    return code, mask(message), fields


def classify(response: Response, *, default_wait: float = 60.0) -> VendorError | None:
    """An Onlive answer -> an error kind (docs/vendors/onlive.md §6), or None for success.

    A 404 is returned as :class:`Rejected` with code ``NOT_FOUND``; callers that can tell a deleted
    record from a bad request (reads, writes) look at the code.
    """
    status = response.status
    if status < 300:
        return None
    body = _body(response)
    code, message, fields = error_text(body, status)
    if status == 429:
        wait = response.retry_after()
        return RateLimited(message, wait=wait if wait is not None else default_wait,
                           code=code or "RATE_LIMITED", status=status)
    if status >= 500 or status == 408:
        if body is None and response.content_type == "text/html":
            message = f"HTML error page (HTTP {status})"
        return Retriable(message, code=code, status=status)
    if status in (401, 403):
        if code == "REQUEST_EXPIRED":
            _EXPIRED_DATE.set(_server_date(response))
        return AuthFailure(message, code=code or f"HTTP_{status}", status=status)
    if body is None:
        what = "HTML error page" if response.content_type == "text/html" else "non-JSON error answer"
        return Rejected(f"{what} (HTTP {status})", status=status)
    if status == 400 and "updatedSince" in fields:
        return UpdatedSinceRefused(message, code=code, status=status)
    if status == 422 and code == "APPOINTMENT_CLOSED":
        return Conflict(message, code=code, status=status)
    if status == 404:
        return Rejected(message, code=code or "NOT_FOUND", status=status)
    return Rejected(message, code=code, status=status)


# -- calls -------------------------------------------------------------------------------------------------
class OnliveClient(VendorClient):
    """The Onlive calls syncd makes; answers are Onlive's raw JSON (dicts)."""

    def __init__(self, config: ConnectorConfig, options: Mapping[str, Any], setup: HttpSetup) -> None:
        self.name = config.name
        self.prefix = str(options.get("api_prefix", "/api/v2/appointments")).rstrip("/")
        self.default_wait = float(options.get("rate_limit_default_wait_s", 60))
        self.auth = OnliveAuth(config.auth_value("access_key_id"), config.auth_value("secret_access_key"))
        super().__init__(vendor_http(config, setup, classify=self.classify, auth=self.auth))

    def classify(self, response: Response) -> VendorError | None:
        error = classify(response, default_wait=self.default_wait)
        if error is None:
            # part 7: every authenticated answer says how much of the window is left
            remaining = response.headers.get("X-RateLimit-Remaining")
            reset = response.headers.get("X-RateLimit-Reset")
            if remaining is not None and reset is not None and remaining.strip() == "0":
                try:
                    self.http.block_for(float(reset))
                except ValueError:
                    pass
        return error

    def _path(self, suffix: str = "", params: Mapping[str, str] | None = None) -> str:
        path = self.prefix + suffix
        if params:
            path += "?" + query_string(params)
        return path

    @staticmethod
    def _record(response: Response) -> dict[str, Any]:
        data = response.json()
        if not isinstance(data, dict) or not data.get("id"):
            raise Retriable("answer without an appointment record", status=response.status)
        return data

    async def list(self, params: Mapping[str, str], *, op: str = "list") -> tuple[list[dict[str, Any]], Response]:
        """One page of ``GET /api/v2/appointments`` (the ``data`` array and the answer)."""
        response = await self.http.request(op, "GET", self._path("", params))
        body = response.json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise Retriable("list answer without a data array", status=response.status)
        return [item for item in data if isinstance(item, dict)], response

    async def get(self, appointment_id: str) -> dict[str, Any] | None:
        """The record, or None when Onlive answers 404 (unknown id)."""
        try:
            response = await self.http.request("read", "GET", self._path("/" + quote(appointment_id, safe="")))
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        return self._record(response)

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.http.request("create", "POST", self._path(), json=dict(body))
        try:
            return self._record(response)
        except Retriable as exc:
            # a 2xx without the record: whether it was created is unknown, so search before repeating
            raise UnknownOutcome(exc.message, status=response.status, connector=self.name,
                                 operation="create") from exc

    async def update(self, appointment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.http.request("update", "PUT", self._path("/" + quote(appointment_id, safe="")),
                                           json=dict(body))
        return self._record(response)

    async def cancel(self, appointment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # a cancel repeated after a loss gets 422 ALREADY_CANCELLED, which the caller counts as success
        response = await self.http.request("cancel", "POST",
                                           self._path("/" + quote(appointment_id, safe="") + "/cancel"),
                                           json=dict(body), idempotent=True)
        return self._record(response)
