"""SaludYa sandbox: a stateful fake of the SaludYa appointments API (docs/vendors/saludya.md §1-§10).

Routes: ``GET``/``POST /api/appointments`` and ``GET``/``PUT /api/appointments/{id}``, Bearer API keys
(option ``api_keys``: key -> ``"*"`` or a list of doctor ids), fixed UTC-aligned quotas per key
(15 min / hour / day) with ``X-RateLimit-*`` headers and 429 + ``Retry-After``, the seed's error
envelope, the state machine and edit rules, the doctor-availability check (409) and the
``send_notification`` counter. No webhooks, no automatic status changes, ``If-Match`` ignored.

This module is the sandbox only; it shares nothing with the SaludYa connector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from connectors.saludya.sandbox.rules import (
    CLINICAL,
    CREATE_FIELDS,
    MSG_BUSY,
    MSG_FORBIDDEN_GET,
    MSG_FORBIDDEN_POST,
    MSG_FORBIDDEN_PUT,
    MSG_UNAUTHORIZED,
    READ_ONLY,
    SCHEDULE_FIELDS,
    WINDOWS,
    ApiError,
    ApiHandler,
    SaludYaRules,
    error_response,
    not_found,
    validation_error,
)
from connectors.saludya.sandbox.store import (
    LIST_FIELDS,
    RECORD_FIELDS,
    STATUSES,
    iso_z,
    log,
    new_id,
    valid_date,
)
from syncd.sandboxkit.base import Handler, json_response
from syncd.sandboxkit.faults import FaultAction, fault_hook

__all__ = ["SaludYaSandbox", "create_sandbox"]


class SaludYaSandbox(SaludYaRules):
    """The routes (``add_routes``) over the rules and the store."""

    # -- faults --------------------------------------------------------------------------------
    @fault_hook("delete_record")
    async def _staff_delete(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        target = _fault_target(action, request)
        if target in self.records:
            self.deleted_at.setdefault(target, self.now().replace(microsecond=0))
        return await handler(request)

    @fault_hook("mutate_record", "mutate_keep_version")
    async def _staff_edit(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        target = _fault_target(action, request)
        if target and self._live(target) is not None:
            self._apply_as_staff(target, dict(action.get("changes") or {}), bump=action["type"] == "mutate_record")
        return await handler(request)

    @fault_hook("list_missing_fields")
    async def _list_fields(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        request["saludya_list_fields"] = LIST_FIELDS
        return await handler(request)

    @fault_hook("doctor_busy")
    async def _doctor_busy(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        details = {
            "conflicting_appointment_id": new_id("apt_"),
            "suggested_times": list(action.get("suggested_times") or []),
        }
        return error_response(409, "APPOINTMENT_CONFLICT", MSG_BUSY, details)

    @fault_hook("rate_limit_window")
    async def _window_spent(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        window = int(action.get("window", 900))
        names = {seconds: name for name, seconds in WINDOWS}
        if window not in names:
            return json_response({"error": f"rate_limit_window: window must be one of {sorted(names)}"}, 500)
        now = self.clock.timestamp()
        reset = (int(now) // window + 1) * window
        limit = self.options.get(names[window]) or 0
        return self._too_many(int(limit), window, reset, max(1, math.ceil(reset - now)))

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

    async def _h_get(self, request: web.Request, key: str) -> web.StreamResponse:
        rid = request.match_info["id"]
        rec = self._live(rid)
        if rec is None:
            raise not_found(rid)
        if not self._may_see(key, rec["doctor_id"]):
            raise ApiError(403, "FORBIDDEN", MSG_FORBIDDEN_GET)
        return json_response(self.render(rec))

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

    async def _h_update(self, request: web.Request, key: str) -> web.StreamResponse:
        rid = request.match_info["id"]
        rec = self._live(rid)
        if rec is None:
            raise not_found(rid)
        if not self._may_see(key, rec["doctor_id"]):
            raise ApiError(403, "FORBIDDEN", MSG_FORBIDDEN_PUT)
        body = await self._body(request)
        current = rec["status"]
        target = self.check_update(body, current)
        completing = target == "completed" and current != "completed"
        cancelling = target == "cancelled" and current != "cancelled"
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


def _fault_target(action: FaultAction, request: web.Request) -> str:
    """The record a staff fault acts on: its ``id``, else the path's."""
    return str(action.get("id") or request.match_info.get("id") or "")


def create_sandbox(**options: Any) -> SaludYaSandbox:
    return SaludYaSandbox(**options)
