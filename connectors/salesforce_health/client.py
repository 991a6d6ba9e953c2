"""Salesforce Health Cloud over HTTP: OAuth refresh-token auth, error classification, API calls.

Written from docs/vendors/salesforce_health.md §1-§9; every call goes through
:class:`syncd.http.HttpClient` (timeouts, retries, rate-limit gate, call counters).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import structlog
import yarl

from syncd.config import ConnectorConfig
from syncd.connector import StateStore
from syncd.connectorkit import HttpSetup, VendorClient, refresh_token_form, vendor_http
from syncd.errors import AuthFailure, Conflict, RateLimited, Rejected, Retriable, UnknownOutcome, VendorError
from syncd.http import HttpClient, Response, SharedRefresh

__all__ = [
    "NotFound",
    "ReplicationDateError",
    "SalesforceAuth",
    "SalesforceClient",
    "mask_text",
]

log = structlog.get_logger(__name__)

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE_RE = re.compile(r"\+?\d[\d ().-]{6,}\d")
_USAGE_RE = re.compile(r"api-usage=(\d+)/(\d+)")

REFRESH_STATE_KEY = "salesforce_health.refresh_token"


class NotFound(Rejected):
    """404 ``NOT_FOUND`` / ``ENTITY_IS_DELETED``: the record is gone (deleted -> entered-in-error)."""


class ReplicationDateError(Rejected):
    """400 ``INVALID_REPLICATION_DATE`` / ``EXCEEDED_ID_LIMIT``: run the window reconciliation (§2 c)."""


def mask_text(text: str) -> str:
    """The vendor's message with e-mail addresses and phone numbers masked."""
    return _PHONE_RE.sub("***", _EMAIL_RE.sub("***@***", text))


