"""Dentally's API rules in the sandbox (docs/vendors/dentally.md §1-§7): auth, quota, state
machine, field checks and the vendor's error bodies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from aiohttp import web

from connectors.dentally.sandbox.store import (
    INVALID,
    STATES,
    BadValue,
    DentallyStore,
    is_int,
    parse_instant,
)
from syncd.sandboxkit.base import json_response

__all__ = ["DentallyRules"]

#: docs/vendors/dentally.md §5: allowed API transitions
TRANSITIONS: dict[str, frozenset[str]] = {
    "Pending": frozenset({"Confirmed", "Arrived", "Cancelled", "Did not attend"}),
    "Confirmed": frozenset({"Pending", "Arrived", "Cancelled", "Did not attend"}),
    "Arrived": frozenset({"In surgery", "Completed", "Confirmed"}),
    "In surgery": frozenset({"Completed", "Arrived"}),
    "Completed": frozenset(),
    "Cancelled": frozenset(),
    "Did not attend": frozenset(),
}
COULD_NOT_PROCESS = "The appointment could not be processed"
BLANK = "can't be blank"


def error_body(etype: str, message: str, params: dict[str, list[str]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": etype, "message": message}
    if params is not None:
        err["params"] = params
    return {"error": err}


def error_response(
    status: int,
    etype: str,
    message: str,
    params: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(error_body(etype, message, params), status=status, headers=headers)


def invalid_param(name: str, message: str = INVALID) -> web.Response:
    return error_response(400, "invalid_request_error", "Invalid parameter", {name: [message]})


def not_found() -> web.Response:
    return error_response(404, "not_found_error", "Record not found")


def unprocessable(params: dict[str, list[str]]) -> web.Response:
    ordered = {k: params[k] for k in sorted(params, key=lambda k: (k != "state", k != "patient_id"))}
    return error_response(422, "invalid_request_error", COULD_NOT_PROCESS, ordered)


def validate_metadata(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["must be a hash of string pairs"]
    problems: list[str] = []
    if len(value) > 3:
        problems.append("can have at most 3 pairs")
    for key, val in value.items():
        if len(str(key)) > 40:
            problems.append("key is too long (maximum is 40 characters)")
        if not isinstance(val, str):
            problems.append("values must be strings")
        elif len(val) > 500:
            problems.append("value is too long (maximum is 500 characters)")
    return list(dict.fromkeys(problems))


@dataclass
class ListQuery:
    """An appointment list request, read (§2 (b), (c)): the start and ``updated_after`` bounds, the day,
    the id and state filters, the page and the sort."""

    site_id: str | None
    state: str | None
    ignore_before: bool
    """the ``ignore_before`` fault: ``before`` is accepted and not applied"""
    bounds: dict[str, datetime] = field(default_factory=dict)
    on_day: date | None = None
    ints: dict[str, int] = field(default_factory=dict)
    """``page``, ``per_page``, ``practitioner_id``, ``patient_id`` as given"""
    page: int = 1
    per_page: int = 25
    sort_by: str = "start_time"
    descending: bool = False

    def keeps(self, rec: dict[str, Any], tz: tzinfo) -> bool:
        bounds = self.bounds
        if "updated_after" in bounds and not rec["updated_at"] > bounds["updated_after"]:
            return False  # strictly after (§2 (b))
        if "after" in bounds and rec["start_time"] < bounds["after"]:
            return False
        if "before" in bounds and not self.ignore_before and rec["start_time"] >= bounds["before"]:
            return False
        if self.on_day is not None and rec["start_time"].astimezone(tz).date() != self.on_day:
            return False
        for name in ("practitioner_id", "patient_id"):
            if name in self.ints and rec[name] != self.ints[name]:
                return False
        if self.site_id is not None and rec["site_id"] != self.site_id:
            return False
        return self.state is None or rec["state"] == self.state


def _check_paging(query: ListQuery, q: Mapping[str, str]) -> ListQuery | web.Response:
    """Page (from 1), page size (at most 100), sort key and direction, state (§2 (b))."""
    query.page = query.ints.get("page", 1)
    query.per_page = min(query.ints.get("per_page", 25), 100)
    if query.page < 1:
        return invalid_param("page", "must be greater than 0")
    if query.per_page < 1:
        return invalid_param("per_page", "must be greater than 0")
    query.sort_by = q.get("sort_by", "start_time")
    if query.sort_by not in ("updated_at", "start_time", "id"):
        return invalid_param("sort_by", "is not included in the list")
    direction = q.get("sort_direction", "asc")
    if direction not in ("asc", "desc"):
        return invalid_param("sort_direction", "is not included in the list")
    query.descending = direction == "desc"
    if query.state is not None and query.state not in STATES:
        return invalid_param("state", "is not included in the list")
    return query


class DentallyRules(DentallyStore):
    """The checks the vendor applies to a request, on top of the store."""

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        headers = self.rate_headers()
        headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
        return error_response(429, "rate_limit_error", "Too many requests", headers=headers)

    # -- auth and rate limits ---------------------------------------------------------------------------
    def rate_headers(self) -> dict[str, str]:
        limit = int(self.options["per_hour"])
        start = self.hour_start
        now = self.clock.timestamp()
        if start is None or now >= start + 3600:
            remaining, reset = limit, now + 3600
        else:
            remaining, reset = max(0, limit - self.hour_count), start + 3600
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset)),
            "X-OAuth-Scopes": str(self.options["token_scopes"]),
        }

    def check_access(self, request: web.Request, scope: str | None) -> web.Response | None:
        """User-Agent, token, scope, rate limit: in that order (§1)."""
        if not request.headers.get("User-Agent", "").strip():
            return error_response(403, "invalid_access_error", "A User-Agent header is required")
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        now = self.clock.timestamp()
        last = self.token_last_used.get(token)
        if last is not None and now - last > float(self.options["token_idle_seconds"]):
            self.dead_tokens.add(token)
        if (
            not token
            or token != self.options["access_token"]
            or token in (self.options.get("revoked_tokens") or [])
            or token in self.dead_tokens
        ):
            return error_response(401, "invalid_access_error", "The access token is invalid")
        self.token_last_used[token] = max(now, last or now)
        if scope is not None and scope not in str(self.options["token_scopes"]).split():
            message = f"The access token does not have the required scope: {scope}"
            return error_response(403, "invalid_access_error", message)
        if not self.options["rate_limits"]:
            return None
        if self.hour_start is None or now >= self.hour_start + 3600:
            self.hour_start, self.hour_count = now, 0
        if self.hour_count >= int(self.options["per_hour"]):
            return error_response(403, "invalid_access_error", "Rate limit exceeded")
        allowed, _, _, _ = self.burst.hit()
        if not allowed:
            return error_response(429, "rate_limit_error", "Too many requests", headers={"Retry-After": "1"})
        self.hour_count += 1
        return None

    # -- list -----------------------------------------------------------------------------------------------
    def list_query(
        self, q: Mapping[str, str], *, reject_updated_after: bool, ignore_before: bool
    ) -> ListQuery | web.Response:
        """The list's filters, paging and sort (§2 (b), (c)), or the 400 that refuses them."""
        if "updated_since" in q:
            return invalid_param("updated_since", "is not a permitted parameter")
        if "updated_after" in q and reject_updated_after:
            return invalid_param("updated_after", "is not a permitted parameter")
        if not any(name in q for name in ("updated_after", "after", "before", "on")):
            params = {"date_filter": ["is required"]}
            return error_response(400, "invalid_request_error", "A date filter is required", params)
        query = ListQuery(site_id=q.get("site_id"), state=q.get("state"), ignore_before=ignore_before)
        for name in ("updated_after", "after", "before"):
            if name in q:
                try:
                    query.bounds[name] = self._parse_filter_time(q[name])
                except ValueError:
                    return invalid_param(name)
        if "on" in q:
            try:
                query.on_day = date.fromisoformat(q["on"])
            except ValueError:
                return invalid_param("on")
        for name in ("page", "per_page", "practitioner_id", "patient_id"):
            if name in q:
                try:
                    query.ints[name] = int(q[name])
                except ValueError:
                    return invalid_param(name)
        return _check_paging(query, q)

    def _parse_filter_time(self, value: str) -> datetime:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), tzinfo=self.tz()).astimezone(UTC)
        return parse_instant(value)

    def _check_refs(self, fields: dict[str, Any], errors: dict[str, list[str]]) -> None:
        """Type and existence checks for the reference fields present in ``fields``."""
        for name, store in (("practitioner_id", self.practitioners), ("patient_id", self.patients)):
            if name not in fields or fields[name] is None:
                continue
            if not is_int(fields[name]):
                errors.setdefault(name, []).append("is not a number")
            elif fields[name] not in store:
                errors.setdefault(name, []).append("does not exist")
        site = fields.get("site_id")
        if site is not None and (not isinstance(site, str) or site not in self.sites):
            errors.setdefault("site_id", []).append("does not exist")
        for name in ("reason", "notes"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                errors.setdefault(name, []).append(INVALID)
        if fields.get("room_id") is not None and not is_int(fields["room_id"]):
            errors.setdefault("room_id", []).append("is not a number")
        if "metadata" in fields:
            problems = validate_metadata(fields["metadata"])
            if problems:
                errors["metadata"] = problems

    def _times(
        self, fields: dict[str, Any], rec: dict[str, Any] | None, errors: dict[str, list[str]]
    ) -> tuple[datetime | None, datetime | None]:
        """The (start, finish) the request asks for, validated; unchanged values from ``rec``."""
        start: datetime | None = rec["start_time"] if rec else None
        finish: datetime | None = rec["finish_time"] if rec else None
        if rec is None and fields.get("start_time") is None:
            errors["start_time"] = [BLANK]
        elif "start_time" in fields:
            try:
                start = parse_instant(fields["start_time"])
            except BadValue as exc:
                errors.setdefault("start_time", []).append(str(exc) if fields["start_time"] else BLANK)
                start = None
            if start is not None and rec is not None and "finish_time" not in fields and "duration" not in fields:
                finish = start + (rec["finish_time"] - rec["start_time"])
        minutes = fields.get("duration")
        if minutes is not None and (not is_int(minutes) or minutes <= 0):
            errors.setdefault("duration", []).append("must be an integer greater than 0")
            minutes = None
        if fields.get("finish_time") is not None:
            try:
                finish = parse_instant(fields["finish_time"])
            except BadValue as exc:
                errors.setdefault("finish_time", []).append(str(exc))
                finish = None
            if finish is not None and start is not None and minutes is not None:
                if finish - start != timedelta(minutes=minutes):
                    errors.setdefault("duration", []).append("does not match finish_time")
        elif minutes is not None and start is not None:
            finish = start + timedelta(minutes=minutes)
        elif rec is None and "duration" not in fields:
            errors.setdefault("finish_time", []).append("can't be blank when duration is not given")
        if start is not None and finish is not None and finish <= start:
            errors.setdefault("finish_time", []).append("must be after start_time")
        return start, finish

    def _check_cancel_reason(
        self,
        fields: dict[str, Any],
        rec: dict[str, Any],
        target: Any,
        changes: dict[str, Any],
        errors: dict[str, list[str]],
    ) -> None:
        sent = fields.get("cancellation_reason_id")
        if changes.get("state") == "Cancelled":
            if sent is None:
                errors.setdefault("cancellation_reason_id", []).append(BLANK)
            elif not is_int(sent) or sent not in self.cancellation_reasons:
                errors.setdefault("cancellation_reason_id", []).append("is not included in the list")
            else:
                changes["cancellation_reason_id"] = sent
        elif sent is not None and sent != rec["cancellation_reason_id"]:
            if rec["state"] == "Cancelled":
                changes["cancellation_reason_id"] = sent  # a locked field in a terminal state
            elif target != "Cancelled":
                errors.setdefault("cancellation_reason_id", []).append("can only be set when cancelling")

    def _apply_update(self, rec: dict[str, Any], changes: dict[str, Any]) -> None:
        now = self.now()
        for name, value in changes.items():
            if name != "state":
                rec[name] = value
        rec["duration"] = int((rec["finish_time"] - rec["start_time"]).total_seconds() // 60)
        if "state" in changes:
            self.set_state(rec, changes["state"], now)
        if "cancellation_reason_id" in changes:
            rec["cancellation_reason"] = self.cancellation_reasons[changes["cancellation_reason_id"]]["reason"]
        self.bump(rec)
        self.last_trigger[rec["id"]] = "api"
        self.emit("appointment.updated", rec)
