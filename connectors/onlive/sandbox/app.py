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
import math
import uuid
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from connectors.onlive.sandbox.rules import (
    API,
    CANCEL_FIELDS,
    CREATE_FIELDS,
    SUBSTATUS_RE,
    UPDATABLE,
    OnliveRules,
    error,
    fe,
    validation,
)
from connectors.onlive.sandbox.store import CLOSED, blank_record, fmt, ms, ts
from syncd.sandboxkit.base import Handler, json_response
from syncd.sandboxkit.faults import FaultAction, fault_hook, marked

__all__ = ["OnliveSandbox", "create_sandbox"]


class OnliveSandbox(OnliveRules):
    """Fake Onlive Open API v2 (appointments): the routes (``add_routes``) over the rules and the store."""

    # -- faults ----------------------------------------------------------------------------------
    REQUEST_MARKS = frozenset({"ignore_updated_since", "reject_updated_since", "ignore_external_id"})

    def add_fault(self, match: Any, action: Any, times: int = 1, rate: float | None = None) -> None:
        if isinstance(action, dict) and action.get("type") == "session_end":
            if action.get("status", "completed") not in ("completed", "no-show"):
                raise ValueError("action.status: session_end takes 'completed' or 'no-show'")
        super().add_fault(match, action, times, rate)

    @fault_hook("request_expired")
    async def _request_expired(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return self._expired()

    @fault_hook("guest_added", "session_end")
    async def _staff_change(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Onlive's own users act on the record: a guest joins, or the session ends (status)."""
        for rid in await self.fault_targets(action, request):
            record = self.records.get(rid.lower())
            if record is None:
                continue
            if action["type"] == "guest_added":
                record["guests"] = [*(record.get("guests") or []), {"email": "other@example.com"}]
            else:
                record["status"] = str(action.get("status", "completed"))
            self._bump(record)
        return await handler(request)

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

    # -- handlers: reads -------------------------------------------------------------------------
    async def _h_get(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        record, failure = self._lookup(request, key_id, write=False)
        if failure is not None or record is None:
            return failure or error(404, "NOT_FOUND", "Appointment not found")
        return json_response(copy.deepcopy(record))

    async def _h_list(self, request: web.Request, body: bytes, key_id: str) -> web.Response:
        query = self.list_query(request.query, reject_updated_since=marked(request, "reject_updated_since"))
        if isinstance(query, list):
            return validation(query)
        times = query.times
        if marked(request, "ignore_updated_since"):
            times.pop("updatedSince", None)
        external_id = None if marked(request, "ignore_external_id") else query.params.get("externalId")
        search = query.params.get("search", "").lower()
        rows = []
        for record in self.records.values():
            if record["deletedAt"] is not None and not query.include_deleted:
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
        rows.sort(key=lambda r: (ts(r[query.sort]), r["id"]), reverse=query.descending)
        page, limit = query.page, query.limit
        total = len(rows)
        chunk = rows[(page - 1) * limit : page * limit]
        meta = {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}
        return json_response({"data": [copy.deepcopy(r) for r in chunk], "meta": meta})

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
        record = blank_record()
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
                return error(
                    422, "USE_CANCEL_ENDPOINT", f"Use POST {API}/{record['id']}/cancel to cancel an appointment"
                )
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
