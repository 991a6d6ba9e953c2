"""SaludYa sandbox: a stateful fake of the SaludYa appointments API (docs/vendors/saludya.md §1-§10).

Routes: ``GET``/``POST /api/appointments`` and ``GET``/``PUT /api/appointments/{id}``, Bearer API keys
(option ``api_keys``: key -> ``"*"`` or a list of doctor ids), fixed UTC-aligned quotas per key
(15 min / hour / day) with ``X-RateLimit-*`` headers and 429 + ``Retry-After``, the seed's error
envelope, the state machine and edit rules, the doctor-availability check (409) and the
``send_notification`` counter. No webhooks, no automatic status changes, ``If-Match`` ignored.

This module is the sandbox only; it shares nothing with the SaludYa connector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from syncd.sandboxkit.base import Handler, SandboxBase, json_response

if TYPE_CHECKING:
    from syncd.sandboxkit.seedgen import SeedDataset

__all__ = ["SaludYaSandbox", "create_sandbox", "seed_body"]

log = logging.getLogger(__name__)

STATUSES = ("scheduled", "confirmed", "in_progress", "completed", "cancelled", "no_show")
TERMINAL = frozenset({"completed", "cancelled", "no_show"})
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

RECORD_FIELDS = (
    "id", "patient_id", "patient_name", "patient_email", "patient_phone", "doctor_id", "doctor_name",
    "specialty", "date", "time", "duration_minutes", "status", "reason", "notes", "diagnosis",
    "prescription", "follow_up_required", "follow_up_date", "created_at", "updated_at", "completed_at",
    "cancelled_at", "cancellation_reason",
)  # fmt: skip
#: the spec's list fields (fault ``list_missing_fields``)
LIST_FIELDS = (
    "id", "patient_id", "patient_name", "doctor_id", "doctor_name", "specialty", "date", "time",
    "duration_minutes", "status", "reason",
)  # fmt: skip
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

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

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


def iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_z(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {value!r} must carry an offset")
    return dt.astimezone(UTC).replace(microsecond=0)


def valid_date(value: Any) -> bool:
    if not isinstance(value, str) or not DATE_RE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def valid_time(value: Any) -> bool:
    return isinstance(value, str) and bool(TIME_RE.match(value))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def local_start(rec: Mapping[str, Any]) -> datetime:
    """The record's naive local start (clinic wall clock)."""
    return datetime.fromisoformat(f"{rec['date']}T{rec['time']}")


def new_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(10))


