"""A stateful fake of Dentally's appointment API (docs/vendors/dentally.md §1-§10, and the seed thread).

Vendor routes (all under ``/v1``): appointment list (date filter mandatory, ``updated_after`` strict,
``after``/``before``/``on`` on ``start_time``, paging and sorting), read one, create, update (PUT and
PATCH, with the state machine, the state lock, the patient rule and metadata limits), delete, the
cancellation reasons, and small reference reads (patients, practitioners, sites, appointment reasons).
Authentication is a Bearer token plus a mandatory ``User-Agent``; a token idle for more than 14 days of
sandbox clock dies. The hourly quota answers 403 ``Rate limit exceeded``, bursts answer 429 with
``Retry-After``. Every change posts a signed webhook (generic scheme) to the ``webhook_url`` option, with
Dentally's retry/deactivation behaviour. In-surgery appointments complete at practice-local midnight.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from connectors.dentally.sandbox.rules import (
    BLANK,
    TRANSITIONS,
    DentallyRules,
    error_response,
    invalid_param,
    not_found,
    unprocessable,
)
from connectors.dentally.sandbox.store import FIELD_ORDER, STATES, UUID_NS, to_ms
from syncd.sandboxkit.base import Handler, WindowCounter, json_response
from syncd.sandboxkit.faults import FaultAction, fault_hook, marked

__all__ = ["DentallySandbox", "create_sandbox"]


class DentallySandbox(DentallyRules):
    """Dentally, as docs/vendors/dentally.md describes it: the routes (``add_routes``) over the rules and
    the store."""

    async def _h_clock(self, request: web.Request) -> web.Response:
        response = await super()._h_clock(request)
        self.tick()  # automatic transitions happen when the clock passes their time
        return response

    def on_options_changed(self, names: set[str]) -> None:
        if "per_second" in names:
            self.burst = WindowCounter(self.clock, int(self.options["per_second"]), 1.0)

    # -- faults -------------------------------------------------------------------------------------
    REQUEST_MARKS = frozenset({"omit_total_pages", "ignore_before", "reject_updated_after"})
    FAULTS_ELSEWHERE = frozenset({"webhook_drop"})  # counted by the webhook sender (store.py)

    @fault_hook("auto_confirm")
    async def _auto_confirm(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        for rid in await self.fault_targets(action, request):
            with contextlib.suppress(KeyError):
                await self.mutate(rid, {"state": "Confirmed"}, trigger="sms_confirm")
        return await handler(request)

    @fault_hook("rate_limit_hourly")
    async def _hourly_quota(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = self.rate_headers()
        headers["X-RateLimit-Remaining"] = "0"
        return error_response(403, "invalid_access_error", "Rate limit exceeded", headers=headers)

    def guarded(
        self, inner: Callable[[web.Request], Awaitable[web.StreamResponse]], scope: str | None = "appointment"
    ) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            refused = self.check_access(request, scope)
            if refused is not None:
                response: web.StreamResponse = refused
            else:
                self.tick()
                response = await inner(request)
            for name, value in self.rate_headers().items():
                response.headers.setdefault(name, value)
            return response

        return handler

    # -- routes -------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/appointments", self.guarded(self.h_list))
        r.add_post("/v1/appointments", self.guarded(self.h_create))
        r.add_get("/v1/appointments/{id}", self.guarded(self.h_get))
        r.add_put("/v1/appointments/{id}", self.guarded(self.h_update))
        r.add_patch("/v1/appointments/{id}", self.guarded(self.h_update))
        r.add_delete("/v1/appointments/{id}", self.guarded(self.h_delete))
        r.add_get("/v1/appointment_cancellation_reasons", self.guarded(self.h_cancellation_reasons))
        r.add_get("/v1/appointment_reasons", self.guarded(self.h_appointment_reasons))
        r.add_get("/v1/patients/{id}", self.guarded(self.h_patient, "patient:read"))
        r.add_get("/v1/practitioners", self.guarded(self.h_practitioners, "user:read"))
        r.add_get("/v1/sites", self.guarded(self.h_sites, None))
        r.add_route("*", "/{tail:.*}", self.guarded(self.h_no_route, None))

    async def h_no_route(self, request: web.Request) -> web.Response:
        return not_found()

    async def h_cancellation_reasons(self, request: web.Request) -> web.Response:
        return json_response({"appointment_cancellation_reasons": list(self.cancellation_reasons.values())})

    async def h_appointment_reasons(self, request: web.Request) -> web.Response:
        return json_response({"appointment_reasons": list(self.appointment_reasons.values())})

    async def h_patient(self, request: web.Request) -> web.Response:
        try:
            patient = self.patients.get(int(request.match_info["id"]))
        except ValueError:
            patient = None
        return json_response({"patient": patient}) if patient else not_found()

    async def h_practitioners(self, request: web.Request) -> web.Response:
        items = list(self.practitioners.values())
        meta = {"page": 1, "per_page": len(items), "total": len(items), "total_pages": 1}
        return json_response({"practitioners": items, "meta": meta})

    async def h_sites(self, request: web.Request) -> web.Response:
        return json_response({"sites": list(self.sites.values())})

    async def h_get(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        return json_response({"appointment": self.render(rec)}) if rec else not_found()

    async def h_delete(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        if rec is None:
            return not_found()
        self.delete(rec, trigger="api")
        return web.Response(status=204)

    async def h_list(self, request: web.Request) -> web.Response:
        query = self.list_query(
            request.query,
            reject_updated_after=marked(request, "reject_updated_after"),
            ignore_before=marked(request, "ignore_before"),
        )
        if isinstance(query, web.Response):
            return query
        tz = self.tz()
        # paging through an unchanged result set sorts once (benchmarks page through 100,000 records)
        q = request.query
        cache_key = (
            tuple(sorted((k, v) for k, v in q.items() if k != "page")),
            query.ignore_before,
            self.generation,
            tz.key,
        )
        if self.list_cache is not None and self.list_cache[0] == cache_key:
            matched = self.list_cache[1]
        else:
            matched = sorted(
                (
                    rec
                    for rec in self.appointments.values()
                    if rec["id"] not in self.deleted_at and query.keeps(rec, tz)
                ),
                key=lambda rec: (rec[query.sort_by], rec["id"]),
                reverse=query.descending,
            )
            self.list_cache = (cache_key, matched)
        page, per_page = query.page, query.per_page
        total = len(matched)
        chunk = matched[(page - 1) * per_page : page * per_page]
        meta: dict[str, Any] = {"page": page, "per_page": per_page, "total": total}
        if not marked(request, "omit_total_pages"):
            meta["total_pages"] = math.ceil(total / per_page)
        return json_response({"appointments": [self.render(rec) for rec in chunk], "meta": meta})

    # -- writes ---------------------------------------------------------------------------------------------
    async def _appointment_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return invalid_param("appointment", "must be a JSON object")
        if not isinstance(body, dict) or not isinstance(body.get("appointment"), dict):
            return invalid_param("appointment", "is required")
        appointment: dict[str, Any] = body["appointment"]
        return appointment

    async def h_create(self, request: web.Request) -> web.Response:
        fields = await self._appointment_body(request)
        if isinstance(fields, web.Response):
            return fields
        errors: dict[str, list[str]] = {}
        if fields.get("practitioner_id") is None:
            errors["practitioner_id"] = [BLANK]
        start, finish = self._times(fields, None, errors)
        self._check_refs(fields, errors)
        state = fields.get("state")
        if state is None:
            state = "Pending"
        elif state not in STATES:
            errors.setdefault("state", []).append("is not included in the list")
        elif state not in ("Pending", "Confirmed"):
            errors.setdefault("state", []).append("must be Pending or Confirmed when creating an appointment")
        if fields.get("cancellation_reason_id") is not None:
            errors["cancellation_reason_id"] = ["can not be set when creating an appointment"]
        if errors:
            return unprocessable(errors)
        assert start is not None and finish is not None
        rid = self.next_id
        self.next_id += 1
        now = to_ms(self.now())
        rec: dict[str, Any] = {key: None for key in FIELD_ORDER}
        rec.update(
            id=rid,
            uuid=str(uuid.uuid5(UUID_NS, f"api:{rid}")),
            start_time=start,
            finish_time=finish,
            duration=int((finish - start).total_seconds() // 60),
            patient_id=fields.get("patient_id"),
            practitioner_id=fields["practitioner_id"],
            site_id=fields.get("site_id"),
            room_id=fields.get("room_id"),
            reason=fields.get("reason"),
            notes=fields.get("notes") or "",
            metadata=dict(fields.get("metadata") or {}),
            created_at=now,
            updated_at=now,
        )
        self.set_state(rec, str(state), now)
        self.appointments[rid] = rec
        self.last_trigger[rid] = "api"
        self.emit("appointment.created", rec)
        return json_response({"appointment": self.render(rec)}, status=201)

    async def h_update(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        if rec is None:
            return not_found()
        fields = await self._appointment_body(request)
        if isinstance(fields, web.Response):
            return fields
        errors: dict[str, list[str]] = {}
        changes: dict[str, Any] = {}
        current = rec["state"]
        start, finish = self._times(fields, rec, errors)
        if start is not None and start != rec["start_time"]:
            changes["start_time"] = start
        if finish is not None and finish != rec["finish_time"]:
            changes["finish_time"] = finish
        self._check_refs(fields, errors)
        for name in ("practitioner_id", "site_id", "room_id", "reason"):
            if name in fields and name not in errors and fields[name] != rec[name]:
                changes[name] = fields[name]
        if "practitioner_id" in changes and changes["practitioner_id"] is None:
            errors.setdefault("practitioner_id", []).append(BLANK)
        metadata = dict(fields.get("metadata") or {})
        if "metadata" in fields and "metadata" not in errors and metadata != rec["metadata"]:
            changes["metadata"] = metadata
        if "notes" in fields and "notes" not in errors and (fields["notes"] or "") != rec["notes"]:
            changes["notes"] = fields["notes"] or ""
        if "patient_id" in fields and "patient_id" not in errors and fields["patient_id"] != rec["patient_id"]:
            if rec["patient_id"] is not None:
                errors.setdefault("patient_id", []).append("can not change patients")
            changes["patient_id"] = fields["patient_id"]
        state_errors: list[str] = []
        target = fields.get("state", current)
        if "state" in fields and target != current:
            if target not in STATES:
                state_errors.append("is not included in the list")
            elif target not in TRANSITIONS[current]:
                state_errors.append(f"can not transition from {current} to {target}")
            else:
                changes["state"] = target
        self._check_cancel_reason(fields, rec, target, changes, errors)
        cancelling = changes.get("state") == "Cancelled"
        locked = [
            name
            for name in changes
            if name not in ("state", "notes") and not (name == "cancellation_reason_id" and cancelling)
        ]
        if current != "Pending" and locked:
            state_errors.insert(0, f"The appointment can not be updated as the current status is: {current}")
        if state_errors:
            errors["state"] = state_errors
        if errors:
            return unprocessable(errors)
        if changes:
            self._apply_update(rec, changes)
        return json_response({"appointment": self.render(rec)})


def create_sandbox(**options: Any) -> DentallySandbox:
    return DentallySandbox(**options)
