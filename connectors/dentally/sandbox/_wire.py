"""Dentally wire vocabulary for the sandbox: states, field names, time format, error bodies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from syncd.sandboxkit.base import json_response

STATES = ("Pending", "Confirmed", "Arrived", "In surgery", "Completed", "Cancelled", "Did not attend")
TERMINAL = frozenset({"Completed", "Cancelled", "Did not attend"})
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
STATE_AT: dict[str, str] = {
    "Pending": "pending_at",
    "Confirmed": "confirmed_at",
    "Arrived": "arrived_at",
    "In surgery": "in_surgery_at",
    "Completed": "completed_at",
    "Cancelled": "cancelled_at",
    "Did not attend": "did_not_attend_at",
}
TIME_FIELDS = ("start_time", "finish_time", *STATE_AT.values(), "created_at", "updated_at")
FIELD_ORDER = (
    "id", "uuid", "start_time", "finish_time", "duration", "patient_id", "practitioner_id", "site_id",
    "room_id", "reason", "state", "notes", "cancellation_reason_id", "cancellation_reason", "metadata",
    *STATE_AT.values(), "created_at", "updated_at",
)  # fmt: skip
CANCELLATION_REASONS: tuple[dict[str, Any], ...] = (
    {"id": 1, "reason": "Booked in error"},
    {"id": 2, "reason": "Cancelled by patient"},
    {"id": 3, "reason": "Cancelled by practice"},
    {"id": 4, "reason": "Other"},
)
SCOPES = "appointment patient:read user:read"
COULD_NOT_PROCESS = "The appointment could not be processed"
BLANK = "can't be blank"
INVALID = "is invalid"
MS = timedelta(milliseconds=1)
UUID_NS = uuid.UUID("6f1c2a4e-0d3b-4b7a-9c55-3d2e1f0a9b87")


# -- small helpers --------------------------------------------------------------------------------
def fmt_time(dt: datetime | None) -> str | None:
    """UTC with milliseconds and ``Z``: ``2026-12-01T09:00:00.000Z``."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_ms(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


class BadValue(ValueError):
    """A request value that cannot be used; ``str()`` is the vendor's message."""


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 time that carries an offset (Dentally §4: a time without offset is refused)."""
    if not isinstance(value, str) or not value:
        raise BadValue(INVALID)
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadValue(INVALID) from exc
    if dt.tzinfo is None:
        raise BadValue("must include a UTC offset")
    return to_ms(dt)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