class SaludYaSandbox(SandboxBase):
    vendor: ClassVar[str] = "saludya"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "api_keys": {"sandbox-key": "*"},
        "per_15min": 100,
        "per_hour": 300,
        "per_day": 1000,
        "timezone": "America/Bogota",
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._check_timezone()

    # -- state -------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.deleted_at: dict[str, datetime] = {}
        self.notifications: Counter[str] = Counter()
        self.patients: dict[str, dict[str, Any]] = {}
        self.doctors: dict[str, dict[str, Any]] = {}
        #: key -> window seconds -> (window start epoch, requests counted)
        self.quota: dict[str, dict[int, tuple[int, int]]] = {}

    def _check_timezone(self) -> None:
        try:
            ZoneInfo(str(self.options["timezone"]))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown IANA zone {self.options['timezone']!r}") from exc

    def _live(self, appointment_id: str) -> dict[str, Any] | None:
        if appointment_id in self.deleted_at:
            return None
        return self.records.get(appointment_id)

    def _bump(self, rec: dict[str, Any]) -> datetime:
        """Strictly increasing whole-second ``updated_at`` (docs/vendors/saludya.md §8)."""
        now = self.now().replace(microsecond=0)
        prev = parse_iso_z(rec["updated_at"]) if rec.get("updated_at") else None
        if prev is not None and now <= prev:
            now = prev + timedelta(seconds=1)
        rec["updated_at"] = iso_z(now)
        return now

    def render(self, rec: Mapping[str, Any], fields: Iterable[str] = RECORD_FIELDS) -> dict[str, Any]:
        patient = self.patients.get(rec["patient_id"])
        doctor = self.doctors.get(rec["doctor_id"])
        full = dict(rec)
        if patient is not None:
            full["patient_name"] = patient.get("name")
            full["patient_email"] = patient.get("email")
            full["patient_phone"] = patient.get("phone")
        if doctor is not None:
            full["doctor_name"] = doctor.get("name")
        return {name: full.get(name) for name in fields}

    # -- control API -------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        rows = []
        for rid, rec in sorted(self.records.items(), key=lambda kv: (kv[1]["created_at"], kv[0])):
            row = self.render(rec)
            deleted = self.deleted_at.get(rid)
            row["_deleted_at"] = iso_z(deleted) if deleted else None
            row["_notifications"] = self.notifications[rid]
            rows.append(row)
        return {
            "records": rows,
            "patients": [dict(p) for p in self.patients.values()],
            "doctors": [dict(d) for d in self.doctors.values()],
        }

    def seed(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"records", "patients", "doctors", "delete"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
        for p in body.get("patients") or []:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                raise ValueError("patients[]: each patient needs a string id")
            self.patients[p["id"]] = {
                "id": p["id"], "name": p.get("name"), "email": p.get("email"), "phone": p.get("phone"),
            }  # fmt: skip
        for d in body.get("doctors") or []:
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise ValueError("doctors[]: each doctor needs a string id")
            self.doctors[d["id"]] = {"id": d["id"], "name": d.get("name"), "specialty": d.get("specialty")}
        for raw in body.get("records") or []:
            self._seed_record(raw)
        for rid in body.get("delete") or []:
            if rid not in self.records:
                raise ValueError(f"delete: unknown appointment id {rid!r}")
            self.deleted_at.setdefault(str(rid), self.now().replace(microsecond=0))

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records[]: each record must be an object")
        unknown = set(raw) - set(RECORD_FIELDS) - {"_deleted_at", "_notifications"}
        if unknown:
            raise ValueError(f"records[]: unknown field(s) {', '.join(sorted(unknown))}")
        rid = raw.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError("records[].id: a string id is required")
        existing = self.records.get(rid)
        rec: dict[str, Any] = dict(existing) if existing else {name: None for name in RECORD_FIELDS}
        if existing is None:
            rec.update({"id": rid, "duration_minutes": 30, "status": "scheduled", "follow_up_required": False})
        rec.update({k: v for k, v in raw.items() if not k.startswith("_")})
        for name in ("patient_id", "doctor_id"):
            if not isinstance(rec.get(name), str):
                raise ValueError(f"records[{rid}].{name}: a string id is required")
        if not valid_date(rec.get("date")):
            raise ValueError(f"records[{rid}].date: YYYY-MM-DD required")
        if not valid_time(rec.get("time")):
            raise ValueError(f"records[{rid}].time: HH:MM required")
        if not is_int(rec.get("duration_minutes")):
            raise ValueError(f"records[{rid}].duration_minutes: an integer is required")
        if rec.get("status") not in STATUSES:
            raise ValueError(f"records[{rid}].status: one of {', '.join(STATUSES)}")
        if rec.get("specialty") is None:
            rec["specialty"] = (self.doctors.get(rec["doctor_id"]) or {}).get("specialty")
        now = self.now().replace(microsecond=0)
        if existing is None:
            rec["created_at"] = iso_z(parse_iso_z(raw["created_at"])) if raw.get("created_at") else iso_z(now)
            rec["updated_at"] = iso_z(parse_iso_z(raw["updated_at"])) if raw.get("updated_at") else None
            if rec["updated_at"] is None:
                rec["updated_at"] = rec["created_at"]
        else:
            self._bump(rec)
        if rec["status"] == "completed" and not rec.get("completed_at"):
            rec["completed_at"] = rec["updated_at"]
        if rec["status"] == "cancelled" and not rec.get("cancelled_at"):
            rec["cancelled_at"] = rec["updated_at"]
        self.records[rid] = {name: rec.get(name) for name in RECORD_FIELDS}
        if "_notifications" in raw:
            self.notifications[rid] = int(raw["_notifications"] or 0)
        if "_deleted_at" in raw:
            if raw["_deleted_at"]:
                self.deleted_at[rid] = parse_iso_z(str(raw["_deleted_at"]))
            else:
                self.deleted_at.pop(rid, None)

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        self._apply_as_staff(record_id, changes, bump=True)

    def _apply_as_staff(self, record_id: str, changes: Mapping[str, Any], *, bump: bool) -> None:
        rec = self._live(record_id)
        if rec is None:
            raise KeyError(record_id)
        unknown = set(changes) - set(RECORD_FIELDS) - {"send_notification"}
        if unknown or "id" in changes:
            raise ValueError(f"mutate: unknown or read-only field(s) {sorted(unknown | ({'id'} & set(changes)))}")
        old_status = rec["status"]
        for name, value in changes.items():
            if name != "send_notification":
                rec[name] = value
        if bump:
            now = self._bump(rec)
            if rec["status"] != old_status and rec["status"] == "completed" and "completed_at" not in changes:
                rec["completed_at"] = iso_z(now)
            if rec["status"] != old_status and rec["status"] == "cancelled" and "cancelled_at" not in changes:
                rec["cancelled_at"] = iso_z(now)

    # -- faults --------------------------------------------------------------------------------
    def custom_fault_types(self) -> frozenset[str]:
        return frozenset(
            {"delete_record", "mutate_record", "mutate_keep_version", "rate_limit_window", "doctor_busy",
             "list_missing_fields"}
        )  # fmt: skip

    async def custom_fault(
        self, action: dict[str, Any], request: web.Request, handler: Handler
    ) -> web.StreamResponse | None:
        ftype = action.get("type")
        target = str(action.get("id") or request.match_info.get("id") or "")
        if ftype == "delete_record":
            if target in self.records:
                self.deleted_at.setdefault(target, self.now().replace(microsecond=0))
            return await handler(request)
        if ftype in ("mutate_record", "mutate_keep_version"):
            if target and self._live(target) is not None:
                self._apply_as_staff(target, dict(action.get("changes") or {}), bump=ftype == "mutate_record")
            return await handler(request)
        if ftype == "list_missing_fields":
            request["saludya_list_fields"] = LIST_FIELDS
            return await handler(request)
        if ftype == "doctor_busy":
            details = {
                "conflicting_appointment_id": new_id("apt_"),
                "suggested_times": list(action.get("suggested_times") or []),
            }
            return error_response(409, "APPOINTMENT_CONFLICT", MSG_BUSY, details)
        if ftype == "rate_limit_window":
            window = int(action.get("window", 900))
            names = {seconds: name for name, seconds in WINDOWS}
            if window not in names:
                return json_response({"error": f"rate_limit_window: window must be one of {sorted(names)}"}, 500)
            now = self.clock.timestamp()
            reset = (int(now) // window + 1) * window
            limit = self.options.get(names[window]) or 0
            return self._too_many(int(limit), window, reset, max(1, math.ceil(reset - now)))
        return None

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

    def _api(self, inner: ApiHandler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            key = self._authenticate(request)
            if key is None:
                return error_response(401, "UNAUTHORIZED", MSG_UNAUTHORIZED)
            refused, headers = self._count(key)
            if refused is not None:
                return refused
            try:
                response = await inner(request, key)
            except ApiError as exc:
                response = exc.response()
            except Exception:
                log.exception("saludya sandbox: unexpected error on %s %s", request.method, request.path)
                response = error_response(500, "INTERNAL_ERROR", "Internal server error")
            response.headers.update(headers)
            return response

        return handler

    # -- routes --------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/appointments", self._api(self._h_list))
        app.router.add_post("/api/appointments", self._api(self._h_create))
        app.router.add_get("/api/appointments/{id}", self._api(self._h_get))
        app.router.add_put("/api/appointments/{id}", self._api(self._h_update))
        app.on_response_prepare.append(self._echo_request_id)

    async def _echo_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        rid = request.headers.get("X-Request-ID")
        if rid and "X-Request-ID" not in response.headers:
            response.headers["X-Request-ID"] = rid

    async def _h_list(self, request: web.Request, key: str) -> web.StreamResponse:
        q = request.query
        errors: dict[str, str] = {}
        limit = self._int_param(q, "limit", 20, errors)
        page = self._int_param(q, "page", 1, errors)
        if "limit" not in errors and not 1 <= limit <= 100:
            errors["limit"] = "limit must be between 1 and 100"
        if "page" not in errors and page < 1:
            errors["page"] = "page must be 1 or greater"
        for name in ("date_from", "date_to"):
            if name in q and not valid_date(q[name]):
                errors[name] = f"{name} must be a date in YYYY-MM-DD format"
        if "date_from" in q and "date_to" in q and not errors.keys() & {"date_from", "date_to"}:
            if q["date_from"] > q["date_to"]:
                errors["date_from"] = "date_from must not be after date_to"
        sort_by = q.get("sort_by", "date")
        if sort_by not in ("date", "created_at", "status"):
            errors["sort_by"] = "sort_by must be one of: date, created_at, status"
        sort_order = q.get("sort_order", "asc")
        if sort_order not in ("asc", "desc"):
            errors["sort_order"] = "sort_order must be asc or desc"
        if "status" in q and q["status"] not in STATUSES:
            errors["status"] = f"status must be one of: {', '.join(STATUSES)}"
        if errors:
            raise validation_error(errors)
        rows = []
        for rid, rec in self.records.items():
            if rid in self.deleted_at or not self._may_see(key, rec["doctor_id"]):
                continue
            if "date_from" in q and rec["date"] < q["date_from"]:
                continue
            if "date_to" in q and rec["date"] > q["date_to"]:
                continue
            if any(name in q and rec[name] != q[name] for name in ("status", "patient_id", "doctor_id")):
                continue
            rows.append(rec)
        sort_keys: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
            "date": lambda r: (r["date"], r["time"], r["id"]),
            "created_at": lambda r: (r["created_at"], r["id"]),
            "status": lambda r: (r["status"], r["id"]),
        }
        rows.sort(key=sort_keys[sort_by], reverse=sort_order == "desc")
        total = len(rows)
        fields: Iterable[str] = request.get("saludya_list_fields", RECORD_FIELDS)
        chunk = rows[(page - 1) * limit : page * limit]
        body = {
            "data": [self.render(r, fields) for r in chunk],
            "pagination": {"page": page, "limit": limit, "total": total, "total_pages": math.ceil(total / limit)},
        }
        return json_response(body)

    @staticmethod
    def _int_param(q: Mapping[str, str], name: str, default: int, errors: dict[str, str]) -> int:
        if name not in q:
            return default
        raw = q[name]
        if not re.fullmatch(r"-?\d+", raw):
            errors[name] = f"{name} must be an integer"
            return default
        return int(raw)

    async def _h_get(self, request: web.Request, key: str) -> web.StreamResponse:
        rid = request.match_info["id"]
        rec = self._live(rid)
        if rec is None:
            raise not_found(rid)
        if not self._may_see(key, rec["doctor_id"]):
            raise ApiError(403, "FORBIDDEN", MSG_FORBIDDEN_GET)
        return json_response(self.render(rec))

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

    async def _h_create(self, request: web.Request, key: str) -> web.StreamResponse:
        body = await self._body(request)
        errors: dict[str, str] = {}
        for name in body:
            if name == "status" or name in CLINICAL or name == "cancellation_reason":
                errors[name] = f"{name} cannot be set when creating an appointment"
            elif name in READ_ONLY:
                errors[name] = f"{name} is read-only"
            elif name not in CREATE_FIELDS:
                errors[name] = f"Unknown field: {name}"
        for name in ("patient_id", "doctor_id", "date", "time"):
            if body.get(name) is None and name not in errors:
                errors[name] = f"{name} is required"
        self._check_formats({k: v for k, v in body.items() if k in CREATE_FIELDS}, errors, create=True)
        if "patient_id" not in errors and body["patient_id"] not in self.patients:
            errors["patient_id"] = f"Patient '{body['patient_id']}' does not exist"
        if "doctor_id" not in errors and body["doctor_id"] not in self.doctors:
            errors["doctor_id"] = f"Doctor '{body['doctor_id']}' does not exist"
        if errors:
            raise validation_error(errors)
        if not self._may_see(key, body["doctor_id"]):
            raise ApiError(403, "FORBIDDEN", MSG_FORBIDDEN_POST)
        duration = body.get("duration_minutes", 30)
        self._check_availability(body["doctor_id"], body["date"], body["time"], duration, exclude=None)
        rid = new_id("apt_")
        while rid in self.records:
            rid = new_id("apt_")
        now = iso_z(self.now())
        rec: dict[str, Any] = {name: None for name in RECORD_FIELDS}
        rec.update(
            {
                "id": rid, "patient_id": body["patient_id"], "doctor_id": body["doctor_id"],
                "specialty": self.doctors[body["doctor_id"]].get("specialty"), "date": body["date"],
                "time": body["time"], "duration_minutes": duration, "status": "scheduled",
                "reason": body.get("reason"), "notes": body.get("notes"), "follow_up_required": False,
                "created_at": now, "updated_at": now,
            }
        )  # fmt: skip
        self.records[rid] = rec
        if body.get("send_notification", True):
            self.notifications[rid] += 1
        return json_response(self.render(rec), status=201)

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

    async def _h_update(self, request: web.Request, key: str) -> web.StreamResponse:
        rid = request.match_info["id"]
        rec = self._live(rid)
        if rec is None:
            raise not_found(rid)
        if not self._may_see(key, rec["doctor_id"]):
            raise ApiError(403, "FORBIDDEN", MSG_FORBIDDEN_PUT)
        body = await self._body(request)
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
        # stage 2: 422 for the terminal lock, the in-progress edit lock and the transition table
        current = rec["status"]
        if current in TERMINAL:
            raise ApiError(
                422,
                "INVALID_STATE_TRANSITION",
                f"Cannot update a {current} appointment. Contact support if you need to make changes.",
            )
        if current == "in_progress" and any(name in body for name in IN_PROGRESS_LOCKED):
            raise ApiError(422, "INVALID_STATE_TRANSITION", MSG_IN_PROGRESS_LOCK)
        target = body.get("status", current)
        if target != current and target not in TRANSITIONS[current]:
            raise ApiError(
                422,
                "INVALID_STATE_TRANSITION",
                f"Cannot change status from '{current}' to '{target}'",
                {"from": current, "to": target, "allowed": list(TRANSITIONS[current])},
            )
        # stage 3: 400 for what the target status requires or forbids
        completing = target == "completed" and current != "completed"
        cancelling = target == "cancelled" and current != "cancelled"
        if completing and not (isinstance(body.get("diagnosis"), str) and body["diagnosis"].strip()):
            errors["status"] = MSG_NO_DIAGNOSIS
        if cancelling and not (
            isinstance(body.get("cancellation_reason"), str) and body["cancellation_reason"].strip()
        ):
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
        changes = {
            name: value
            for name, value in body.items()
            if name not in ("send_notification", "status") and rec.get(name) != value
        }
        if target != current:
            changes["status"] = target
        # stage 4: 409 when the schedule changes
        if any(name in changes for name in SCHEDULE_FIELDS):
            new = {name: changes.get(name, rec[name]) for name in SCHEDULE_FIELDS}
            self._check_availability(
                rec["doctor_id"], new["date"], new["time"], int(new["duration_minutes"]), exclude=rid
            )
        if not changes:
            return json_response(self.render(rec))
        rec.update(changes)
        now = self._bump(rec)
        if completing:
            rec["completed_at"] = iso_z(now)
        if cancelling:
            rec["cancelled_at"] = iso_z(now)
        if body.get("send_notification", True):
            self.notifications[rid] += 1
        return json_response(self.render(rec))


def create_sandbox(**options: Any) -> SaludYaSandbox:
    return SaludYaSandbox(**options)


# -- seeding from the shared invented dataset ------------------------------------------------------
#: canonical (FHIR) status -> SaludYa status (docs/vendors/saludya.md §9, canonical -> SaludYa)
CANONICAL_TO_NATIVE: dict[str, str] = {
    "proposed": "scheduled",
    "pending": "scheduled",
    "booked": "confirmed",
    "arrived": "in_progress",
    "checked-in": "in_progress",
    "fulfilled": "completed",
    "cancelled": "cancelled",
    "noshow": "no_show",
    "entered-in-error": "cancelled",
    "waitlist": "scheduled",
}


def _stable_id(prefix: str, kind: str, key: str, taken: set[str]) -> str:
    digest = hashlib.sha256(f"saludya:{kind}:{key}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    number = int.from_bytes(digest, "big")
    chars = []
    while number:
        number, rem = divmod(number, len(alphabet))
        chars.append(alphabet[rem])
    text = "".join(chars)
    length = 10
    candidate = prefix + text[:length]
    while candidate in taken:
        length += 1
        candidate = prefix + text[:length]
    taken.add(candidate)
    return candidate


def seed_body(
    dataset: SeedDataset, *, timezone: str = "America/Bogota"
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The ``POST /_sandbox/records`` body for ``dataset`` and its crosswalk rows.

    Dates and times are the clinic's wall clock in ``timezone`` (the sandbox's default zone). Each
    record's ``specialty`` is its service's name (crosswalk kind ``service``: external id = specialty
    text); SaludYa stores no location, so location rows carry a stable ``loc_`` id used nowhere else.
    """
    zone = ZoneInfo(timezone)
    taken: set[str] = set()
    rows: list[tuple[str, str, str]] = []
    services = {s.key: s for s in dataset.services}
    patient_ids: dict[str, str] = {}
    patients = []
    for p in dataset.patients:
        pid = _stable_id("pat_", "patient", p.key, taken)
        patient_ids[p.key] = pid
        patients.append({"id": pid, "name": f"{p.given} {p.family}", "email": p.email, "phone": p.phone})
        rows.append(("patient", p.key, pid))
    first_service: dict[str, str] = {}
    for a in dataset.appointments:
        first_service.setdefault(a.practitioner, services[a.service].name)
    doctor_ids: dict[str, str] = {}
    doctors = []
    for d in dataset.practitioners:
        did = _stable_id("doc_", "practitioner", d.key, taken)
        doctor_ids[d.key] = did
        specialty = first_service.get(d.key) or (dataset.services[0].name if dataset.services else "General")
        doctors.append({"id": did, "name": f"Dr. {d.given} {d.family}", "specialty": specialty})
        rows.append(("practitioner", d.key, did))
    for loc in dataset.locations:
        rows.append(("location", loc.key, _stable_id("loc_", "location", loc.key, taken)))
    for s in dataset.services:
        rows.append(("service", s.key, s.name))
    records = []
    for a in dataset.appointments:
        aid = _stable_id("apt_", "appointment", a.key, taken)
        local = a.start.astimezone(zone)
        status = CANONICAL_TO_NATIVE.get(a.status, "scheduled")
        rec: dict[str, Any] = {
            "id": aid,
            "patient_id": patient_ids[a.patient],
            "doctor_id": doctor_ids[a.practitioner],
            "specialty": services[a.service].name,
            "date": local.strftime("%Y-%m-%d"),
            "time": local.strftime("%H:%M"),
            "duration_minutes": round((a.end - a.start).total_seconds() / 60),
            "status": status,
            "reason": None,
            "notes": a.notes,
        }
        if status == "completed":
            rec["diagnosis"] = "Seeded visit completed"
        if status == "cancelled":
            reason = "Entered in error (syncd)" if a.status == "entered-in-error" else "Cancelled by clinic"
            rec["cancellation_reason"] = reason
        records.append(rec)
        rows.append(("appointment", a.key, aid))
    return {"patients": patients, "doctors": doctors, "records": records}, rows