def error_items(body: Any) -> list[dict[str, Any]]:
    """The ``[{"message", "errorCode"}]`` items of an error body (array, or one object)."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return []
    return [item for item in body if isinstance(item, dict)]


def _first(items: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    if not items:
        return None, ""
    code = items[0].get("errorCode")
    message = items[0].get("message")
    return (str(code) if code is not None else None), mask_text(str(message) if message is not None else "")


def classify_output(output: Mapping[str, Any], status: int) -> VendorError | None:
    """A Connect "Appointment Management Output": ``isSuccess:false`` is a failure (§4, §6)."""
    if output.get("isSuccess") is not False:
        return None
    code, message = _first(error_items(output.get("error")))
    if code == "UNABLE_TO_LOCK_ROW":
        return Retriable(message or "row locked", code=code, status=status)
    if code == "INVALID_STATE":
        return Conflict(message or "locked by its state", code=code, status=status)
    if str(output.get("status", "")).lower() == "rejected" and code is None:
        code = "EHR_REJECTED"
    return Rejected(message or "refused", code=code or "NOT_SUCCESS", status=status)


class SalesforceAuth:
    """Bearer access token from the refresh-token flow (§1); concurrent callers share one refresh."""

    def __init__(self, config: ConnectorConfig, state: StateStore | None) -> None:
        self.config = config
        self.state = state
        self.http: HttpClient | None = None
        self.shared = SharedRefresh()
        self.access_token: str | None = None
        self.instance_url: str | None = None
        self._used: ContextVar[int] = ContextVar(f"sf_auth_{id(self)}", default=-1)
        self.refreshes = 0

    def _config_token_tag(self) -> str:
        return hashlib.sha256(self.config.auth_value("refresh_token").encode()).hexdigest()[:16]

    async def _refresh_token(self) -> str:
        """The rotated refresh token kept in the state store (when it descends from the configured
        one), else the configured one."""
        if self.state is not None:
            raw = await self.state.get(REFRESH_STATE_KEY)
            if raw:
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                if isinstance(data, dict) and data.get("base") == self._config_token_tag() and data.get("token"):
                    return str(data["token"])
        return self.config.auth_value("refresh_token")

    async def _fetch(self) -> None:
        assert self.http is not None
        form = refresh_token_form(self.config, await self._refresh_token())
        response = await self.http.request(
            "token", "POST", self.config.auth_value("token_url"), data=form, use_auth=False,
            classify=classify_token, idempotent=True, headers={"Accept": "application/json"},
        )
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise AuthFailure("token answer without an access_token", code="invalid_token_answer",
                              status=response.status)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and self.state is not None:
            # the old refresh token is dead now: store the new one before using the access token
            await self.state.set(REFRESH_STATE_KEY, json.dumps({"base": self._config_token_tag(), "token": rotated}))
        instance = body.get("instance_url")
        if isinstance(instance, str) and instance:
            instance = instance.rstrip("/")
            if instance != self.config.base_url.rstrip("/") and instance != self.instance_url:
                log.warning("instance_url_differs", connector=self.config.name, op="token")
            self.instance_url = instance
        self.access_token = body["access_token"]
        self.refreshes += 1
        log.info("token_refreshed", connector=self.config.name, op="token", count=self.refreshes)

    async def ensure(self) -> None:
        if self.access_token is None:
            await self.shared.run(self.shared.generation, self._fetch)

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        await self.ensure()
        self._used.set(self.shared.generation)
        headers["Authorization"] = f"Bearer {self.access_token}"
        headers["Accept"] = "application/json"

    async def refresh(self) -> bool:
        await self.shared.run(self._used.get(), self._fetch)
        return True


def classify_token(response: Response) -> VendorError | None:
    """The token endpoint (§1): 400 ``invalid_grant`` / ``invalid_client*`` -> auth."""
    if 200 <= response.status < 300:
        return None
    if response.status >= 500:
        return Retriable(f"token endpoint answered {response.status}", status=response.status)
    body = response.json_or_none()
    code = body.get("error") if isinstance(body, dict) else None
    detail = body.get("error_description") if isinstance(body, dict) else None
    return AuthFailure(mask_text(str(detail or "token refused")), code=str(code or "token_refused"),
                       status=response.status)


class SalesforceClient(VendorClient):
    """The API calls syncd makes (§2-§4, §9), each classified by :meth:`classify`."""

    def __init__(
        self,
        config: ConnectorConfig,
        setup: HttpSetup,
        *,
        state: StateStore | None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.options = dict(options or {})
        self.api_version = config.auth_value("api_version").strip().lstrip("v")
        self.auth = SalesforceAuth(config, state)
        super().__init__(vendor_http(config, setup, classify=self.classify, auth=self.auth, headers=None))
        self.auth.http = self.http
        self.api_usage: tuple[int, int] | None = None

    # -- classification ------------------------------------------------------------------------
    def _track_usage(self, response: Response) -> None:
        info = response.headers.get("Sforce-Limit-Info")
        if info:
            match = _USAGE_RE.search(info)
            if match:
                self.api_usage = (int(match.group(1)), int(match.group(2)))

    @property
    def usage_ratio(self) -> float:
        if not self.api_usage or self.api_usage[1] <= 0:
            return 0.0
        return self.api_usage[0] / self.api_usage[1]

    def classify(self, response: Response) -> VendorError | None:
        """Every ``/services/data`` answer -> None or one error kind (§6, §7)."""
        self._track_usage(response)
        status = response.status
        body = response.json_or_none()
        if 200 <= status < 300:
            if isinstance(body, dict) and "isSuccess" in body:
                return classify_output(body, status)
            return None
        code, message = _first(error_items(body))
        if not message:
            message = f"HTTP {status} answer" + ("" if body is not None else " without a JSON error body")
        if code == "UNABLE_TO_LOCK_ROW":
            return Retriable(message, code=code, status=status)
        if status == 401:
            return AuthFailure(message, code=code or "INVALID_SESSION_ID", status=status)
        if status == 403:
            if code == "REQUEST_LIMIT_EXCEEDED":
                if "concurrent" in message.lower():
                    wait = float(self.options.get("concurrent_limit_wait_s", 5))
                else:
                    wait = float(self.options.get("total_limit_wait_s", 900))
                return RateLimited(message, wait=wait, code=code, status=status)
            return AuthFailure(message, code=code or "FORBIDDEN", status=status)
        if status == 404:
            return NotFound(message, code=code or "NOT_FOUND", status=status)
        if status == 412:
            return Conflict(message, code=code or "PRECONDITION_FAILED", status=status)
        if status == 429:
            return RateLimited(message, wait=response.retry_after() or 5.0, code=code, status=status)
        if status >= 500:
            return Retriable(message, code=code, status=status)
        if code in ("INVALID_REPLICATION_DATE", "EXCEEDED_ID_LIMIT"):
            return ReplicationDateError(message, code=code, status=status)
        if code in ("INVALID_FIELD", "MALFORMED_QUERY", "INVALID_TYPE"):
            # configuration: Syncd_Id__c not deployed or no field permission
            return AuthFailure(message, code=code, status=status)
        return Rejected(message, code=code or f"HTTP_{status}", status=status)

    def _classify_create(self, response: Response) -> VendorError | None:
        """As :meth:`classify`, but a 2xx answer we cannot read leaves a create's outcome unknown."""
        if 200 <= response.status < 300 and response.body.strip():
            try:
                response.json()
            except ValueError:
                self._track_usage(response)
                return UnknownOutcome("unreadable answer to a create", status=response.status)
        return self.classify(response)

    # -- urls ----------------------------------------------------------------------------------
    async def url(self, path: str) -> str:
        """Absolute URL of a ``/services/data`` path on the token's ``instance_url``."""
        await self.auth.ensure()
        base = self.auth.instance_url or self.config.base_url.rstrip("/")
        if not path.startswith("/services/"):
            path = f"/services/data/v{self.api_version}/{path.lstrip('/')}"
        return base + path

    # -- reads ---------------------------------------------------------------------------------
    async def get_json(self, op: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self.http.request(op, "GET", await self.url(path), params=params)
        return response.json()

    async def composite(self, ids: Sequence[str], fields: Sequence[str]) -> list[Any]:
        body = await self.get_json(
            "read", "composite/sobjects/ServiceAppointment", {"ids": ",".join(ids), "fields": ",".join(fields)}
        )
        if not isinstance(body, list) or len(body) != len(ids):
            raise Retriable("composite read answered an unexpected shape", code="BAD_SHAPE")
        return body

    async def get_one(self, external_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        """A single GET; None on 404 (deleted or unknown)."""
        try:
            body = await self.get_json("read_one", f"sobjects/ServiceAppointment/{external_id}",
                                       {"fields": ",".join(fields)})
        except NotFound:
            return None
        if not isinstance(body, dict):
            raise Retriable("single read answered an unexpected shape", code="BAD_SHAPE")
        return body

    async def query(self, soql: str, op: str = "query") -> list[dict[str, Any]]:
        """Run one SOQL query and follow ``nextRecordsUrl`` until ``done``."""
        out: list[dict[str, Any]] = []
        async for page in self.query_pages(soql, op):
            out.extend(page)
        return out

    async def query_pages(self, soql: str, op: str = "query") -> Any:
        body = await self.get_json(op, "query", {"q": soql})
        while True:
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise Retriable("query answered an unexpected shape", code="BAD_SHAPE")
            yield [r for r in body["records"] if isinstance(r, dict)]
            next_url = body.get("nextRecordsUrl")
            if body.get("done", True) or not isinstance(next_url, str) or not next_url:
                return
            body = await self.get_json(op, next_url)

    async def replication(self, feed: str, start: datetime, end: datetime) -> dict[str, Any]:
        """``updated/`` or ``deleted/`` between two instants (sent as ISO 8601 with ``+00:00``)."""
        params = {"start": start.isoformat(timespec="seconds"), "end": end.isoformat(timespec="seconds")}
        body = await self.get_json(feed, f"sobjects/ServiceAppointment/{feed}/", params)
        if not isinstance(body, dict):
            raise Retriable(f"{feed} feed answered an unexpected shape", code="BAD_SHAPE")
        return body

    # -- writes --------------------------------------------------------------------------------
    async def connect(self, op: str, method: str, external_id: str | None, body: Mapping[str, Any]) -> str:
        """One Connect call; the record's id from the Output (an isSuccess:false raised as an error)."""
        path = "connect/health/appointment-management/appointment"
        if external_id is not None:
            path += f"/{external_id}"
        response = await self.http.request(
            op, method, await self.url(path), json=dict(body),
            classify=self._classify_create if method == "POST" else None,
            idempotent=method != "POST",
        )
        output = response.json()
        if not isinstance(output, dict) or not isinstance(output.get("id"), str) or not output["id"]:
            if method == "POST":
                raise UnknownOutcome("create answered without an id", status=response.status)
            return external_id or ""
        return str(output["id"])

    async def sobject_patch(
        self, op: str, external_id: str, body: Mapping[str, Any], if_unmodified_since: str | None = None
    ) -> None:
        headers = {"If-Unmodified-Since": if_unmodified_since} if if_unmodified_since else None
        await self.http.request(
            op, "PATCH", await self.url(f"sobjects/ServiceAppointment/{external_id}"), json=dict(body),
            headers=headers, idempotent=True, expect_json=False,
        )
