"""Dentally over HTTP (docs/vendors/dentally.md §1, §3, §4, §6, §7): auth, error classification, calls.

Every call goes through :class:`syncd.http.HttpClient` (timeouts, retries, Retry-After, rate-limit
gate). This module knows Dentally's wire shapes; it does no canonical mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import structlog
import yarl

from syncd.config import ConnectorConfig
from syncd.connectorkit import HttpSetup, VendorClient, reset_wait, vendor_http
from syncd.errors import AuthFailure, Conflict, RateLimited, Rejected, Retriable, VendorError
from syncd.http import Response

__all__ = ["PATIENT_LOCKED", "STATE_LOCK_PREFIX", "DentallyAuth", "DentallyClient", "classify", "mask"]

log = structlog.get_logger(__name__)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")

STATE_LOCK_PREFIX = "The appointment can not be updated as the current status is:"
PATIENT_LOCKED = "can not change patients"
RATE_LIMIT_MESSAGE = "Rate limit exceeded"
#: the code given to a 400 that names ``updated_after``: the poll switches to window mode (part 6)
UPDATED_AFTER_REFUSED = "updated_after_refused"


def mask(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked (vendor messages are stored)."""
    return _PHONE.sub("***", _EMAIL.sub("***@***", text))


def _error_of(response: Response) -> dict[str, Any] | None:
    body = response.json_or_none()
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    return error if isinstance(error, dict) else None


