"""Zoho CRM sandbox: the stateful fake of Zoho CRM v7 ``Appointments__s`` (docs/vendors/zoho_crm.md), its routes."""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from aiohttp import web

import connectors.zoho_crm.sandbox.reads as reads
import connectors.zoho_crm.sandbox.watch as watch
from connectors.zoho_crm.sandbox.records import Appt, Token
from connectors.zoho_crm.sandbox.rules import Plan, check_create, check_update
from connectors.zoho_crm.sandbox.store import ZohoStore
from connectors.zoho_crm.sandbox.wire import (
    API,
    API_USER,
    AUTH_FAILURE,
    FIELDS,
    INVALID_TOKEN,
    MODULE,
    SCOPE_MISMATCH,
    code_status,
    invalid_method,
    invalid_module,
    invalid_url,
    record_error,
    render_time,
    second,
    too_many,
    top_error,
    zid,
)
from syncd.sandboxkit.base import Handler, json_response
from syncd.sandboxkit.faults import FaultAction, fault_hook

__all__ = ["ZohoCrmSandbox", "create_sandbox"]

READ_SCOPES = ("ZohoCRM.modules.ALL", "ZohoCRM.modules.appointments.ALL", "ZohoCRM.modules.appointments.READ")
CREATE_SCOPES = ("ZohoCRM.modules.ALL", "ZohoCRM.modules.appointments.ALL", "ZohoCRM.modules.appointments.CREATE")
UPDATE_SCOPES = ("ZohoCRM.modules.ALL", "ZohoCRM.modules.appointments.ALL", "ZohoCRM.modules.appointments.UPDATE")
DELETE_SCOPES = ("ZohoCRM.modules.ALL", "ZohoCRM.modules.appointments.ALL", "ZohoCRM.modules.appointments.DELETE")
WATCH_WRITE_SCOPES = ("ZohoCRM.notifications.ALL", "ZohoCRM.notifications.WRITE", "ZohoCRM.notifications.CREATE")
WATCH_READ_SCOPES = ("ZohoCRM.notifications.ALL", "ZohoCRM.notifications.READ")
WATCH_DELETE_SCOPES = ("ZohoCRM.notifications.ALL", "ZohoCRM.notifications.DELETE")
PREFS_READ_SCOPES = (
    "ZohoCRM.settings.ALL",
    "ZohoCRM.settings.READ",
    "ZohoCRM.settings.appointment_preferences.ALL",
    "ZohoCRM.settings.appointment_preferences.READ",
)
PREFS_WRITE_SCOPES = (
    "ZohoCRM.settings.ALL",
    "ZohoCRM.settings.UPDATE",
    "ZohoCRM.settings.appointment_preferences.ALL",
    "ZohoCRM.settings.appointment_preferences.UPDATE",
)
#: first path segments under /crm/v7 that are APIs, not modules (another name = INVALID_MODULE)
NON_MODULES = frozenset({"actions", "settings", "users", "org", "coql", "__notifications", "files", "Territories"})
MAX_TOKENS_PER_REFRESH = 30
ROUTE_HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ZohoCrmSandbox(ZohoStore):
    """Zoho CRM v7 Appointments sandbox. Options: docs/vendors/README.md "Sandbox options and credentials" and
    docs/vendors/zoho_crm.md §10."""

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return too_many("API credits exhausted", retry_after)

    async def mutate_targets(self, request: web.Request) -> list[str]:
        rid = request.match_info.get("id")
        if rid:
            return [rid]
        if request.method in ("PUT", "POST"):
            try:
                body = json.loads(await request.read() or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                return []
            if isinstance(body, dict) and isinstance(body.get("data"), list):
                return [str(r["id"]) for r in body["data"] if isinstance(r, dict) and r.get("id")]
        return []

    @fault_hook("invalid_token")
    async def _invalid_token(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return top_error(401, *INVALID_TOKEN)

    @fault_hook("refresh_invalid_code")
    async def _refresh_refused(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return json_response({"error": "invalid_code"})

    @fault_hook("credits_exhausted")
    async def _no_credits(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return too_many("API credits exhausted", float(action.get("retry_after", 60)))

    @fault_hook("concurrency_limit")
    async def _too_concurrent(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return too_many("concurrency limit exceeded", float(action.get("retry_after", 1)))

    @fault_hook("partial_batch")
    async def _partial_batch(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        ids = {str(i) for i in action.get("ids") or []}
        request["zoho_partial"] = (ids, str(action.get("code", "INVALID_DATA")))
        return await handler(request)

    @fault_hook("channel_expired")
    async def _channel_expired(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        now = self.now()
        for channel in self.channels.values():
            channel.expiry = now
            channel.expiry_text = render_time(now, self.tz) or ""
        return await handler(request)

    @fault_hook("notify_drop")
    async def _notify_drop(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.notify_drop_pending += 1
        return await handler(request)

    @fault_hook("search_lag")
    async def _search_lag(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        request["zoho_search_lag"] = float(action.get("seconds", 10))
        return await handler(request)

    # -- app -------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.middlewares.insert(0, self._outer)
        r = app.router
        r.add_post("/oauth/v2/token", self._h_token)
        r.add_post("/oauth/v2/token/revoke", self._h_revoke)
        r.add_route("*", f"{API}/{MODULE}", self._h_module)
        r.add_route("*", f"{API}/{MODULE}/deleted", self._h_deleted)
        r.add_route("*", f"{API}/{MODULE}/search", self._h_search)
        r.add_route("*", f"{API}/{MODULE}/{{id}}", self._h_one)
        r.add_route("*", f"{API}/actions/watch", self._h_watch)
        r.add_route("*", f"{API}/settings/appointment_preferences", self._h_prefs)
        r.add_route("*", f"{API}/{{module}}", self._h_other)
        r.add_route("*", f"{API}/{{module}}/{{tail:.*}}", self._h_other)
        r.add_route("*", "/{tail:.*}", self._h_unknown)

    @web.middleware
    async def _outer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.tick()
        if request.path.startswith("/_sandbox/"):
            response = await handler(request)
            self.tick()
            return response
        counted = request.path.startswith("/crm/")
        if counted:
            self.in_flight += 1
        try:
            response = await handler(request)
        finally:
            if counted:
                self.in_flight -= 1
        if response.status == 500 and isinstance(response, web.Response) and not response.body:
            return top_error(500, "INTERNAL_ERROR", "Internal Server Error")
        return response

    async def _h_unknown(self, request: web.Request) -> web.StreamResponse:
        return invalid_url()

    async def _h_other(self, request: web.Request) -> web.StreamResponse:
        module = request.match_info.get("module", "")
        if module in NON_MODULES or module == MODULE:
            return invalid_url()
        return invalid_module()

    # -- auth and limits ---------------------------------------------------------------------------
    async def _h_token(self, request: web.Request) -> web.StreamResponse:
        form = dict(request.query)
        form.update({k: str(v) for k, v in (await request.post()).items()})
        if (
            form.get("client_id") != self.options["client_id"]
            or form.get("client_secret") != self.options["client_secret"]
        ):
            return json_response({"error": "invalid_client"})
        if form.get("grant_type") != "refresh_token":
            return json_response({"error": "unsupported_grant_type"})
        refresh = form.get("refresh_token", "")
        if refresh != self.options["refresh_token"] or refresh in self.revoked:
            return json_response({"error": "invalid_code"})
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        scopes = self.options.get("scopes") or []
        if isinstance(scopes, str):
            scopes = scopes.replace(",", " ").split()
        self.tokens[token] = Token(self.now(), refresh, frozenset(str(s) for s in scopes))
        live = self.live_tokens.setdefault(refresh, deque())
        live.append(token)
        while len(live) > MAX_TOKENS_PER_REFRESH:
            self.tokens.pop(live.popleft(), None)
        return json_response(
            {
                "access_token": token,
                "api_domain": self._base(request),
                "token_type": "Bearer",
                "expires_in": int(self.options["token_ttl_seconds"]),
            }
        )

    async def _h_revoke(self, request: web.Request) -> web.StreamResponse:
        form = dict(request.query)
        form.update({k: str(v) for k, v in (await request.post()).items()})
        token = form.get("token", "")
        if token in self.tokens:
            del self.tokens[token]
        elif token:
            self.revoked.add(token)
            for access in self.live_tokens.pop(token, deque()):
                self.tokens.pop(access, None)
        return json_response({"status": "success"})

    async def _call(
        self, request: web.Request, scopes: tuple[str, ...], handler: ROUTE_HANDLER, *, write: bool = False
    ) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Zoho-oauthtoken" or not token.strip():
            return top_error(401, *AUTH_FAILURE)
        info = self.tokens.get(token.strip())
        ttl = float(self.options["token_ttl_seconds"])
        if (
            info is None
            or (self.now() - info.issued).total_seconds() >= ttl
            or info.refresh_token in self.revoked
            or info.refresh_token != self.options["refresh_token"]
        ):
            return top_error(401, *INVALID_TOKEN)
        if not info.scopes & set(scopes):
            return top_error(401, *SCOPE_MISMATCH)
        if write and self.options.get("read_only_user"):
            return top_error(
                403,
                "NO_PERMISSION",
                "permission denied",
                {"permissions": ["Crm_Implied_Edit_Appointments"]},
            )
        if self.options.get("rate_limits"):
            if self.in_flight > int(self.options["concurrency"]):
                return too_many("concurrency limit exceeded", 1)
            self.credits.limit = int(self.options["credits_per_day"])
            allowed, retry_after, _, _ = self.credits.hit()
            if not allowed:
                return too_many("API credits exhausted", retry_after)
        return await handler(request)

    # -- module routes -------------------------------------------------------------------------
    async def _h_module(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return await self._call(request, READ_SCOPES, partial(reads.list_records, self))
        if request.method == "POST":
            return await self._call(request, CREATE_SCOPES, self._create, write=True)
        if request.method == "PUT":
            return await self._call(request, UPDATE_SCOPES, self._update, write=True)
        return invalid_method()

    async def _h_one(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return await self._call(request, READ_SCOPES, partial(reads.get_one, self))
        if request.method == "PUT":
            return await self._call(request, UPDATE_SCOPES, self._update, write=True)
        if request.method == "DELETE":
            return await self._call(request, DELETE_SCOPES, self._delete_one, write=True)
        return invalid_method()

    async def _h_deleted(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return invalid_method()
        return await self._call(request, READ_SCOPES, partial(reads.list_deleted, self))

    async def _h_search(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return invalid_method()
        return await self._call(request, READ_SCOPES, partial(reads.search, self))

    async def _h_watch(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("POST", "PUT"):
            return await self._call(request, WATCH_WRITE_SCOPES, partial(watch.watch_post, self))
        if request.method == "GET":
            return await self._call(request, WATCH_READ_SCOPES, partial(watch.watch_get, self))
        if request.method == "DELETE":
            return await self._call(request, WATCH_DELETE_SCOPES, partial(watch.watch_delete, self))
        return invalid_method()

    async def _h_prefs(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return await self._call(request, PREFS_READ_SCOPES, partial(watch.prefs_get, self))
        if request.method == "PUT":
            return await self._call(request, PREFS_WRITE_SCOPES, partial(watch.prefs_put, self))
        return invalid_method()

    # -- writes --------------------------------------------------------------------------------------
    async def _write_body(self, request: web.Request, limit: int) -> tuple[list[Any], Any, bool] | web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return top_error(400, "INVALID_DATA", "the request body is not valid JSON", {})
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
            return top_error(400, "MANDATORY_NOT_FOUND", "required param not found", {"api_name": "data"})
        if len(body["data"]) > limit:
            return top_error(400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": limit})
        has_trigger = "trigger" in body
        trigger = body.get("trigger")
        if has_trigger and (
            not isinstance(trigger, list) or any(t not in ("workflow", "approval", "blueprint") for t in trigger)
        ):
            return top_error(400, "INVALID_DATA", "invalid data", {"api_name": "trigger"})
        return body["data"], trigger, has_trigger

    def _success(self, rec: Appt, message: str) -> dict[str, Any]:
        tz = self.tz
        return {
            "code": "SUCCESS",
            "details": {
                "Modified_Time": render_time(rec.modified, tz),
                "Modified_By": dict(rec.data["Modified_By"]),
                "Created_Time": render_time(rec.created, tz),
                "id": rec.id,
                "Created_By": dict(rec.data["Created_By"]),
            },
            "message": message,
            "status": "success",
        }

    @staticmethod
    def _answer(results: list[dict[str, Any]], ok_status: int) -> web.Response:
        errors = [r for r in results if r["status"] == "error"]
        if not errors:
            status = ok_status
        elif len(errors) < len(results):
            status = 202
        else:
            status = code_status(errors[0]["code"])
        return json_response({"data": results}, status)

    def _after_write(self, rec: Appt, operation: str, trigger: Any, has_trigger: bool) -> None:
        rec.last_trigger = trigger if has_trigger else None
        if not has_trigger or "workflow" in (trigger or []):
            rec.notifications.append(
                {"type": "workflow_email_alert", "operation": operation, "at": render_time(self.now(), self.tz)}
            )

    async def _create(self, request: web.Request) -> web.StreamResponse:
        parsed = await self._write_body(request, 100)
        if isinstance(parsed, web.Response):
            return parsed
        data, trigger, has_trigger = parsed
        results: list[dict[str, Any]] = []
        created: list[str] = []
        refs = self.refs
        for index, raw in enumerate(data):
            if not isinstance(raw, dict):
                results.append(record_error("INVALID_DATA", "data", index))
                continue
            outcome = check_create(refs, raw, index)
            if not isinstance(outcome, Plan):
                results.append(outcome)
                continue
            rec = self._insert(outcome.changes)
            self._after_write(rec, "insert", trigger, has_trigger)
            created.append(rec.id)
            results.append(self._success(rec, "record added"))
        self.notify("insert", created)
        return self._answer(results, 201)

    def _insert(self, changes: dict[str, Any]) -> Appt:
        now = second(self.now())
        rid = self._new_id()
        sid = str(changes["Service_Name"]["id"])
        duration = int(self.services[sid]["duration"])
        data: dict[str, Any] = {name: None for name in FIELDS}
        data.update(changes)
        start: datetime = changes["Appointment_Start_Time"]
        by = {"name": API_USER["name"], "id": API_USER["id"]}
        data.update(
            {
                "id": rid,
                "Appointment_End_Time": start + timedelta(minutes=duration),
                "Duration": duration,
                "Status": "Scheduled",
                "Reschedule_Count": 0,
                "Created_Time": now,
                "Modified_Time": now,
                "Created_By": dict(by),
                "Modified_By": dict(by),
            }
        )
        rec = Appt(data=data)
        self.records[rid] = rec
        self._schedule(rec)
        return rec

    async def _update(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info.get("id")
        parsed = await self._write_body(request, 1 if path_id else 100)
        if isinstance(parsed, web.Response):
            return parsed
        data, trigger, has_trigger = parsed
        partial_ids, partial_code = request.get("zoho_partial", (set(), ""))
        now = self.now()
        results: list[dict[str, Any]] = []
        changed: list[str] = []
        refs = self.refs
        for index, raw in enumerate(data):
            if not isinstance(raw, dict):
                results.append(record_error("INVALID_DATA", "data", index))
                continue
            rid = raw.get("id")
            if path_id is not None:
                if rid is not None and str(rid) != path_id:
                    results.append(record_error("INVALID_DATA", "id", index))
                    continue
                rid = path_id
            if rid is None or (isinstance(rid, str) and not rid.strip()):
                results.append(record_error("MANDATORY_NOT_FOUND", "id", index))
                continue
            rec = self._live(str(rid))
            if rec is None:
                results.append(record_error("INVALID_DATA", "id", index))
                continue
            if rec.id in partial_ids:
                results.append(record_error(partial_code, "id", index))
                continue
            outcome = check_update(
                refs,
                rec,
                raw,
                index,
                now=now,
                mark_as_complete=str(self.options.get("mark_as_complete")),
                job_sheet_mandatory=bool(self.options.get("job_sheet_mandatory")),
            )
            if not isinstance(outcome, Plan):
                results.append(outcome)
                continue
            if self._apply(rec, outcome):
                self._after_write(rec, "update", trigger, has_trigger)
                if rec.id not in changed:
                    changed.append(rec.id)
            else:
                rec.last_trigger = trigger if has_trigger else None
            results.append(self._success(rec, "record updated"))
        self.notify("update", changed)
        return self._answer(results, 200)

    def _apply(self, rec: Appt, plan: Plan) -> bool:
        """Apply a validated plan; False (and nothing bumped) when no stored value changes."""
        diff = {k: v for k, v in plan.changes.items() if rec.data.get(k) != v}
        if not diff:
            return False
        now = second(self.now())
        if plan.reschedule:
            rec.history.append(
                {
                    "id": zid(self.next_history_id),
                    "Rescheduled_From": rec.start,
                    "Rescheduled_To": plan.changes["Appointment_Start_Time"],
                    "Rescheduled_Time": now,
                    "Rescheduled_By": {"name": API_USER["name"], "id": API_USER["id"]},
                    "Reschedule_Reason": plan.changes["Reschedule_Reason"],
                    "Reschedule_Note": plan.changes["Reschedule_Note"],
                }
            )
            self.next_history_id += 1
        elif plan.history_edit and rec.history:
            rec.history[-1].update(plan.history_edit)
        rec.data.update(diff)
        self._bump(rec, API_USER)
        return True

    async def _delete_one(self, request: web.Request) -> web.StreamResponse:
        rec = self._live(request.match_info["id"])
        if rec is None:
            return json_response(
                {
                    "data": [
                        {
                            "code": "INVALID_DATA",
                            "details": {"api_name": "id"},
                            "message": "the related id given seems to be invalid",
                            "status": "error",
                        }
                    ]
                },
                400,
            )
        self._delete(rec, API_USER)
        self.notify("delete", [rec.id])
        return json_response(
            {"data": [{"code": "SUCCESS", "details": {"id": rec.id}, "message": "record deleted", "status": "success"}]}
        )


def create_sandbox(**options: Any) -> ZohoCrmSandbox:
    """A Zoho CRM sandbox with ``options`` over ``ZohoCrmSandbox.DEFAULT_OPTIONS``."""
    return ZohoCrmSandbox(**options)
