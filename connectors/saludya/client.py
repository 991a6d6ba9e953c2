"""SaludYa HTTP: Bearer API key, mandatory headers, error classification (docs/vendors/saludya.md §1, §6, §7).

Every call goes through :class:`syncd.http.HttpClient`. :func:`classify` turns an answer into the error
kinds of :mod:`syncd.errors` by meaning (a 409 is a busy doctor: ``rejected``, never a concurrency
conflict). The limits of ``docs/vendors/saludya.md`` §2 ("Budget" and "Guard") are handed to the HTTP
client's limiter: :func:`quota_of` reads ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` from every
answer, background requests (scan pages, a scan's deletion checks) wait while 20 or fewer calls are
left, until the window resets, while writes go on until a 429; writes leave the request queue before
scan pages; and list pages of scans (op ``scan``) have a budget of 600 calls per UTC day.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import yarl

from syncd.config import ConnectorConfig
from syncd.connectorkit import HttpSetup, StatusRules, VendorClient, error_for, reset_wait, vendor_http
from syncd.errors import Rejected, Retriable, UnknownOutcome, VendorError
from syncd.http import Budget, Priority, Quota, Response

__all__ = ["ApiKeyAuth", "SaludYaClient", "classify", "error_text", "mask", "quota_of"]

DAY = 86_400.0

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE_RE = re.compile(r"\+?\d[\d ()-]{6,}\d")


def mask(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked (vendor messages are stored and shown)."""
    return _PHONE_RE.sub("***", _EMAIL_RE.sub("***@***", text))


def _error_object(response: Response) -> dict[str, Any]:
    body = response.json_or_none()
    error = body.get("error") if isinstance(body, dict) else None
    return dict(error) if isinstance(error, dict) else {}


def error_text(error: Mapping[str, Any], fallback: str) -> str:
    """The vendor's message plus its ``details`` (field -> message, conflicting id, suggested times)."""
    message = str(error.get("message") or fallback)
    details = error.get("details")
    if isinstance(details, dict) and details:
        parts = []
        for key, value in details.items():
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            parts.append(f"{key}: {value}")
        message = f"{message} ({'; '.join(parts)})"
    return mask(message)


def _wait_of(response: Response, fallback: float) -> float:
    retry_after = response.retry_after()
    return retry_after if retry_after is not None else reset_wait(response, default=fallback)


#: part 6's table by meaning: 401 refused key, 429 wait, 408/5xx retry, 422 state lock or transition (the
#: connector re-reads once and decides conflict or rejected); 400, 403, 404 and 409 (busy doctor) rejected
_STATUS_RULES = StatusRules(auth=frozenset({401}), conflict=frozenset({422}))
_DEFAULT_CODES = {401: "UNAUTHORIZED", 429: "RATE_LIMIT_EXCEEDED", 422: "INVALID_STATE_TRANSITION"}


def classify(response: Response, *, rate_limit_fallback: float = 60.0) -> VendorError | None:
    """SaludYa's answer -> an error kind (None for success). Part 6's table, by meaning."""
    status = response.status
    if 200 <= status < 300:
        return None
    error = _error_object(response)
    code = str(error["code"]) if error.get("code") else None
    if not error and response.content_type != "application/json":
        what = f"HTTP {status} with a {response.content_type or 'non-JSON'} body"
    else:
        what = f"HTTP {status}"
    text = error_text(error, what) if error else what
    wait = _wait_of(response, rate_limit_fallback) if status in _STATUS_RULES.rate_limited else 0.0
    return error_for(_STATUS_RULES, status, text, code=code or _DEFAULT_CODES.get(status), wait=wait)


def quota_of(response: Response) -> Quota | None:
    """§7: ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (unix seconds) describe the window with
    the fewest requests left; None when the answer carries none (a 401, or rate limits off)."""
    remaining = _int(response.headers.get("X-RateLimit-Remaining"))
    reset = response.headers.get("X-RateLimit-Reset")
    if remaining is None or reset is None:
        return None
    try:
        return Quota(remaining=remaining, reset_at=float(reset))
    except ValueError:
        return None


class ApiKeyAuth:
    """``Authorization: Bearer <api_key>`` and a fresh ``X-Request-ID`` per request; nothing to refresh."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        headers["Authorization"] = f"Bearer {self._api_key}"
        headers["X-Request-ID"] = str(uuid.uuid4())

    async def refresh(self) -> bool:
        return False  # a static API key: an auth failure stops the connector


class SaludYaClient(VendorClient):
    """The SaludYa routes syncd uses: list, GET one, POST, PUT."""

    def __init__(self, config: ConnectorConfig, options: Mapping[str, Any], setup: HttpSetup) -> None:
        self.prefix = str(options["api_prefix"]).strip("/")
        self.page_size = int(options["page_size"])
        self.fallback_wait = float(options["rate_limit_fallback_s"])
        super().__init__(
            vendor_http(
                config,
                setup,
                classify=self._classify,
                auth=ApiKeyAuth(config.auth_value("api_key")),
                headers={"Accept": "application/json", "Accept-Language": "en"},
                # docs/vendors/saludya.md §2 "Guard" and "Budget"
                quota_of=quota_of,
                reserve=int(options["guard_remaining"]),
                budgets={"scan": Budget(calls=int(options["daily_call_budget"]), window=DAY)},
            ),
        )

    def _classify(self, response: Response) -> VendorError | None:
        return classify(response, rate_limit_fallback=self.fallback_wait)

    def _path(self, suffix: str = "") -> str:
        return f"{self.prefix}/appointments{suffix}"

    # -- routes -------------------------------------------------------------------------------
    async def list_page(self, params: Mapping[str, str], page: int, *, op: str = "list",
                        priority: Priority = Priority.READ) -> dict[str, Any]:
        """One page of ``GET /api/appointments`` (created_at ascending, ties by id)."""
        query = {"sort_by": "created_at", "sort_order": "asc", **params, "page": str(page),
                 "limit": str(self.page_size)}
        response = await self.http.request(op, "GET", self._path(), params=query, priority=priority)
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise Retriable("list answer without a data array", status=response.status, code="BAD_ENVELOPE")
        return body

    async def get_one(self, appointment_id: str, *, op: str = "read",
                      priority: Priority = Priority.READ) -> dict[str, Any] | None:
        """``GET /api/appointments/{id}``: the record, or None when SaludYa answers 404."""
        try:
            response = await self.http.request(op, "GET", self._path("/" + _quote(appointment_id)),
                                               priority=priority)
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        return _record_of(response)

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/appointments``. A success whose body is not a record leaves the outcome unknown
        (the create may have happened): :class:`UnknownOutcome`, so the caller searches, never repeats."""
        response = await self.http.request("create", "POST", self._path(), json=dict(body), expect_json=False)
        try:
            return _record_of(response)
        except (ValueError, Retriable) as exc:
            raise UnknownOutcome("create answered without a readable record", status=response.status,
                                 code="BAD_ENVELOPE", operation="create") from exc

    async def update(self, appointment_id: str, body: Mapping[str, Any], *, op: str = "update") -> dict[str, Any]:
        response = await self.http.request(op, "PUT", self._path("/" + _quote(appointment_id)), json=dict(body))
        return _record_of(response)


def _record_of(response: Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict) or not body.get("id"):
        raise Retriable("answer without an appointment record", status=response.status, code="BAD_ENVELOPE")
    return body


def _quote(value: str) -> str:
    return quote(value, safe="")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
