"""SaludYa's API rules in the sandbox (docs/vendors/saludya.md §1-§7, §10): API keys and doctor
scopes, the fixed-window quotas, field formats, the state machine and edit rules, doctor availability
and the error envelope."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from connectors.saludya.sandbox.store import (
    STATUSES,
    TERMINAL,
    SaludYaStore,
    is_int,
    local_start,
    valid_date,
    valid_time,
)
from syncd.sandboxkit.base import json_response

__all__ = ["SaludYaRules"]

#: §5 transition table (targets in table order)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "scheduled": ("confirmed", "in_progress", "completed", "cancelled", "no_show"),
    "confirmed": ("scheduled", "in_progress", "completed", "cancelled", "no_show"),
    "in_progress": ("confirmed", "completed"),
    "completed": (),
    "cancelled": (),
    "no_show": (),
}
#: statuses whose appointments do not hold the doctor's time (§10 rule 7)
FREE_STATUSES = frozenset({"cancelled", "no_show"})

READ_ONLY = frozenset(
    {"id", "patient_name", "doctor_name", "specialty", "patient_email", "patient_phone",
     "created_at", "updated_at", "completed_at", "cancelled_at"}
)  # fmt: skip
IMMUTABLE = frozenset({"patient_id", "doctor_id"})
CLINICAL = ("diagnosis", "prescription", "follow_up_required", "follow_up_date")
CREATE_FIELDS = frozenset(
    {"patient_id", "doctor_id", "date", "time", "duration_minutes", "reason", "notes", "send_notification"}
)
UPDATE_FIELDS = frozenset(
    {"date", "time", "duration_minutes", "status", "reason", "notes", *CLINICAL, "cancellation_reason",
     "send_notification"}
)  # fmt: skip
NULLABLE_ON_UPDATE = frozenset({"reason", "notes"})
SCHEDULE_FIELDS = ("date", "time", "duration_minutes")
IN_PROGRESS_LOCKED = ("date", "time", "duration_minutes", "reason")

WINDOWS: tuple[tuple[str, int], ...] = (("per_15min", 900), ("per_hour", 3600), ("per_day", 86400))

MSG_UNAUTHORIZED = "Invalid or missing API token"
MSG_FORBIDDEN_PUT = "You don't have permission to modify this appointment"
MSG_FORBIDDEN_GET = "You don't have permission to view this appointment"
MSG_FORBIDDEN_POST = "You don't have permission to create appointments for this doctor"
MSG_IN_PROGRESS_LOCK = "Cannot change date, time, duration or reason of an appointment in progress"
MSG_NO_DIAGNOSIS = "Cannot change status to 'completed' without providing diagnosis"
MSG_BUSY = "Doctor is not available at the requested time"

ApiHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A SaludYa error answer: ``{"error": {"code", "message", "details"?}}``."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = dict(details)
    return json_response({"error": err}, status=status, headers=headers)


def validation_error(details: Mapping[str, str]) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Invalid request data", details)


def not_found(appointment_id: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"Appointment with ID '{appointment_id}' not found")


class SaludYaRules(SaludYaStore):
    """The checks the vendor applies to a request, on top of the store."""

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        wait = max(0, math.ceil(retry_after))
        limit = int(self.options.get("per_15min") or 0)
        reset = int(self.clock.timestamp()) + wait
        return self._too_many(limit, 900, reset, wait)

    def _too_many(self, limit: int, window: int, reset: int, retry_after: int) -> web.Response:
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Window": str(window),
        }
        details = {"limit": limit, "window": window, "retry_after": retry_after}
        return error_response(429, "RATE_LIMIT_EXCEEDED", "Too many requests", details, headers)

    # -- auth and quotas -----------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme != "Bearer" or not key:
            return None
        keys = self.options.get("api_keys") or {}
        return key if key in keys else None

    def _may_see(self, key: str, doctor_id: str) -> bool:
        scope = (self.options.get("api_keys") or {}).get(key)
        if scope == "*":
            return True
        return isinstance(scope, list) and doctor_id in scope

    def _limits(self) -> list[tuple[int, int]]:
        """Enabled (window seconds, limit) pairs."""
        if not self.options.get("rate_limits", True):
            return []
        out = []
        for name, seconds in WINDOWS:
            limit = self.options.get(name)
            if limit is not None:
                out.append((seconds, int(limit)))
        return out

    def _count(self, key: str) -> tuple[web.Response | None, dict[str, str]]:
        """Count one request for ``key``: (429 answer or None, X-RateLimit-* headers)."""
        limits = self._limits()
        if not limits:
            return None, {}
        now = self.clock.timestamp()
        state = self.quota.setdefault(key, {})
        current: list[tuple[int, int, int, int]] = []  # (window, limit, used, reset)
        for window, limit in limits:
            start = int(now) // window * window
            w_start, used = state.get(window, (start, 0))
            if w_start != start:
                used = 0
            current.append((window, limit, used, start + window))
        spent = [c for c in current if c[2] >= c[1]]
        if spent:
            window, limit, _, reset = max(spent, key=lambda c: (c[3], c[0]))
            return self._too_many(limit, window, reset, max(1, math.ceil(reset - now))), {}
        for window, _limit, used, reset in current:
            state[window] = (reset - window, used + 1)
        window, limit, used, reset = min(current, key=lambda c: (c[1] - c[2] - 1, c[0]))
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used - 1)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Window": str(window),
        }
        return None, headers

    @staticmethod
    def _int_param(q: Mapping[str, str], name: str, default: int, errors: dict[str, str]) -> int:
        if name not in q:
            return default
        raw = q[name]
        if not re.fullmatch(r"-?\d+", raw):
            errors[name] = f"{name} must be an integer"
            return default
        return int(raw)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise validation_error({"body": "Request body must be valid JSON"}) from exc
        if not isinstance(body, dict):
            raise validation_error({"body": "Request body must be a JSON object"})
        return body

    @staticmethod
    def _check_formats(body: Mapping[str, Any], errors: dict[str, str], *, create: bool) -> None:
        """Type and format checks shared by create and update (first 400 stage)."""
        for name, value in body.items():
            if name in errors:
                continue
            if value is None:
                if create and name in ("reason", "notes"):
                    continue
                if not create and name in NULLABLE_ON_UPDATE:
                    continue
                errors[name] = f"{name} cannot be null"
            elif name in ("date", "follow_up_date") and not valid_date(value):
                errors[name] = f"{name} must be a valid date in YYYY-MM-DD format"
            elif name == "time" and not valid_time(value):
                errors[name] = "time must be in 24-hour HH:MM format"
            elif name == "duration_minutes" and (not is_int(value) or not 5 <= value <= 480):
                errors[name] = "duration_minutes must be an integer between 5 and 480"
            elif name == "status" and value not in STATUSES:
                errors[name] = f"status must be one of: {', '.join(STATUSES)}"
            elif name in ("follow_up_required", "send_notification") and not isinstance(value, bool):
                errors[name] = f"{name} must be a boolean"
            elif name == "reason" and (not isinstance(value, str) or len(value) > 255):
                errors[name] = "reason must be a string of at most 255 characters"
            elif name == "notes" and (not isinstance(value, str) or len(value) > 1000):
                errors[name] = "notes must be a string of at most 1000 characters"
            elif name in ("diagnosis", "prescription") and not isinstance(value, str):
                errors[name] = f"{name} must be a string"
            elif name == "cancellation_reason" and (not isinstance(value, str) or len(value) > 500):
                errors[name] = "cancellation_reason must be a string of at most 500 characters"
            elif name in ("patient_id", "doctor_id") and not isinstance(value, str):
                errors[name] = f"{name} must be a string"

    # -- updates (§4, §5) ------------------------------------------------------------------------
    def check_update(self, body: Mapping[str, Any], current: str) -> str:
        """An update's checks, stage by stage (400 fields, 422 state rules, 400 what the target status
        needs); the status it moves to."""
        # stage 1: 400 for unknown, read-only, immutable fields and the seed's types
        errors: dict[str, str] = {}
        for name in body:
            if name in IMMUTABLE:
                errors[name] = f"{name} cannot be changed"
            elif name in READ_ONLY:
                errors[name] = f"{name} is read-only"
            elif name not in UPDATE_FIELDS:
                errors[name] = f"Unknown field: {name}"
        self._check_formats({k: v for k, v in body.items() if k in UPDATE_FIELDS}, errors, create=False)
        if errors:
            raise validation_error(errors)
        target = _check_transition(body, current)
        _check_target_fields(body, current, target)
        return target

    def _check_availability(self, doctor_id: str, day: str, hhmm: str, duration: int, exclude: str | None) -> None:
        start = datetime.fromisoformat(f"{day}T{hhmm}")
        busy = []
        for rid, rec in self.records.items():
            if rid == exclude or rid in self.deleted_at or rec["doctor_id"] != doctor_id:
                continue
            if rec["status"] in FREE_STATUSES:
                continue
            b_start = local_start(rec)
            busy.append((b_start, b_start + timedelta(minutes=int(rec["duration_minutes"])), rid))

        def clashes(s: datetime) -> list[tuple[datetime, datetime, str]]:
            e = s + timedelta(minutes=duration)
            return [b for b in busy if b[0] < e and s < b[1]]

        hit = clashes(start)
        if not hit:
            return
        first = min(hit, key=lambda b: (b[0], b[2]))
        suggested: list[str] = []
        probe = start + timedelta(minutes=30)
        day_end = datetime.fromisoformat(day) + timedelta(days=1)
        while len(suggested) < 3 and probe.date() == start.date():
            if probe + timedelta(minutes=duration) <= day_end and not clashes(probe):
                suggested.append(probe.strftime("%H:%M"))
            probe += timedelta(minutes=30)
        raise ApiError(
            409,
            "APPOINTMENT_CONFLICT",
            MSG_BUSY,
            {"conflicting_appointment_id": first[2], "suggested_times": suggested},
        )


def _check_transition(body: Mapping[str, Any], current: str) -> str:
    """Stage 2: 422 for the terminal lock, the in-progress edit lock and the §5 transition table; the
    target status."""
    if current in TERMINAL:
        raise ApiError(
            422,
            "INVALID_STATE_TRANSITION",
            f"Cannot update a {current} appointment. Contact support if you need to make changes.",
        )
    if current == "in_progress" and any(name in body for name in IN_PROGRESS_LOCKED):
        raise ApiError(422, "INVALID_STATE_TRANSITION", MSG_IN_PROGRESS_LOCK)
    target: str = body.get("status", current)
    if target != current and target not in TRANSITIONS[current]:
        raise ApiError(
            422,
            "INVALID_STATE_TRANSITION",
            f"Cannot change status from '{current}' to '{target}'",
            {"from": current, "to": target, "allowed": list(TRANSITIONS[current])},
        )
    return target


def _check_target_fields(body: Mapping[str, Any], current: str, target: str) -> None:
    """Stage 3: 400 for what the target status requires (a diagnosis, a cancellation reason) or forbids
    (clinical fields, a reason outside a cancellation) (§5)."""
    errors: dict[str, str] = {}
    completing = target == "completed" and current != "completed"
    cancelling = target == "cancelled" and current != "cancelled"
    if completing and not (isinstance(body.get("diagnosis"), str) and body["diagnosis"].strip()):
        errors["status"] = MSG_NO_DIAGNOSIS
    if cancelling and not (isinstance(body.get("cancellation_reason"), str) and body["cancellation_reason"].strip()):
        errors["cancellation_reason"] = "cancellation_reason is required when status is set to cancelled"
    if not completing:
        for name in CLINICAL:
            if name in body:
                errors[name] = f"{name} can only be set when status changes to completed"
    elif "follow_up_date" in body and body.get("follow_up_required") is not True:
        errors["follow_up_date"] = "follow_up_date requires follow_up_required to be true"
    if "cancellation_reason" in body and not cancelling:
        errors["cancellation_reason"] = "cancellation_reason can only be set when status changes to cancelled"
    if errors:
        raise validation_error(errors)
