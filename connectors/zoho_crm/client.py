"""Zoho CRM over HTTP (docs/vendors/zoho_crm.md §1, §3, §4, §6, §7): auth, error classification, calls.

Every call goes through :class:`syncd.http.HttpClient` (timeouts, retries, Retry-After, rate limit
gate). This module knows Zoho's wire shapes; it does no canonical mapping.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import structlog
import yarl

from syncd.config import ConnectorConfig
from syncd.connector import StateStore
from syncd.connectorkit import HttpSetup, VendorClient, refresh_token_form, vendor_http
from syncd.errors import AuthFailure, Conflict, RateLimited, Rejected, Retriable, VendorError
from syncd.http import HttpClient, Response, SharedRefresh

__all__ = ["ZohoAuth", "ZohoClient", "classify", "mask"]

log = structlog.get_logger(__name__)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")

#: the Zoho error code of the last auth failure classified in this task (decides whether a refresh helps)
_LAST_AUTH_CODE: ContextVar[str | None] = ContextVar("zoho_last_auth_code", default=None)
#: the token generation the current task's request was signed with (shared refresh bookkeeping)
_SEEN_GENERATION: ContextVar[int] = ContextVar("zoho_seen_generation", default=-1)

STATE_REFRESH_TOKEN = "refresh_token"


def mask(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked (vendor messages are stored)."""
    return _PHONE.sub("***", _EMAIL.sub("***@***", text))


def _body(response: Response) -> dict[str, Any] | None:
    data = response.json_or_none()
    return data if isinstance(data, dict) else None


class RateLimitPolicy:
    """Zoho's 429 carries no documented wait: ``Retry-After`` when present, else 60 s doubling to 15 min."""

    def __init__(self, base: float, ceiling: float) -> None:
        self.base = base
        self.ceiling = ceiling
        self.consecutive = 0

    def wait(self, retry_after: float | None) -> float:
        self.consecutive += 1
        if retry_after is not None:
            return float(retry_after)
        return min(self.ceiling, self.base * 2.0 ** (self.consecutive - 1))

    def ok(self) -> None:
        self.consecutive = 0


def classify(response: Response, policy: RateLimitPolicy | None = None) -> VendorError | None:
    """A Zoho answer -> an error kind (docs/vendors/zoho_crm.md §6), or None for success.

    Write answers that carry per-record results (``data``: one result per record, HTTP 200/201/202,
    or 400/403 when all failed) are successes here: the caller reads every record's ``status``.
    """
    status = response.status
    if status < 300 or status == 304:
        if policy is not None:
            policy.ok()
        return None
    body = _body(response)
    code = str(body.get("code")) if body and body.get("code") else None
    message = mask(str(body.get("message"))) if body and body.get("message") else f"HTTP {status}"
    details = body.get("details") if body and isinstance(body.get("details"), dict) else {}
    api_name = details.get("api_name") if isinstance(details, dict) else None
    if api_name:
        message = f"{message} (api_name {api_name})"
    if status in (400, 403) and body is not None and isinstance(body.get("data"), list):
        return None  # every record failed: per-record results
    if status == 429:
        wait = (policy or RateLimitPolicy(60.0, 900.0)).wait(response.retry_after())
        return RateLimited(message, wait=wait, code=code or "TOO_MANY_REQUESTS", status=status)
    if status >= 500:
        return Retriable(message, code=code, status=status)
    if status == 401:
        _LAST_AUTH_CODE.set(code)
        return AuthFailure(message, code=code, status=status)
    if status == 403:
        if code == "NOT_ALLOWED":
            return Conflict(message, code=code, status=status)
        _LAST_AUTH_CODE.set(code)
        return AuthFailure(message, code=code, status=status)
    if code == "DEPENDENT_FIELD_UNCHANGED":
        return Conflict(message, code=code, status=status)
    if body is None:
        text = "non-JSON error answer"
        if response.content_type == "text/html":
            text = "HTML error page"
        return Rejected(text, code=None, status=status)
    return Rejected(message, code=code, status=status)