def params_of(response: Response) -> dict[str, list[str]]:
    """``error.params`` as ``{field: [messages]}`` (empty when absent or malformed)."""
    error = _error_of(response)
    params = error.get("params") if error else None
    if not isinstance(params, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, value in params.items():
        if isinstance(value, list):
            out[str(key)] = [str(v) for v in value]
        elif value is not None:
            out[str(key)] = [str(value)]
    return out


def _describe(message: str, params: Mapping[str, list[str]]) -> str:
    if not params:
        return mask(message)
    detail = "; ".join(f"{key}: {', '.join(msgs)}" for key, msgs in sorted(params.items()))
    return mask(f"{message} ({detail})")


def hourly_wait(response: Response, *, default: float, now: float | None = None) -> float:
    """Part 7: wait ``X-RateLimit-Reset - now + 1`` seconds (at least one), or ``default`` when the header
    is absent."""
    return reset_wait(response, default=default, floor=1.0, now=now)


def classify(response: Response, *, hourly_default: float = 60.0) -> VendorError | None:
    """A Dentally answer -> an error kind (docs/vendors/dentally.md §6), or None for success."""
    status = response.status
    if status < 300:
        return None
    error = _error_of(response)
    etype = str(error.get("type")) if error and error.get("type") else None
    message = str(error.get("message")) if error and error.get("message") else None
    params = params_of(response)
    if status == 429:
        wait = response.retry_after()
        return RateLimited(message or "Too many requests", wait=wait if wait is not None else 1.0,
                           code=etype or "rate_limit_error", status=status)
    if status >= 500:
        return Retriable(mask(message) if message else f"HTTP {status}", code=etype, status=status)
    if status == 403 and message == RATE_LIMIT_MESSAGE:
        return RateLimited(message, wait=hourly_wait(response, default=hourly_default), code=etype, status=status)
    if status in (401, 403):
        return AuthFailure(mask(message) if message else f"HTTP {status}", code=etype, status=status)
    if error is None or message is None:
        text = "HTML error page" if response.content_type == "text/html" else "non-JSON error answer"
        return Rejected(text, status=status)
    text = _describe(message, params)
    if status == 400 and "updated_after" in params:
        return Rejected(text, code=UPDATED_AFTER_REFUSED, status=status)
    if status == 422:
        state_msgs = params.get("state", [])
        locked = any(m.startswith(STATE_LOCK_PREFIX) for m in state_msgs)
        patient = any(PATIENT_LOCKED in m for m in params.get("patient_id", []))
        others = set(params) - {"state", "patient_id"}
        only_lock = locked and not patient and not others and all(m.startswith(STATE_LOCK_PREFIX) for m in state_msgs)
        if only_lock:
            return Conflict(text, code=etype, status=status)
    return Rejected(text, code=etype, status=status)


def classify_get(response: Response) -> VendorError | None:
    """A single GET: 404 is an answer (the record is deleted), not an error."""
    if response.status == 404:
        return None
    return classify(response)


class DentallyAuth:
    """``Authorization: Bearer <access_token>`` and the mandatory ``User-Agent``; nothing to refresh."""

    def __init__(self, config: ConnectorConfig) -> None:
        self.token = config.auth_value("access_token")
        self.user_agent = config.auth_value("user_agent")

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        headers["Authorization"] = f"Bearer {self.token}"
        headers["User-Agent"] = self.user_agent

    async def refresh(self) -> bool:
        return False  # a static token (part 1): an auth failure stops the connector


class DentallyClient(VendorClient):
    """The Dentally calls syncd makes, as thin wrappers over :class:`HttpClient`."""

    def __init__(self, config: ConnectorConfig, options: Mapping[str, Any], setup: HttpSetup) -> None:
        self.config = config
        self.prefix = str(options["api_prefix"]).rstrip("/")
        self.page_size = int(options["page_size"])
        hourly_default = float(options["hourly_wait_default_s"])
        self.auth = DentallyAuth(config)
        super().__init__(
            vendor_http(config, setup, classify=lambda r: classify(r, hourly_default=hourly_default), auth=self.auth),
            max_in_flight=int(options["max_in_flight"]),
        )

    @property
    def appointments_path(self) -> str:
        return f"{self.prefix}/appointments"

    @staticmethod
    def appointment_of(response: Response) -> dict[str, Any]:
        body = response.json()
        record = body.get("appointment") if isinstance(body, dict) else None
        if not isinstance(record, dict):
            raise Retriable("Dentally answered without an appointment object", status=response.status)
        return record

    @staticmethod
    def appointments_of(response: Response) -> list[dict[str, Any]]:
        body = response.json()
        items = body.get("appointments") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Retriable("Dentally answered a list without appointments", status=response.status)
        return [item for item in items if isinstance(item, dict)]

    # -- reads -----------------------------------------------------------------------------------
    async def get_one(self, external_id: str, *, op: str = "read") -> dict[str, Any] | None:
        """One appointment, or None when Dentally answers 404 (deleted or unknown)."""
        response = await self._call(op, "GET", f"{self.appointments_path}/{external_id}", classify=classify_get)
        if response.status == 404:
            return None
        return self.appointment_of(response)

    async def list_page(self, params: Mapping[str, str], *, page: int, op: str) -> list[dict[str, Any]]:
        query = {**params, "page": str(page), "per_page": str(self.page_size)}
        response = await self._call(op, "GET", self.appointments_path, params=query)
        return self.appointments_of(response)

    async def list_meta(self, params: Mapping[str, str], *, op: str) -> dict[str, Any]:
        """``meta`` of a one-item list page (its ``total``)."""
        query = {**params, "page": "1", "per_page": "1"}
        response = await self._call(op, "GET", self.appointments_path, params=query)
        body = response.json()
        meta = body.get("meta") if isinstance(body, dict) else None
        return meta if isinstance(meta, dict) else {}

    async def cancellation_reasons(self) -> list[dict[str, Any]]:
        response = await self._call("reasons", "GET", f"{self.prefix}/appointment_cancellation_reasons")
        body = response.json()
        items = body.get("appointment_cancellation_reasons") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Retriable("Dentally answered the reasons list in an unknown shape", status=response.status)
        return [item for item in items if isinstance(item, dict)]

    # -- writes ----------------------------------------------------------------------------------
    async def create(self, appointment: Mapping[str, Any]) -> dict[str, Any]:
        """POST one appointment (never repeated blindly: UnknownOutcome when the answer is lost)."""
        response = await self._call("create", "POST", self.appointments_path,
                                    json={"appointment": dict(appointment)}, idempotent=False)
        return self.appointment_of(response)

    async def update(self, external_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """PUT only the fields to change; None when the record is gone (404)."""
        response = await self._call("update", "PUT", f"{self.appointments_path}/{external_id}",
                                    json={"appointment": dict(changes)}, classify=classify_get)
        if response.status == 404:
            return None
        return self.appointment_of(response)
