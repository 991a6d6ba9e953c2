"""Onlive's API rules in the sandbox (docs/vendors/onlive.md §1-§7): request signing and its clock
window, the throttler, key scopes, field validation, the §5 state machine and the error bodies."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web
from multidict import MultiMapping

from connectors.onlive.sandbox.store import (
    STATUSES,
    UUID_RE,
    OnliveStore,
    fmt,
    parse_time,
    ts,
)
from syncd.sandboxkit.base import json_response

__all__ = ["OnliveRules"]

API = "/api/v2/appointments"
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
AUTH_RE = re.compile(r"^ONLIVESITE Credential[:=]([^,\s]+),\s*Signature=([0-9a-fA-F]{64})$")
DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
SUBSTATUS_RE = re.compile(r"^[a-z0-9-]{1,50}$")
SKEW_SECONDS = 900


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



_NOT_KEPT = object()
"""A sent field that is not kept: it failed its check (its error recorded), or no check takes it."""


@dataclass
class ListQuery:
    """A list request, read (§2 table): its parameters, time bounds, sort and page."""

    params: dict[str, str]
    times: dict[str, datetime]
    """``from``, ``to``, ``updatedSince`` as given"""
    include_deleted: bool
    sort: str
    descending: bool
    page: int
    limit: int


class OnliveRules(OnliveStore):
    """The checks the vendor applies to a request, on top of the store."""

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return self._throttled(retry_after)

    @staticmethod
    def _throttled(retry_after: float) -> web.Response:
        wait = max(1, math.ceil(retry_after))
        resp = error(429, "RATE_LIMITED", "ThrottlerException: Too Many Requests")
        resp.headers["Retry-After"] = str(wait)
        return resp

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

    @staticmethod
    def _matches(record: dict[str, Any], search: str) -> bool:
        texts = [str(record.get("title") or "")]
        texts += [str(g.get("email", "")) for g in record.get("guests") or [] if isinstance(g, dict)]
        return any(search in t.lower() for t in texts)

    def list_query(self, query: MultiMapping[str], *, reject_updated_since: bool) -> ListQuery | list[dict[str, str]]:
        """The list's parameters (§2 table), or every field error they hold (one 400)."""
        errors: list[dict[str, str]] = []
        params: dict[str, str] = {}
        for name in query:
            values = query.getall(name)
            if name not in LIST_PARAMS:
                errors.append(fe(name, f"property {name} should not exist"))
            elif len(values) > 1:
                errors.append(fe(name, f"{name} must not be repeated"))
            else:
                params[name] = values[0]
        if reject_updated_since and "updatedSince" in params:
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
            return errors
        return ListQuery(params, times, include_deleted == "true", sort, order == "desc", page, limit)

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
            elif value is None:
                if name in NOT_NULL:
                    errors.append(fe(name, f"{name} cannot be null"))
                else:
                    clean[name] = None
            else:
                checked = self._check_value(name, value, errors)
                if checked is not _NOT_KEPT:
                    clean[name] = checked
        return clean

    def _check_value(self, name: str, value: Any, errors: list[dict[str, str]]) -> Any:
        """One sent, non-null field (§4 check 1): its normalised value, or ``_NOT_KEPT`` (its error, if
        any, in ``errors``)."""
        problem: str | None = None
        if name in ("startAt", "endAt"):
            parsed = parse_time(value)
            if parsed is None:
                problem = "must be a valid ISO 8601 date-time with offset"
            else:
                value = fmt(parsed)
        elif name in STRING_FIELDS:
            if not isinstance(value, str):
                problem = f"{name} must be a string"
            elif name == "title" and not value.strip():
                problem = "title should not be empty"
        elif name == "status":
            if value not in STATUSES:
                problem = f"status must be one of the following values: {', '.join(STATUSES)}"
        elif name == "guests":
            guests = self._check_guests(value, errors)
            return _NOT_KEPT if guests is None else guests
        elif name == "reminders":
            if not isinstance(value, list) or not all(self._reminder_ok(r) for r in value):
                problem = "reminders must be an array of {time, unit, direction}"
            value = copy.deepcopy(value)
        elif name in ("extraFields", "event"):
            if not isinstance(value, dict):
                problem = f"{name} must be an object"
            value = copy.deepcopy(value)
        elif name == "calendarIds":
            if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
                problem = "calendarIds must contain at least 1 elements"
            else:
                unknown = [c for c in value if c.lower() not in self.calendars]
                problem = f"unknown calendar: {unknown[0]}" if unknown else None
                value = [c.lower() for c in value]
        elif name == "serviceId":
            if not isinstance(value, str) or value.lower() not in self.services:
                problem = "unknown service"
            else:
                value = value.lower()
        else:
            return _NOT_KEPT
        if problem is not None:
            errors.append(fe(name, problem))
            return _NOT_KEPT
        return value

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