def classify_token(response: Response) -> VendorError | None:
    """The token endpoint: failures come back as HTTP 200 with an ``error`` key (docs/vendors/zoho_crm.md §1)."""
    body = _body(response)
    if response.status >= 500:
        return Retriable(f"token endpoint HTTP {response.status}", status=response.status)
    if response.status == 429:
        return RateLimited("token endpoint rate limited", wait=response.retry_after() or 60.0, status=429)
    if body is None:
        return Retriable("token endpoint answered no JSON", status=response.status)
    if body.get("error") or response.status >= 400:
        return AuthFailure("token refresh refused", code=str(body.get("error") or "token_error"),
                           status=response.status)
    if not body.get("access_token"):
        return AuthFailure("token answer without access_token", code="no_access_token", status=response.status)
    return None


class ZohoAuth:
    """``Authorization: Zoho-oauthtoken <token>``; refreshes before expiry and once on ``INVALID_TOKEN``."""

    def __init__(self, config: ConnectorConfig, state: StateStore | None, *, margin_s: float) -> None:
        self.config = config
        self.state = state
        self.margin_s = margin_s
        self.token: str | None = None
        self.expires_at = 0.0
        self.shared = SharedRefresh()
        self.http: HttpClient | None = None
        self.refreshes = 0

    async def _refresh_token(self) -> str:
        if self.state is not None:
            stored = await self.state.get(STATE_REFRESH_TOKEN)
            if stored:
                return stored
        return self.config.auth_value("refresh_token")

    async def _do_refresh(self) -> None:
        assert self.http is not None
        url = str(yarl.URL(self.config.auth_value("accounts_url").rstrip("/") + "/oauth/v2/token"))
        form = refresh_token_form(self.config, await self._refresh_token())
        response = await self.http.request(
            "token", "POST", url, data=form, idempotent=True, classify=classify_token, use_auth=False
        )
        body = response.json()
        self.token = str(body["access_token"])
        expires_in = float(body.get("expires_in") or 3600)
        self.expires_at = time.monotonic() + expires_in
        self.refreshes += 1
        rotated = body.get("refresh_token")
        if rotated and self.state is not None:
            await self.state.set(STATE_REFRESH_TOKEN, str(rotated))
        api_domain = str(body.get("api_domain") or "").rstrip("/")
        if api_domain and api_domain != self.config.base_url.rstrip("/"):
            log.warning("zoho_api_domain_differs", connector=self.config.name, op="token")
        log.info("token_refreshed", connector=self.config.name, op="token")

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        generation = self.shared.generation
        if self.token is None or self.expires_at - time.monotonic() < self.margin_s:
            await self.shared.run(generation, self._do_refresh)
        _SEEN_GENERATION.set(self.shared.generation)
        headers["Authorization"] = f"Zoho-oauthtoken {self.token}"

    async def refresh(self) -> bool:
        if _LAST_AUTH_CODE.get() != "INVALID_TOKEN":
            return False  # a refresh cannot help with a wrong scheme, scope or permission
        await self.shared.run(_SEEN_GENERATION.get(), self._do_refresh)
        return True


