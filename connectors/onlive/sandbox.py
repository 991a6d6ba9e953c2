"""Onlive sandbox: a stateful fake of Onlive's Open API v2 appointments (docs/vendors/onlive.md).

Signed requests (``ONLIVESITE`` HMAC-SHA256 over method, path, canonical query, ``x-onlive-site-date``
and the body hash, ±900 s of the sandbox clock), ``GET/POST /api/v2/appointments``,
``GET/PUT/DELETE /api/v2/appointments/{id}``, ``POST /api/v2/appointments/{id}/cancel``; partial PUT
with replaced arrays and objects, soft deletion, the §5 state machine, service and calendar rules,
NestJS-throttler-style rate limiting and the vendor-specific faults of section 10. Onlive sends no
webhooks. Written from docs/vendors/onlive.md only: nothing here is shared with the Onlive connector.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, quote

from aiohttp import web

from syncd.sandboxkit.base import Handler, SandboxBase, json_response

if TYPE_CHECKING:
    from syncd.sandboxkit.seedgen import SeedDataset

__all__ = ["OnliveSandbox", "create_sandbox", "seed_body"]

API = "/api/v2/appointments"
DEFAULT_CALENDARS = ["c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d", "c0a80122-7d2e-4f4b-9c1a-5e6f7a8b9c0d"]
DEFAULT_SERVICE_ID = "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ORGANIZATION_ID = "9d2f0a4e-1b3c-4d5e-8f6a-7b8c9d0e1f2a"
SEED_NAMESPACE = uuid.UUID("6f1c2d3e-0a4b-4c5d-9e8f-7a6b5c4d3e2f")

STATUSES = ("pending", "confirmed", "cancelled", "completed", "no-show")
CLOSED = frozenset({"cancelled", "completed", "no-show"})
UPDATABLE = (
    "title", "description", "startAt", "endAt", "guests", "reminders", "extraFields", "lang", "event",
    "status", "subStatus", "origin", "originUrl", "comment", "interactionId", "externalId",
)
NOT_NULL = frozenset({"title", "startAt", "endAt", "status", "guests"})
STRING_FIELDS = frozenset(
    {"title", "description", "lang", "subStatus", "origin", "originUrl", "comment", "interactionId", "externalId"}
)
CREATE_FIELDS = (*UPDATABLE, "calendarIds", "serviceId")
CANCEL_FIELDS = ("status", "subStatus", "guests", "strategy", "reason")
LIST_PARAMS = frozenset(
    {"from", "to", "updatedSince", "externalId", "includeDeleted", "search", "sort", "order", "page", "limit"}
)
RECORD_KEYS = (
    "id", "deletedAt", "createdAt", "updatedAt", "title", "description", "lang", "startAt", "endAt", "event",
    "reminders", "extraFields", "guests", "calendarIds", "serviceId", "status", "subStatus", "origin",
    "originUrl", "comment", "interactionId", "externalId", "cancellationReason", "organizationId",
    "userGroupId",
)
TIME_KEYS = ("deletedAt", "createdAt", "updatedAt", "startAt", "endAt")

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)$"
)
AUTH_RE = re.compile(r"^ONLIVESITE Credential[:=]([^,\s]+),\s*Signature=([0-9a-fA-F]{64})$")
DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
SUBSTATUS_RE = re.compile(r"^[a-z0-9-]{1,50}$")
SKEW_SECONDS = 900


# -- small helpers ---------------------------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 date-time with ``Z`` or an offset, as an aware UTC datetime; None if invalid."""
    if not isinstance(value, str):
        return None
    m = ISO_RE.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if zone == "Z":
        tz = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or "0")
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        when = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or "0"), micro, tzinfo=tz
        )
    except ValueError:
        return None
    return when.astimezone(UTC)


