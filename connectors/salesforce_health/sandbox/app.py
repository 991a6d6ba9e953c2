"""The stateful fake Salesforce Health Cloud org (docs/vendors/salesforce_health.md §1-§10).

Standard REST (`sobjects`, `composite`, `query`, replication feeds) for reads and small PATCHes; the
Intelligent Appointment Management Connect resource for create, update (seed) and cancel; OAuth
refresh-token grant on `/services/oauth2/token`. Every time comes from the sandbox clock.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

import connectors.salesforce_health.sandbox.soql as soql
from connectors.salesforce_health.sandbox.rules import (
    CANCEL_ALLOWED,
    CANCEL_KEYS,
    CONNECT_KEYS,
    MAX_COMPOSITE_IDS,
    PUT_ALLOWED,
    SalesforceRules,
    check_unmodified_since,
    patch_fields,
)
from connectors.salesforce_health.sandbox.store import (
    API_VERSIONS,
    CONNECT_PATH,
    ORG_ID,
    STATUS_CATEGORY,
    USER_ID,
    lower_status,
)
from connectors.salesforce_health.sandbox.wire import (
    PREFIX,
    ConnectFailure,
    SfError,
    concurrent_exceeded,
    days,
    minute,
    not_found,
    oauth_error,
    parse_iso,
    sf_datetime,
    sf_json,
    to_id18,
    total_requests_exceeded,
)
from syncd.sandboxkit import SandboxBase
from syncd.sandboxkit.base import Handler

__all__ = ["SalesforceHealthSandbox", "create_sandbox"]


class SalesforceHealthSandbox(SalesforceRules):
    """The routes (``add_routes``) over the rules and the store."""

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/services/data"):
            return await SandboxBase._middleware(self, request, handler)
        if self.options["rate_limits"]:
            now = self.clock.timestamp()
            long_after = float(self.options["long_request_seconds"])
            running_long = sum(1 for began in self.inflight.values() if now - began >= long_after)
            if running_long >= int(self.options["concurrent_long_limit"]):
                refused = concurrent_exceeded()
                self._limit_header(refused)
                return refused
        key = id(request)
        self.inflight[key] = self.clock.timestamp()
        try:
            resp = await SandboxBase._middleware(self, request, handler)
        finally:
            self.inflight.pop(key, None)
        self._limit_header(resp)
        return resp

    def _api(self, fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            refused = self._authenticate(request)
            if refused is not None:
                return refused
            allowed, _, _, _ = self.daily.hit()
            if not allowed and self.options["rate_limits"]:
                return total_requests_exceeded()
            try:
                return await fn(request)
            except SfError as exc:
                return exc.response()

        return handler

    # -- routes -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/services/oauth2/token", self._h_token)
        r.add_post("/services/oauth2/revoke", self._h_revoke)
        for v in API_VERSIONS:
            base = f"/services/data/{v}"
            sa = f"{base}/sobjects/ServiceAppointment"
            for feed in ("updated", "deleted"):
                r.add_get(f"{sa}/{feed}/", self._api(self._h_feed))
                r.add_get(f"{sa}/{feed}", self._api(self._h_feed))
            r.add_get(f"{sa}/{{id}}", self._api(self._h_get_one))
            r.add_patch(f"{sa}/{{id}}", self._api(self._h_patch))
            r.add_delete(f"{sa}/{{id}}", self._api(self._h_delete))
            r.add_get(f"{base}/composite/sobjects/ServiceAppointment", self._api(self._h_composite))
            r.add_get(f"{base}/query", self._api(self._h_query))
            r.add_get(f"{base}/query/", self._api(self._h_query))
            r.add_get(f"{base}/query/{{locator}}", self._api(self._h_query_more))
            r.add_post(f"{base}{CONNECT_PATH}", self._api(self._h_create))
            r.add_put(f"{base}{CONNECT_PATH}/{{id}}", self._api(self._h_update))
            r.add_patch(f"{base}{CONNECT_PATH}/{{id}}", self._api(self._h_cancel))
        r.add_route("*", "/services/data/{tail:.*}", self._api(self._h_not_found))

    async def _h_not_found(self, request: web.Request) -> web.StreamResponse:
        raise not_found()

    @staticmethod
    def _version(request: web.Request) -> str:
        return request.path.split("/")[3]

    # -- OAuth --------------------------------------------------------------------------------
    async def _form(self, request: web.Request) -> dict[str, str]:
        if request.content_type != "application/x-www-form-urlencoded":
            return {}
        form = await request.post()
        return {k: str(v) for k, v in form.items()}

    async def _h_token(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        if form.get("grant_type") != "refresh_token":
            return oauth_error("unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != self.options["client_id"]:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if form.get("client_secret") != self.options["client_secret"]:
            return oauth_error("invalid_client", "invalid client credentials")
        presented = form.get("refresh_token")
        if not presented or presented != self.refresh_token:
            return oauth_error("invalid_grant", "expired access/refresh token")
        now = self.now()
        token = f"{ORG_ID[:15]}!AQ8AQ{secrets.token_urlsafe(40)}"
        self.tokens[token] = (now, presented)
        issued_at = str(int(now.timestamp() * 1000))
        identity = f"https://login.salesforce.com/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(
            hmac.new(
                str(self.options["client_secret"]).encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        instance = self.base_url or f"{request.scheme}://{request.host}"
        answer: dict[str, Any] = {
            "access_token": token,
            "instance_url": instance,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
            "scope": "api refresh_token",
        }
        if self.options["rotate_refresh_tokens"]:
            new_refresh = f"5Aep861{secrets.token_urlsafe(48)}"
            self.dead_refresh.add(presented)
            self.refresh_token = new_refresh
            answer["refresh_token"] = new_refresh
        return sf_json(answer)

    async def _h_revoke(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        token = form.get("token") or request.query.get("token") or ""
        if token in self.tokens:
            self.revoked.add(token)
        elif token and token == self.refresh_token:
            self.refresh_token = None
            self.dead_refresh.add(token)
            for access, (_, source) in self.tokens.items():
                if source == token:
                    self.revoked.add(access)
        else:
            return oauth_error("unsupported_token_type", "this token type is not supported")
        return web.Response(status=200)

    async def _h_feed(self, request: web.Request) -> web.StreamResponse:
        deleted = "/deleted" in request.path
        bounds: dict[str, datetime] = {}
        for name in ("start", "end"):
            raw = request.query.get(name)
            if raw is None:
                raise SfError(400, "MISSING_ARGUMENT", f"{name} parameter is required")
            try:
                bounds[name] = minute(parse_iso(raw))
            except ValueError as exc:
                raise SfError(400, "INVALID_REPLICATION_DATE", f"{name}: invalid date/time {raw!r}") from exc
        start, end = bounds["start"], bounds["end"]
        now = self.now()
        if start >= end:
            raise SfError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
        if start < minute(now) - days(30):
            raise SfError(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
        earliest = self._earliest_available(now)
        if deleted and start < earliest:
            raise SfError(
                400, "INVALID_REPLICATION_DATE", "startDate is before the earliest date available for deleted records"
            )
        lag = request.get("sf_coverage_lag")
        cap = minute(now - timedelta(minutes=float(lag))) if lag is not None else minute(now)
        latest = min(end, cap)
        if deleted:
            items = [
                {"id": rec["Id"], "deletedDate": sf_datetime(rec["_deleted_at"])}
                for rec in self.appts.values()
                if rec["_deleted_at"] is not None and start <= rec["_deleted_at"] < latest
            ]
            if len(items) > 600000:
                raise SfError(400, "EXCEEDED_ID_LIMIT", "too many ids: narrow the time range")
            return sf_json(
                {
                    "deletedRecords": items,
                    "earliestDateAvailable": sf_datetime(earliest),
                    "latestDateCovered": sf_datetime(latest),
                }
            )
        ids = [
            rec["Id"]
            for rec in self.appts.values()
            if rec["_deleted_at"] is None and start <= rec["SystemModstamp"] < latest
        ]
        if len(ids) > 600000:
            raise SfError(400, "EXCEEDED_ID_LIMIT", "too many ids: narrow the time range")
        return sf_json({"ids": ids, "latestDateCovered": sf_datetime(latest)})

    async def _h_get_one(self, request: web.Request) -> web.StreamResponse:
        raw_fields = request.query.get("fields")
        fields = self._fields(raw_fields) if raw_fields is not None else None
        rec = self._live(request.match_info["id"])
        if rec is None:
            raise not_found()
        return sf_json(self._render(rec, self._version(request), fields))

    async def _h_composite(self, request: web.Request) -> web.StreamResponse:
        raw_ids = request.query.get("ids")
        raw_fields = request.query.get("fields")
        if not raw_ids:
            raise SfError(400, "MISSING_ARGUMENT", "ids parameter is required")
        if not raw_fields:
            raise SfError(400, "MISSING_ARGUMENT", "fields parameter is required")
        ids = [part.strip() for part in raw_ids.split(",")]
        if len(ids) > MAX_COMPOSITE_IDS:
            raise SfError(400, "LIMIT_EXCEEDED", f"Maximum number of ids is {MAX_COMPOSITE_IDS}")
        fields = self._fields(raw_fields)
        out: list[dict[str, Any] | None] = []
        for raw in ids:
            if to_id18(raw) is None:
                raise SfError(400, "MALFORMED_ID", f"invalid id: {raw}")
            rec = self._live(raw)
            out.append(self._render(rec, self._version(request), fields) if rec is not None else None)
        return sf_json(out)

    async def _h_query(self, request: web.Request) -> web.StreamResponse:
        q = request.query.get("q")
        if q is None:
            raise SfError(400, "MALFORMED_QUERY", "q parameter is required")
        parsed = soql.parse(q)
        version = self._version(request)
        rows: list[dict[str, Any]] = []
        if parsed.obj == "AssignedResource":
            for raw in parsed.conds["sa_in"]:
                rec = self._live(raw)
                if rec is None:
                    continue
                for row in self._assigned_rows(rec, version):
                    rows.append({"attributes": row["attributes"], **{f: row[f] for f in parsed.fields}})
        elif "syncd_eq" in parsed.conds:
            holder = self._holder(parsed.conds["syncd_eq"])
            if holder is not None:
                rows.append(self._render_query(self.appts[holder], version, parsed.fields))
        else:
            for rec in sorted(self.appts.values(), key=lambda r: str(r["Id"])):
                if rec["_deleted_at"] is None and self._query_match(rec, parsed.conds):
                    rows.append(self._render_query(rec, version, parsed.fields))
        return sf_json(self._page(rows, 0, None, version))

    async def _h_query_more(self, request: web.Request) -> web.StreamResponse:
        locator, _, raw_offset = request.match_info["locator"].rpartition("-")
        rows = self.cursors.get(locator)
        if rows is None or not raw_offset.isdigit() or int(raw_offset) > len(rows):
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return sf_json(self._page(rows, int(raw_offset), locator, self._version(request)))

    # -- sObject PATCH / DELETE (§4, §5, §7) --------------------------------------------------
    async def _h_patch(self, request: web.Request) -> web.StreamResponse:
        rec = self._existing(request.match_info["id"])
        changes = patch_fields(await self._json(request))
        check_unmodified_since(rec, request.headers.get("If-Unmodified-Since"))
        work = self._patched(rec, changes)
        if work != rec:
            self._touch(work)
            self._commit(work)
            self._notify([rec["Id"]])
        return web.Response(status=204)

    async def _h_delete(self, request: web.Request) -> web.StreamResponse:
        rec = self._existing(request.match_info["id"])
        rec["_deleted_at"] = self._stamp()
        return web.Response(status=204)

    # -- Connect API (§4, seed) ---------------------------------------------------------------
    @staticmethod
    def _output(rid: str | None, ok: bool, status: str | None, errors: list[Any], http: int = 200) -> web.Response:
        return sf_json({"id": rid, "isSuccess": ok, "status": status, "error": errors}, status=http)

    def _connect_fault(self, request: web.Request, rec: dict[str, Any] | None) -> web.Response | None:
        fault = request.get("sf_connect_fault")
        if fault is None:
            return None
        status_override, errors = fault
        status = status_override or (lower_status(rec["Status"]) if rec is not None else None)
        return self._output(rec["Id"] if rec is not None else None, False, status, errors)

    async def _h_create(self, request: web.Request) -> web.StreamResponse:
        faulted = self._connect_fault(request, None)
        if faulted is not None:
            return faulted
        body = self._check_keys(await self._json(request), CONNECT_KEYS)
        try:
            values = self._schedule(body, None)
        except ConnectFailure as exc:
            return self._output(None, False, None, [{"errorCode": exc.code, "message": exc.message}])
        rid = self._next_id(PREFIX["ServiceAppointment"])
        rec = self._new_appt(rid)
        rec.update(values)
        self._commit(rec)
        self._notify([rid])
        return self._output(rid, True, lower_status(rec["Status"]), [], http=201)

    async def _h_update(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["id"]
        rec = self._live(path_id)
        if rec is None:
            raise not_found()
        faulted = self._connect_fault(request, rec)
        if faulted is not None:
            return faulted
        body = self._check_keys(await self._json(request), CONNECT_KEYS)
        status = lower_status(rec["Status"])
        if not body.get("id"):
            return self._output(
                rec["Id"], False, status, [{"errorCode": "MISSING_REQUIRED_FIELD", "message": "id is required"}]
            )
        if not isinstance(body["id"], str) or to_id18(body["id"]) != rec["Id"]:
            raise SfError(400, "INVALID_INPUT", "The id in the request body doesn't match the id in the URL")
        if rec["Status"] not in PUT_ALLOWED:
            return self._output(
                rec["Id"],
                False,
                status,
                [
                    {
                        "errorCode": "INVALID_STATE",
                        "message": f"An appointment with status {rec['Status']} can't be updated.",
                    }
                ],
            )
        try:
            values = self._schedule(body, rec["Id"])
        except ConnectFailure as exc:
            return self._output(rec["Id"], False, status, [{"errorCode": exc.code, "message": exc.message}])
        work = copy.deepcopy(rec)
        work.update(values)
        if work != rec:
            self._touch(work)
            self._commit(work)
            self._notify([rec["Id"]])
        return self._output(rec["Id"], True, status, [])

    async def _h_cancel(self, request: web.Request) -> web.StreamResponse:
        rec = self._live(request.match_info["id"])
        if rec is None:
            raise not_found()
        faulted = self._connect_fault(request, rec)
        if faulted is not None:
            return faulted
        body = self._check_keys(await self._json(request), CANCEL_KEYS)
        for key in CANCEL_KEYS:
            if body.get(key) is not None and not isinstance(body[key], str):
                raise SfError(400, "JSON_PARSER_ERROR", f"{key}: a string is expected")
        status = lower_status(rec["Status"])

        def failure(code: str, message: str) -> web.Response:
            return self._output(rec["Id"], False, status, [{"errorCode": code, "message": message}])

        if not body.get("id"):
            return failure("MISSING_REQUIRED_FIELD", "id is required")
        if to_id18(body["id"]) != rec["Id"]:
            raise SfError(400, "INVALID_INPUT", "The id in the request body doesn't match the id in the URL")
        target = body.get("status")
        if not target:
            return failure("MISSING_REQUIRED_FIELD", "status is required")
        if STATUS_CATEGORY.get(target.title() if target.lower() == "canceled" else target) != "Canceled":
            return failure("INVALID_STATUS", f"{target} isn't a status of the Canceled category")
        if rec["Status"] == "Canceled":
            return self._output(rec["Id"], True, status, [])
        if rec["Status"] not in CANCEL_ALLOWED:
            return failure("INVALID_STATE", f"An appointment with status {rec['Status']} can't be updated.")
        work = copy.deepcopy(rec)
        work["Status"] = "Canceled"
        work["StatusCategory"] = "Canceled"
        work["CancellationReason"] = body.get("cancellationReason")
        if body.get("comment") is not None:
            work["Comments"] = body["comment"]
        self._touch(work)
        self._commit(work)
        self._notify([rec["Id"]])
        return self._output(rec["Id"], True, "canceled", [])


def create_sandbox(**options: Any) -> SalesforceHealthSandbox:
    return SalesforceHealthSandbox(**options)