class ZohoClient(VendorClient):
    """The Zoho calls syncd makes, as thin wrappers over :class:`HttpClient`."""

    def __init__(
        self,
        config: ConnectorConfig,
        options: Mapping[str, Any],
        setup: HttpSetup,
        *,
        state: StateStore | None,
    ) -> None:
        self.config = config
        self.module = str(options["module"])
        self.prefix = str(options["api_prefix"]).rstrip("/")
        self.fields = ",".join(options["read_fields"])
        self.page_size = int(options["page_size"])
        self.policy = RateLimitPolicy(float(options["rate_limit_wait_s"]), float(options["rate_limit_wait_max_s"]))
        self.auth = ZohoAuth(config, state, margin_s=float(options["token_refresh_margin_s"]))
        super().__init__(
            vendor_http(config, setup, classify=lambda r: classify(r, self.policy), auth=self.auth),
            max_in_flight=int(options["max_in_flight"]),
        )
        self.auth.http = self.http

    @property
    def module_path(self) -> str:
        return f"{self.prefix}/{self.module}"

    @staticmethod
    def data_of(response: Response) -> list[dict[str, Any]]:
        if response.status in (204, 304):
            return []
        body = response.json()
        if not isinstance(body, dict):
            raise Retriable("Zoho answered JSON that is not an object", status=response.status)
        data = body.get("data") or []
        if not isinstance(data, list):
            raise Retriable("Zoho answered a data key that is not a list", status=response.status)
        return [r for r in data if isinstance(r, dict)]

    @staticmethod
    def info_of(response: Response) -> dict[str, Any]:
        if response.status in (204, 304):
            return {}
        body = response.json()
        info = body.get("info") if isinstance(body, dict) else None
        return info if isinstance(info, dict) else {}

    # -- reads -----------------------------------------------------------------------------------
    async def get_by_ids(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        response = await self._call("read", "GET", self.module_path, params={"ids": ",".join(ids),
                                                                             "fields": self.fields})
        return self.data_of(response)

    async def get_one(self, external_id: str) -> dict[str, Any] | None:
        response = await self._call("read", "GET", f"{self.module_path}/{external_id}")
        data = self.data_of(response)
        return data[0] if data else None

    async def list_modified(self, since: str | None, *, page: int | None, page_token: str | None) -> Response:
        params = {"fields": self.fields, "per_page": str(self.page_size), "sort_by": "Modified_Time",
                  "sort_order": "asc"}
        if page_token:
            params["page_token"] = page_token
        else:
            params["page"] = str(page or 1)
        headers = {"If-Modified-Since": since} if since else None
        return await self._call("poll", "GET", self.module_path, params=params, headers=headers)

    async def list_deleted(self, since: str | None, *, page: int | None, page_token: str | None) -> Response:
        params = {"type": "all", "per_page": str(self.page_size)}
        if page_token:
            params["page_token"] = page_token
        else:
            params["page"] = str(page or 1)
        headers = {"If-Modified-Since": since} if since else None
        return await self._call("deleted", "GET", f"{self.module_path}/deleted", params=params, headers=headers)

    async def search(self, criteria: str, *, page: int = 1, op: str = "search") -> Response:
        params = {"criteria": criteria, "fields": self.fields, "per_page": str(self.page_size), "page": str(page)}
        return await self._call(op, "GET", f"{self.module_path}/search", params=params)

    async def preferences(self) -> dict[str, Any]:
        response = await self._call("preferences", "GET", f"{self.prefix}/settings/appointment_preferences")
        body = response.json_or_none()
        prefs = body.get("appointment_preferences") if isinstance(body, dict) else None
        return prefs if isinstance(prefs, dict) else {}

    # -- writes ----------------------------------------------------------------------------------
    async def create(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """POST one record; the per-record result (never retried blindly: UnknownOutcome on doubt)."""
        response = await self._call("create", "POST", self.module_path,
                                    json={"data": [dict(record)], "trigger": []}, idempotent=False)
        results = self.data_of(response)
        if not results:
            raise Retriable("create answered no per-record result", status=response.status)
        return results[0]

    async def update(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """PUT up to 100 records; one result per record, in input order."""
        response = await self._call("update", "PUT", self.module_path,
                                    json={"data": [dict(r) for r in records], "trigger": []}, idempotent=True)
        results = self.data_of(response)
        if len(results) != len(records):
            raise Retriable(f"update answered {len(results)} results for {len(records)} records",
                            status=response.status)
        return results

    async def watch(self, body: Mapping[str, Any]) -> Response:
        return await self._call("watch", "POST", f"{self.prefix}/actions/watch", json=dict(body), idempotent=True,
                                classify=classify_watch)


def classify_watch(response: Response) -> VendorError | None:
    """The watch answer nests its result under ``watch[]``; an INVALID_DATA there is a rejection."""
    body = _body(response)
    if body is not None and isinstance(body.get("watch"), list) and response.status in (200, 201, 202, 400):
        return None
    return classify(response)