def fmt(when: datetime) -> str:
    """UTC with milliseconds: ``YYYY-MM-DDTHH:mm:ss.sssZ``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ms(when: datetime) -> datetime:
    return when.replace(microsecond=(when.microsecond // 1000) * 1000)


@lru_cache(maxsize=200_000)
def ts(stored: str) -> datetime:
    """Parse a stored (already normalised) time."""
    parsed = parse_time(stored)
    if parsed is None:
        raise ValueError(f"bad stored time {stored!r}")
    return parsed


def error(status: int, code: str, message: str, errors: list[dict[str, str]] | None = None) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status=status)


def validation(errors: list[dict[str, str]]) -> web.Response:
    return error(400, "VALIDATION_ERROR", "Validation failed", errors)


def fe(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def canonical_query(raw_query: str) -> str:
    """docs/vendors/onlive.md §1 step 1: decode each pair, RFC 3986-encode, sort by name then value, join."""
    pairs = parse_qsl(raw_query, keep_blank_values=True, encoding="utf-8", errors="strict")
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def expected_signature(secret: str, method: str, path: str, query: str, date: str, body: bytes) -> str:
    string_to_sign = "\n".join(
        [method.upper(), path, canonical_query(query), date, hashlib.sha256(body).hexdigest()]
    )
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def _blank_record() -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(reminders=[], extraFields={}, guests=[], calendarIds=[], status="pending",
                  organizationId=ORGANIZATION_ID)
    return record


class OnliveSandbox(SandboxBase):
    """Fake Onlive Open API v2 (appointments), see the module docstring."""

    vendor: ClassVar[str] = "onlive"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "access_keys": {"OLAK7Q2N4X9EXAMPLE": "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"},
        "per_minute": 120,
        "timezone": "Europe/Madrid",
        "calendars": list(DEFAULT_CALENDARS),
        "services": [
            {"id": DEFAULT_SERVICE_ID, "name": "Video consultation", "duration": 30,
             "calendarIds": list(DEFAULT_CALENDARS)},
        ],
    }

    records: dict[str, dict[str, Any]]
    notifications: dict[str, int]
    calendars: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    windows: dict[str, tuple[float, int]]

    # -- state hooks -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.records = {}
        self.notifications = {}
        self.windows = {}
        self.calendars = {}
        self.services = {}
        self._load_reference()

    def _load_reference(self) -> None:
        for cal in self.options.get("calendars") or []:
            self._put_calendar(cal)
        for svc in self.options.get("services") or []:
            self._put_service(svc)

    def _put_calendar(self, cal: Any) -> None:
        entry = {"id": cal} if isinstance(cal, str) else dict(cal)
        cid = entry.get("id")
        if not isinstance(cid, str) or not UUID_RE.match(cid):
            raise ValueError(f"calendars: id must be a UUID, got {cid!r}")
        entry["id"] = cid.lower()
        self.calendars[cid.lower()] = {**self.calendars.get(cid.lower(), {}), **entry}

    def _put_service(self, svc: Any) -> None:
        if not isinstance(svc, dict):
            raise ValueError("services: each entry must be an object")
        sid = svc.get("id")
        if not isinstance(sid, str) or not UUID_RE.match(sid):
            raise ValueError(f"services: id must be a UUID, got {sid!r}")
        duration = svc.get("duration")
        if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
            raise ValueError(f"services[{sid}].duration: positive integer (minutes) required")
        cals = svc.get("calendarIds", [])
        if not isinstance(cals, list) or not all(isinstance(c, str) for c in cals):
            raise ValueError(f"services[{sid}].calendarIds: list of calendar ids required")
        self.services[sid.lower()] = {**svc, "id": sid.lower(), "calendarIds": [c.lower() for c in cals]}

    def on_options_changed(self, names: set[str]) -> None:
        if "per_minute" in names or "rate_limits" in names:
            self.windows.clear()
        if "calendars" in names or "services" in names:
            self._load_reference()

    def dump(self) -> dict[str, Any]:
        rows = sorted(self.records.values(), key=lambda r: (r["createdAt"], r["id"]))
        return {
            "records": [
                {
                    **copy.deepcopy(r),
                    "_deleted_at": r["deletedAt"],
                    "_notifications": self.notifications.get(r["id"], 0),
                }
                for r in rows
            ],
            "calendars": [copy.deepcopy(c) for c in self.calendars.values()],
            "services": [copy.deepcopy(s) for s in self.services.values()],
        }

    def seed(self, body: dict[str, Any]) -> None:
        for cal in body.get("calendars") or []:
            self._put_calendar(cal)
        for svc in body.get("services") or []:
            self._put_service(svc)
        records = body.get("records") or []
        if not isinstance(records, list):
            raise ValueError("records: a list is required")
        for raw in records:
            self._seed_record(raw)
        for rid in body.get("delete") or []:
            key = str(rid).lower()
            if key not in self.records:
                raise ValueError(f"delete: unknown appointment {rid}")
            record = self.records[key]
            if record["deletedAt"] is None:
                self._bump(record)
                record["deletedAt"] = record["updatedAt"]

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records: each record must be an object")
        rid = str(raw.get("id") or uuid.uuid4()).lower()
        if not UUID_RE.match(rid):
            raise ValueError(f"records: id {rid!r} is not a UUID")
        existing = self.records.get(rid)
        record = copy.deepcopy(existing) if existing else _blank_record()
        for key, value in raw.items():
            if key in ("_deleted_at", "_notifications"):
                continue
            if key.startswith("_"):
                continue
            if key not in RECORD_KEYS:
                raise ValueError(f"records[{rid}]: unknown field {key}")
            record[key] = copy.deepcopy(value)
        record["id"] = rid
        if "_deleted_at" in raw:
            record["deletedAt"] = raw["_deleted_at"]
        for key in TIME_KEYS:
            if record[key] is not None:
                parsed = parse_time(record[key])
                if parsed is None:
                    raise ValueError(f"records[{rid}].{key}: ISO 8601 with offset required")
                record[key] = fmt(parsed)
        if record["startAt"] is None or record["endAt"] is None:
            raise ValueError(f"records[{rid}]: startAt and endAt are required")
        if record["status"] not in STATUSES:
            raise ValueError(f"records[{rid}].status: one of {', '.join(STATUSES)}")
        if not isinstance(record["guests"], list) or not isinstance(record["calendarIds"], list):
            raise ValueError(f"records[{rid}]: guests and calendarIds must be lists")
        record["calendarIds"] = [str(c).lower() for c in record["calendarIds"]]
        now = fmt(self.now())
        if existing is None:
            record["createdAt"] = record["createdAt"] or now
            record["updatedAt"] = record["updatedAt"] or record["createdAt"]
        else:
            record["updatedAt"] = existing["updatedAt"]
            self._bump(record)
        if "_notifications" in raw:
            self.notifications[rid] = int(raw["_notifications"])
        else:
            self.notifications.setdefault(rid, 0)
        self.records[rid] = record

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        record = self.records[record_id.lower()]
        for key, value in changes.items():
            if key not in RECORD_KEYS or key in ("id", "createdAt", "updatedAt"):
                continue
            if key in TIME_KEYS and value is not None:
                parsed = parse_time(value)
                value = fmt(parsed) if parsed else value
            record[key] = copy.deepcopy(value)
        self._bump(record)

    def _bump(self, record: dict[str, Any]) -> None:
        """Strictly increasing ``updatedAt``: the clock, or 1 ms after the previous value."""
        now = ms(self.now())
        prev = ts(record["updatedAt"]) if record.get("updatedAt") else None
        if prev is not None and now <= prev:
            now = prev + timedelta(milliseconds=1)
        record["updatedAt"] = fmt(now)

    def _notify(self, record: dict[str, Any]) -> None:
        self.notifications[record["id"]] = self.notifications.get(record["id"], 0) + 1

    # -- faults ----------------------------------------------------------------------------------
    def custom_fault_types(self) -> frozenset[str]:
        return frozenset(
            {"request_expired", "ignore_updated_since", "reject_updated_since", "ignore_external_id",
             "guest_added", "session_end"}
        )

    def add_fault(self, match: Any, action: Any, times: int = 1, rate: float | None = None) -> None:
        if isinstance(action, dict) and action.get("type") == "session_end":
            if action.get("status", "completed") not in ("completed", "no-show"):
                raise ValueError("action.status: session_end takes 'completed' or 'no-show'")
        super().add_fault(match, action, times, rate)

    async def custom_fault(
        self, action: dict[str, Any], request: web.Request, handler: Handler
    ) -> web.StreamResponse | None:
        ftype = action.get("type")
        if ftype == "request_expired":
            return self._expired()
        if ftype in ("ignore_updated_since", "reject_updated_since", "ignore_external_id"):
            request[f"onlive_{ftype}"] = True
            return await handler(request)
        if ftype in ("guest_added", "session_end"):
            ids = [str(action["id"])] if action.get("id") else await self.mutate_targets(request)
            for rid in ids:
                record = self.records.get(rid.lower())
                if record is None:
                    continue
                if ftype == "guest_added":
                    record["guests"] = [*(record.get("guests") or []), {"email": "other@example.com"}]
                else:
                    record["status"] = str(action.get("status", "completed"))
                self._bump(record)
            return await handler(request)
        return None

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return self._throttled(retry_after)

    @staticmethod
    def _throttled(retry_after: float) -> web.Response:
        wait = max(1, math.ceil(retry_after))
        resp = error(429, "RATE_LIMITED", "ThrottlerException: Too Many Requests")
        resp.headers["Retry-After"] = str(wait)
        return resp

    # -- routes ----------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._date_header)
        r = app.router
        r.add_get(API, self._signed(self._h_list))
        r.add_post(API, self._signed(self._h_create))
        r.add_get(API + "/{id}", self._signed(self._h_get))
        r.add_put(API + "/{id}", self._signed(self._h_update))
        r.add_delete(API + "/{id}", self._signed(self._h_delete))
        r.add_post(API + "/{id}/cancel", self._signed(self._h_cancel))

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = format_datetime(self.now().replace(microsecond=0), usegmt=True)

    def _expired(self) -> web.Response:
        return error(401, "REQUEST_EXPIRED", "Request date is more than 15 minutes from server time")

    def _authenticate(self, request: web.Request, body: bytes) -> tuple[str | None, web.Response | None]:
        auth = request.headers.get("Authorization")
        date = request.headers.get("x-onlive-site-date")
        m = AUTH_RE.match(auth.strip()) if auth else None
        if m is None or date is None:
            return None, error(401, "AUTH_HEADER_INVALID", "Missing or malformed authentication headers")
        date = date.strip()
        when: datetime | None = None
        if DATE_RE.match(date):
            try:
                when = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                when = None
        if when is None:
            return None, error(401, "AUTH_DATE_INVALID", "Invalid x-onlive-site-date header")
        if abs(int(when.timestamp()) - math.floor(self.clock.timestamp())) > SKEW_SECONDS:
            return None, self._expired()
        key_id, signature = m.group(1), m.group(2)
        entry = (self.options.get("access_keys") or {}).get(key_id)
        secret = entry.get("secret") if isinstance(entry, dict) else entry
        if not isinstance(secret, str):
            return None, error(401, "UNKNOWN_ACCESS_KEY", "Unknown access key")
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            wanted = expected_signature(secret, request.method, raw_path, raw_query, date, body)
        except UnicodeDecodeError:
            wanted = ""
        if not hmac.compare_digest(wanted.encode(), signature.encode()):
            return None, error(401, "SIGNATURE_MISMATCH", "Signature does not match")
        return key_id, None

    def _rate(self, key_id: str) -> tuple[web.Response | None, dict[str, str]]:
        if not self.options.get("rate_limits", True):
            return None, {}
        limit = int(self.options.get("per_minute", 120))
        now = self.clock.timestamp()
        start, count = self.windows.get(key_id, (now, 0))
        if now >= start + 60:
            start, count = now, 0
        reset = max(1, math.ceil(start + 60 - now))
        if count >= limit:
            resp = self._throttled(reset)
            resp.headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                                 "X-RateLimit-Reset": str(reset)})
            self.windows[key_id] = (start, count)
            return resp, {}
        count += 1
        self.windows[key_id] = (start, count)
        return None, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(limit - count),
                      "X-RateLimit-Reset": str(reset)}

    def _signed(
        self, inner: Callable[[web.Request, bytes, str], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            key_id, failure = self._authenticate(request, body)
            if failure is not None or key_id is None:
                return failure or error(401, "AUTH_HEADER_INVALID", "Missing or malformed authentication headers")
            limited, headers = self._rate(key_id)
            if limited is not None:
                return limited
            if request.method in ("POST", "PUT") and request.content_type != "application/json":
                resp = error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
            else:
                resp = await inner(request, body, key_id)
            resp.headers.update(headers)
            return resp

        return handler

    # -- access and lookup -----------------------------------------------------------------------
    def _scope(self, key_id: str) -> set[str] | None:
        entry = (self.options.get("access_keys") or {}).get(key_id)
        if isinstance(entry, dict) and entry.get("calendarIds") is not None:
            return {str(c).lower() for c in entry["calendarIds"]}
        return None

    def _can_see(self, key_id: str, record: dict[str, Any]) -> bool:
        scope = self._scope(key_id)
        return scope is None or bool(scope & set(record.get("calendarIds") or []))

    def _lookup(
        self, request: web.Request, key_id: str, *, write: bool
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        rid = request.match_info["id"]
        if not UUID_RE.match(rid):
            return None, error(400, "INVALID_ID", "Invalid appointment ID format",
                               [fe("appointmentId", "Must be a valid UUID")])
        record = self.records.get(rid.lower())
        if record is None or (write and record["deletedAt"] is not None):
            return None, error(404, "NOT_FOUND", "Appointment not found")
        if not self._can_see(key_id, record):
            return None, error(403, "FORBIDDEN", "Insufficient permissions to access the appointment")
        return record, None

    @staticmethod
    def _json(body: bytes) -> tuple[dict[str, Any] | None, web.Response | None]:
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, validation([fe("body", "must be valid JSON")])
        if not isinstance(data, dict):
            return None, validation([fe("body", "must be a JSON object")])
        return data, None

    # -- handlers: reads -------------------------------------------------------------------------
    async def _h_get(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        record, failure = self._lookup(request, key_id, write=False)
        if failure is not None or record is None:
            return failure or error(404, "NOT_FOUND", "Appointment not found")
        return json_response(copy.deepcopy(record))

    async def _h_list(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        errors: list[dict[str, str]] = []
        params: dict[str, str] = {}
        for name in request.query:
            values = request.query.getall(name)
            if name not in LIST_PARAMS:
                errors.append(fe(name, f"property {name} should not exist"))
            elif len(values) > 1:
                errors.append(fe(name, f"{name} must not be repeated"))
            else:
                params[name] = values[0]
        if request.get("onlive_reject_updated_since") and "updatedSince" in params:
            errors.insert(0, fe("updatedSince", "property updatedSince should not exist"))
        times: dict[str, datetime] = {}
        for name in ("from", "to", "updatedSince"):
            if name in params:
                parsed = parse_time(params[name])
                if parsed is None:
                    errors.append(fe(name, "must be a valid ISO 8601 date-time with offset"))
                else:
                    times[name] = parsed
        include_deleted = params.get("includeDeleted", "false")
        if include_deleted not in ("true", "false"):
            errors.append(fe("includeDeleted", "includeDeleted must be a boolean value"))
        sort = params.get("sort", "startAt")
        if sort not in ("startAt", "createdAt", "updatedAt"):
            errors.append(fe("sort", "sort must be one of the following values: startAt, createdAt, updatedAt"))
        order = params.get("order", "asc")
        if order not in ("asc", "desc"):
            errors.append(fe("order", "order must be one of the following values: asc, desc"))
        page = self._int_param(params, "page", 1, None, errors)
        limit = self._int_param(params, "limit", 20, 100, errors)
        if errors:
            return validation(errors)
        if request.get("onlive_ignore_updated_since"):
            times.pop("updatedSince", None)
        external_id = None if request.get("onlive_ignore_external_id") else params.get("externalId")
        search = params.get("search", "").lower()
        rows = []
        for record in self.records.values():
            if record["deletedAt"] is not None and include_deleted != "true":
                continue
            if not self._can_see(key_id, record):
                continue
            start = ts(record["startAt"])
            if "from" in times and start < times["from"]:
                continue
            if "to" in times and start >= times["to"]:
                continue
            if "updatedSince" in times and ts(record["updatedAt"]) < times["updatedSince"]:
                continue
            if external_id is not None and record.get("externalId") != external_id:
                continue
            if search and not self._matches(record, search):
                continue
            rows.append(record)
        rows.sort(key=lambda r: (ts(r[sort]), r["id"]), reverse=(order == "desc"))
        total = len(rows)
        chunk = rows[(page - 1) * limit: page * limit]
        meta = {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}
        return json_response({"data": [copy.deepcopy(r) for r in chunk], "meta": meta})

    @staticmethod
    def _matches(record: dict[str, Any], search: str) -> bool:
        texts = [str(record.get("title") or "")]
        texts += [str(g.get("email", "")) for g in record.get("guests") or [] if isinstance(g, dict)]
        return any(search in t.lower() for t in texts)

    @staticmethod
    def _int_param(
        params: dict[str, str], name: str, default: int, maximum: int | None, errors: list[dict[str, str]]
    ) -> int:
        if name not in params:
            return default
        raw = params[name]
        if not re.fullmatch(r"-?\d+", raw):
            errors.append(fe(name, f"{name} must be an integer number"))
            return default
        value = int(raw)
        if value < 1:
            errors.append(fe(name, "must not be less than 1"))
            return default
        if maximum is not None and value > maximum:
            errors.append(fe(name, f"must not be greater than {maximum}"))
            return default
        return value

    # -- validation shared by create and update --------------------------------------------------
    def _check_fields(
        self, data: dict[str, Any], allowed: tuple[str, ...], errors: list[dict[str, str]]
    ) -> dict[str, Any]:
        """Shape checks of §4 check 1; returns the sent values with times normalised."""
        clean: dict[str, Any] = {}
        for name, value in data.items():
            if name not in allowed:
                errors.append(fe(name, f"property {name} should not exist"))
                continue
            if value is None:
                if name in NOT_NULL:
                    errors.append(fe(name, f"{name} cannot be null"))
                else:
                    clean[name] = None
                continue
            if name in ("startAt", "endAt"):
                parsed = parse_time(value)
                if parsed is None:
                    errors.append(fe(name, "must be a valid ISO 8601 date-time with offset"))
                else:
                    clean[name] = fmt(parsed)
            elif name in STRING_FIELDS:
                if not isinstance(value, str):
                    errors.append(fe(name, f"{name} must be a string"))
                elif name == "title" and not value.strip():
                    errors.append(fe(name, "title should not be empty"))
                else:
                    clean[name] = value
            elif name == "status":
                if value not in STATUSES:
                    errors.append(fe(name, f"status must be one of the following values: {', '.join(STATUSES)}"))
                else:
                    clean[name] = value
            elif name == "guests":
                guests = self._check_guests(value, errors)
                if guests is not None:
                    clean[name] = guests
            elif name == "reminders":
                if not isinstance(value, list) or not all(self._reminder_ok(r) for r in value):
                    errors.append(fe(name, "reminders must be an array of {time, unit, direction}"))
                else:
                    clean[name] = copy.deepcopy(value)
            elif name in ("extraFields", "event"):
                if not isinstance(value, dict):
                    errors.append(fe(name, f"{name} must be an object"))
                else:
                    clean[name] = copy.deepcopy(value)
            elif name == "calendarIds":
                if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
                    errors.append(fe(name, "calendarIds must contain at least 1 elements"))
                else:
                    unknown = [c for c in value if c.lower() not in self.calendars]
                    if unknown:
                        errors.append(fe(name, f"unknown calendar: {unknown[0]}"))
                    else:
                        clean[name] = [c.lower() for c in value]
            elif name == "serviceId":
                if not isinstance(value, str) or value.lower() not in self.services:
                    errors.append(fe(name, "unknown service"))
                else:
                    clean[name] = value.lower()
        return clean

    @staticmethod
    def _reminder_ok(item: Any) -> bool:
        return (
            isinstance(item, dict)
            and isinstance(item.get("time"), int)
            and not isinstance(item.get("time"), bool)
            and isinstance(item.get("unit"), str)
            and isinstance(item.get("direction"), str)
        )

    @staticmethod
    def _check_guests(value: Any, errors: list[dict[str, str]]) -> list[dict[str, Any]] | None:
        if not isinstance(value, list) or not value:
            errors.append(fe("guests", "guests must contain at least 1 elements"))
            return None
        seen: set[str] = set()
        ok = True
        for guest in value:
            email = guest.get("email") if isinstance(guest, dict) else None
            if not isinstance(email, str) or not EMAIL_RE.match(email):
                errors.append(fe("guests", "guests.email must be an email"))
                ok = False
                continue
            if email.lower() in seen:
                errors.append(fe("guests", f"duplicate guest email: {email}"))
                ok = False
            seen.add(email.lower())
        return copy.deepcopy(value) if ok else None

    def _rules(
        self, record: dict[str, Any], *, creating: bool, times_changed: bool, exclude: str | None
    ) -> web.Response | None:
        """§4 checks 5 and 6 (service rules, calendar availability) on the merged record."""
        start, end = ts(record["startAt"]), ts(record["endAt"])
        if not times_changed:
            return None
        service = self.services.get(record.get("serviceId") or "")
        if service is not None:
            minutes = int(service["duration"])
            if end - start != timedelta(minutes=minutes):
                return error(422, "SERVICE_DURATION_MISMATCH", f"Duration must be {minutes} minutes for this service")
            if creating:
                outside = [c for c in record["calendarIds"] if c not in service["calendarIds"]]
                if outside:
                    return error(422, "SERVICE_RULE_VIOLATION",
                                 f"Calendar {outside[0]} is not available for this service")
        cals = set(record["calendarIds"])
        for other in self.records.values():
            if other["id"] == exclude or other["status"] == "cancelled" or other["deletedAt"] is not None:
                continue
            if not cals & set(other.get("calendarIds") or []):
                continue
            if ts(other["startAt"]) < end and start < ts(other["endAt"]):
                return error(409, "SLOT_UNAVAILABLE", "Calendar slot not available")
        return None

    # -- handlers: writes ------------------------------------------------------------------------
    async def _h_create(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        data, failure = self._json(body)
        if failure is not None or data is None:
            return failure or validation([fe("body", "must be a JSON object")])
        errors: list[dict[str, str]] = []
        clean = self._check_fields(data, CREATE_FIELDS, errors)
        for name in ("title", "startAt", "endAt", "calendarIds", "guests"):
            if name not in data:
                errors.append(fe(name, f"{name} should not be null or undefined"))
        if "status" in clean and clean["status"] not in ("pending", "confirmed"):
            errors.append(fe("status", "status must be one of the following values: pending, confirmed"))
        if "startAt" in clean and "endAt" in clean and ts(clean["endAt"]) <= ts(clean["startAt"]):
            errors.append(fe("endAt", "endAt must be after startAt"))
        if errors:
            return validation(errors)
        scope = self._scope(key_id)
        if scope is not None and not scope & set(clean["calendarIds"]):
            return error(403, "FORBIDDEN", "Insufficient permissions to access the appointment")
        if ts(clean["startAt"]) <= self.now():
            return error(422, "APPOINTMENT_IN_PAST", "Past appointments cannot be modified")
        record = _blank_record()
        record.update(clean)
        record["id"] = str(uuid.uuid4())
        record["status"] = clean.get("status") or "pending"
        failure = self._rules(record, creating=True, times_changed=True, exclude=None)
        if failure is not None:
            return failure
        now = fmt(ms(self.now()))
        record["createdAt"] = record["updatedAt"] = now
        self.records[record["id"]] = record
        self.notifications[record["id"]] = 0
        self._notify(record)
        return json_response(copy.deepcopy(record), status=201)

    async def _h_update(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        record, failure = self._lookup(request, key_id, write=True)
        if failure is not None or record is None:
            return failure or error(404, "NOT_FOUND", "Appointment not found")
        data, failure = self._json(body)
        if failure is not None or data is None:
            return failure or validation([fe("body", "must be a JSON object")])
        if not data:
            return validation([fe("body", "No updatable fields provided")])
        errors: list[dict[str, str]] = []
        clean = self._check_fields(data, UPDATABLE, errors)
        merged = {**copy.deepcopy(record), **clean}
        bad_time = any(e["field"] in ("startAt", "endAt") for e in errors)
        if not bad_time and ts(merged["endAt"]) <= ts(merged["startAt"]):
            errors.append(fe("endAt", "endAt must be after startAt"))
        if errors:
            return validation(errors)
        status = record["status"]
        if status in CLOSED:
            return error(422, "APPOINTMENT_CLOSED", f"Appointment is {status} and cannot be modified")
        now = self.now()
        moved_start = "startAt" in clean and clean["startAt"] != record["startAt"]
        if ts(record["endAt"]) <= now or (moved_start and ts(clean["startAt"]) <= now):
            return error(422, "APPOINTMENT_IN_PAST", "Past appointments cannot be modified")
        new_status = clean.get("status", status)
        if new_status != status:
            if new_status == "cancelled":
                return error(422, "USE_CANCEL_ENDPOINT",
                             f"Use POST {API}/{record['id']}/cancel to cancel an appointment")
            if new_status not in ("pending", "confirmed"):
                return error(422, "INVALID_STATUS_TRANSITION", f"Cannot change status from {status} to {new_status}")
        times_changed = merged["startAt"] != record["startAt"] or merged["endAt"] != record["endAt"]
        failure = self._rules(merged, creating=False, times_changed=times_changed, exclude=record["id"])
        if failure is not None:
            return failure
        if merged != record:
            self._bump(merged)
            self.records[record["id"]] = merged
            self._notify(merged)
        return json_response(copy.deepcopy(self.records[record["id"]]))

    async def _h_cancel(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        record, failure = self._lookup(request, key_id, write=True)
        if failure is not None or record is None:
            return failure or error(404, "NOT_FOUND", "Appointment not found")
        data, failure = self._json(body) if body.strip() else ({}, None)
        if failure is not None or data is None:
            return failure or validation([fe("body", "must be a JSON object")])
        errors: list[dict[str, str]] = []
        for name in data:
            if name not in CANCEL_FIELDS:
                errors.append(fe(name, f"property {name} should not exist"))
        if "status" in data and data["status"] != "cancelled":
            errors.append(fe("status", "status must be one of the following values: cancelled"))
        sub = data.get("subStatus")
        if sub is not None and (not isinstance(sub, str) or not SUBSTATUS_RE.match(sub)):
            errors.append(fe("subStatus", "subStatus must match /^[a-z0-9-]{1,50}$/"))
        strategy = data.get("strategy", "guest-appointment")
        if strategy not in ("guest-appointment", "guest-only"):
            errors.append(fe("strategy", "strategy must be one of the following values: guest-only, guest-appointment"))
        reason = data.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            errors.append(fe("reason", "reason must be a string shorter than or equal to 500 characters"))
        current = [str(g.get("email", "")).lower() for g in record.get("guests") or [] if isinstance(g, dict)]
        targets: set[str] | None = None
        if "guests" in data:
            sent = data["guests"]
            if not isinstance(sent, list) or not all(isinstance(e, str) for e in sent):
                errors.append(fe("guests", "guests must be an array of emails"))
            else:
                unknown = [e for e in sent if e.lower() not in current]
                if unknown:
                    errors.append(fe("guests", f"unknown guest: {unknown[0]}"))
                targets = {e.lower() for e in sent}
        elif strategy == "guest-only":
            errors.append(fe("guests", "guests is required with strategy guest-only"))
        if errors:
            return validation(errors)
        status = record["status"]
        if status == "cancelled":
            return error(422, "ALREADY_CANCELLED", "Appointment is already cancelled")
        if status in CLOSED:
            return error(422, "APPOINTMENT_CLOSED", f"Appointment is {status} and cannot be modified")
        if ts(record["endAt"]) <= self.now():
            return error(422, "APPOINTMENT_IN_PAST", "Past appointments cannot be modified")
        updated = copy.deepcopy(record)
        for guest in updated["guests"] or []:
            if isinstance(guest, dict) and (targets is None or str(guest.get("email", "")).lower() in targets):
                guest["status"] = "cancelled"
        active = [g for g in updated["guests"] or [] if not (isinstance(g, dict) and g.get("status") == "cancelled")]
        if strategy == "guest-appointment" and not active:
            updated["status"] = "cancelled"
            if sub is not None:
                updated["subStatus"] = sub
            if reason is not None:
                updated["cancellationReason"] = reason
        if updated != record:
            self._bump(updated)
            self.records[record["id"]] = updated
            self._notify(updated)
        return json_response(copy.deepcopy(self.records[record["id"]]))

    async def _h_delete(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        record, failure = self._lookup(request, key_id, write=True)
        if failure is not None or record is None:
            return failure or error(404, "NOT_FOUND", "Appointment not found")
        self._bump(record)
        record["deletedAt"] = record["updatedAt"]
        self._notify(record)
        return json_response(copy.deepcopy(record))


def create_sandbox(**options: Any) -> OnliveSandbox:
    return OnliveSandbox(**options)


# -- seeding from the shared invented data set --------------------------------------------------------
CANONICAL_TO_NATIVE: dict[str, tuple[str, str | None]] = {
    "proposed": ("pending", None),
    "pending": ("pending", None),
    "waitlist": ("pending", "waitlist"),
    "booked": ("confirmed", None),
    "arrived": ("confirmed", None),
    "checked-in": ("confirmed", None),
    "fulfilled": ("completed", None),
    "noshow": ("no-show", None),
    "cancelled": ("cancelled", "user-request"),
    "entered-in-error": ("cancelled", "booked-in-error"),
}


def _seed_id(kind: str, key: str) -> str:
    return str(uuid.uuid5(SEED_NAMESPACE, f"onlive:{kind}:{key}"))


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """``POST /_sandbox/records`` body for ``dataset`` plus crosswalk rows ``(kind, key, external_id)``.

    Practitioners become calendars, services keep their duration and are offered on every calendar,
    patients are guests identified by their lower-cased e-mail, locations are ``extraFields.location``.
    """
    rows: list[tuple[str, str, str]] = []
    calendars = []
    cal_ids: dict[str, str] = {}
    for prac in dataset.practitioners:
        cid = _seed_id("calendar", prac.key)
        cal_ids[prac.key] = cid
        calendars.append({"id": cid, "name": f"{prac.given} {prac.family}", "email": prac.email})
        rows.append(("practitioner", prac.key, cid))
    services = []
    svc: dict[str, tuple[str, str]] = {}
    for service in dataset.services:
        sid = _seed_id("service", service.key)
        svc[service.key] = (sid, service.name)
        services.append({"id": sid, "name": service.name, "duration": service.minutes,
                         "calendarIds": list(cal_ids.values())})
        rows.append(("service", service.key, sid))
    patients = {p.key: p for p in dataset.patients}
    for patient in dataset.patients:
        rows.append(("patient", patient.key, patient.email.lower()))
    locations = {loc.key: loc.name for loc in dataset.locations}
    for loc in dataset.locations:
        rows.append(("location", loc.key, loc.name))
    records = []
    for apt in dataset.appointments:
        aid = _seed_id("appointment", apt.key)
        status, sub = CANONICAL_TO_NATIVE.get(apt.status, ("pending", None))
        patient = patients[apt.patient]
        guest: dict[str, Any] = {
            "email": patient.email.lower(),
            "extraFields": {"firstName": patient.given, "lastName": patient.family, "phone": patient.phone},
        }
        if status == "cancelled":
            guest["status"] = "cancelled"
        sid, sname = svc[apt.service]
        records.append({
            "id": aid,
            "title": sname,
            "description": None,
            "lang": "es-ES",
            "startAt": fmt(apt.start),
            "endAt": fmt(apt.end),
            "event": None,
            "reminders": [],
            "extraFields": {"location": locations[apt.location]},
            "guests": [guest],
            "calendarIds": [cal_ids[apt.practitioner]],
            "serviceId": sid,
            "status": status,
            "subStatus": sub,
            "origin": "onlive_public",
            "comment": apt.notes,
            "externalId": apt.key,
        })
        rows.append(("appointment", apt.key, aid))
    return {"calendars": calendars, "services": services, "records": records}, rows
