"""The stateful fake Salesforce Health Cloud org (docs/vendors/salesforce_health.md §1-§10).

Standard REST (`sobjects`, `composite`, `query`, replication feeds) for reads and small PATCHes; the
Intelligent Appointment Management Connect resource for create, update (seed) and cancel; OAuth
refresh-token grant on `/services/oauth2/token`. Every time comes from the sandbox clock.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from connectors.salesforce_health.sandbox import soql
from connectors.salesforce_health.sandbox.soql import SA_FIELDS
from connectors.salesforce_health.sandbox.util import (
    PREFIX,
    ConnectFailure,
    SfError,
    concurrent_exceeded,
    days,
    hashed_id,
    make_id,
    minute,
    not_found,
    oauth_error,
    parse_http_date,
    parse_iso,
    seconds,
    session_invalid,
    sf_datetime,
    sf_json,
    to_id18,
    total_requests_exceeded,
    valid_zone,
)
from syncd.sandboxkit import SandboxBase, WindowCounter
from syncd.sandboxkit.base import Handler

API_VERSIONS = ("v65.0", "v66.0")
ORG_ID = "00Dxx0000001gPLEAY"
USER_ID = "005xx000001SvogAAC"
CONNECT_PATH = "/connect/health/appointment-management/appointment"

#: Status label -> StatusCategory API value (§5)
STATUS_CATEGORY: dict[str, str] = {
    "None": "None",
    "Scheduled": "Scheduled",
    "Dispatched": "Dispatched",
    "In Progress": "InProgress",
    "Completed": "Completed",
    "Cannot Complete": "CannotComplete",
    "Canceled": "Canceled",
}
#: §5 state table: allowed sObject PATCH Status targets
TRANSITIONS: dict[str, frozenset[str]] = {
    "None": frozenset({"Scheduled", "Canceled"}),
    "Scheduled": frozenset({"None", "Dispatched", "In Progress", "Completed", "Cannot Complete", "Canceled"}),
    "Dispatched": frozenset({"Scheduled", "In Progress", "Completed", "Cannot Complete", "Canceled"}),
    "In Progress": frozenset({"Completed", "Cannot Complete"}),
    "Completed": frozenset(),
    "Cannot Complete": frozenset(),
    "Canceled": frozenset(),
}
PUT_ALLOWED = frozenset({"None", "Scheduled", "Dispatched"})
CANCEL_ALLOWED = frozenset({"None", "Scheduled", "Dispatched"})
PATCHABLE = ("Status", "Comments", "Description", "CancellationReason", "Syncd_Id__c")
DATETIME_FIELDS = frozenset({"SchedStartTime", "SchedEndTime", "LastModifiedDate", "SystemModstamp"})
REF_TYPES = ("Account", "ServiceTerritory", "ServiceResource", "WorkType", "EngagementChannelType", "Asset")
#: Connect participant type -> sObject type it must name
PARTICIPANT_TYPES = {
    "Patient": "Account",
    "Facility": "ServiceTerritory",
    "Practitioner": "ServiceResource",
    "Device": "Asset",
}
CONNECT_STR = ("id", "workTypeId", "channelId", "startDate", "endDate", "timeZone", "comment", "sourceSystem")
CONNECT_STR_LISTS = ("appointmentTypes", "serviceCategories", "serviceTypes", "specialties")
CONNECT_KEYS = frozenset((*CONNECT_STR, *CONNECT_STR_LISTS, "participants", "slots"))
CANCEL_KEYS = frozenset({"id", "status", "cancellationReason", "comment"})
QUERY_PAGE = 2000
MAX_COMPOSITE_IDS = 200


def _lower_status(status: str | None) -> str | None:
    return status.lower() if status is not None else None


class SalesforceHealthSandbox(SandboxBase):
    vendor: ClassVar[str] = "salesforce_health"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "refresh_token": "sandbox-refresh",
        "token_ttl_seconds": 7200,
        "rotate_refresh_tokens": False,
        "daily_limit": 100000,
        "long_request_seconds": 20,
        "concurrent_long_limit": 25,
        "timezone": "UTC",
    }

    # -- state --------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.appts: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, tuple[datetime, str]] = {}  # access token -> (issued, refresh token)
        self.revoked: set[str] = set()
        self.refresh_token: str | None = str(self.options["refresh_token"])
        self.dead_refresh: set[str] = set()
        self.daily = WindowCounter(self.clock, int(self.options["daily_limit"]), 86400.0)
        self.inflight: dict[int, float] = {}
        self.cursors: dict[str, list[dict[str, Any]]] = {}
        self.syncd_index: dict[str, str] = {}
        self.reset_at = self.now()
        self._seq = 0
        self._number = 0

    def on_options_changed(self, names: set[str]) -> None:
        if "daily_limit" in names:
            self.daily.limit = int(self.options["daily_limit"])
        if "refresh_token" in names:
            self.refresh_token = str(self.options["refresh_token"])

    def _next_id(self, prefix: str) -> str:
        while True:
            self._seq += 1
            new = make_id(prefix, "Sb", self._seq)
            if new not in self.appts and new not in self.refs:
                return new

    def _next_number(self) -> str:
        self._number += 1
        return f"SA-{self._number:04d}"

    def _stamp(self) -> datetime:
        return seconds(self.now())

    def _touch(self, rec: dict[str, Any]) -> None:
        stamp = self._stamp()
        rec["LastModifiedDate"] = stamp
        rec["SystemModstamp"] = stamp

    def _live(self, raw_id: str) -> dict[str, Any] | None:
        rid = to_id18(raw_id)
        rec = self.appts.get(rid) if rid else None
        if rec is None or rec["_deleted_at"] is not None:
            return None
        return rec

    def _new_appt(self, rid: str) -> dict[str, Any]:
        stamp = self._stamp()
        return {
            "Id": rid,
            "AppointmentNumber": self._next_number(),
            "Status": "Scheduled",
            "StatusCategory": "Scheduled",
            "SchedStartTime": None,
            "SchedEndTime": None,
            "ParentRecordId": None,
            "WorkTypeId": None,
            "ServiceTerritoryId": None,
            "EngagementChannelTypeId": None,
            "Description": None,
            "Comments": None,
            "CancellationReason": None,
            "LastModifiedDate": stamp,
            "SystemModstamp": stamp,
            "Syncd_Id__c": None,
            "_assigned": [],
            "_ehr": {},
            "_deleted_at": None,
        }

    # -- rendering ----------------------------------------------------------------------------
    @staticmethod
    def _sa_attributes(rid: str, version: str) -> dict[str, str]:
        return {"type": "ServiceAppointment", "url": f"/services/data/{version}/sobjects/ServiceAppointment/{rid}"}

    def _render(self, rec: dict[str, Any], version: str, fields: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": self._sa_attributes(rec["Id"], version)}
        names = fields if fields is not None else list(SA_FIELDS)
        if "Id" not in names:
            names = ["Id", *names]
        for name in names:
            value = rec.get(name)
            out[name] = sf_datetime(value) if name in DATETIME_FIELDS else value
        return out

    def _assigned_rows(self, rec: dict[str, Any], version: str) -> list[dict[str, Any]]:
        rows = []
        for sr in rec["_assigned"]:
            ar_id = hashed_id(PREFIX["AssignedResource"], rec["Id"], sr)
            rows.append(
                {
                    "attributes": {
                        "type": "AssignedResource",
                        "url": f"/services/data/{version}/sobjects/AssignedResource/{ar_id}",
                    },
                    "Id": ar_id,
                    "ServiceAppointmentId": rec["Id"],
                    "ServiceResourceId": sr,
                }
            )
        return rows

    def dump(self) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for rec in self.appts.values():
            item = self._render(rec, API_VERSIONS[0])
            item["_deleted_at"] = sf_datetime(rec["_deleted_at"])
            item["_notifications"] = []
            item["_assigned_resources"] = list(rec["_assigned"])
            item["_ehr"] = copy.deepcopy(rec["_ehr"])
            records.append(item)
            if rec["_deleted_at"] is None:
                rows.extend(self._assigned_rows(rec, API_VERSIONS[0]))
        # reference data under its own keys, by sObject type (docs/vendors/README.md "Sandbox control API")
        out: dict[str, Any] = {"records": records, "AssignedResource": rows}
        for ref in self.refs.values():
            out.setdefault(str(ref.get("attributes", {}).get("type")), []).append(copy.deepcopy(ref))
        return out

    # -- seeding / mutation -------------------------------------------------------------------
    def seed(self, body: dict[str, Any]) -> None:
        records = body.get("records", [])
        deletes = body.get("delete", [])
        if not isinstance(records, list) or not isinstance(deletes, list):
            raise ValueError("records and delete must be lists")
        extra_keys = [k for k in body if k not in ("records", "delete")]
        for key in extra_keys:  # reference data under its own keys, as GET /_sandbox/records shows it
            if key not in REF_TYPES and key != "AssignedResource":
                raise ValueError(f"{key}: unknown key (expected records, delete or a reference type)")
            if not isinstance(body[key], list):
                raise ValueError(f"{key} must be a list")
            records = [*records, *body[key]]
        for item in records:
            if not isinstance(item, dict) or not isinstance(item.get("attributes"), dict):
                raise ValueError("each record needs an object 'attributes' with a 'type'")
        by_type = {"ref": [], "sa": [], "ar": []}  # type: dict[str, list[dict[str, Any]]]
        for item in records:
            rtype = item["attributes"].get("type")
            if rtype in REF_TYPES:
                by_type["ref"].append(item)
            elif rtype == "ServiceAppointment":
                by_type["sa"].append(item)
            elif rtype == "AssignedResource":
                by_type["ar"].append(item)
            else:
                raise ValueError(f"attributes.type: unsupported type {rtype!r}")
        changed: list[str] = []
        for item in by_type["ref"]:
            self._seed_ref(item)
        for item in by_type["sa"]:
            changed.append(self._seed_appt(item))
        for item in by_type["ar"]:
            sa_id = to_id18(str(item.get("ServiceAppointmentId", "")))
            sr_id = to_id18(str(item.get("ServiceResourceId", "")))
            if sa_id is None or sr_id is None or sa_id not in self.appts:
                raise ValueError("AssignedResource: ServiceAppointmentId must name a seeded appointment")
            rec = self.appts[sa_id]
            if sr_id not in rec["_assigned"]:
                rec["_assigned"].append(sr_id)
                self._touch(rec)
                changed.append(sa_id)
        for raw in deletes:
            rid = to_id18(str(raw))
            if rid in self.appts:
                if self.appts[rid]["_deleted_at"] is None:
                    self.appts[rid]["_deleted_at"] = self._stamp()
            elif rid in self.refs:
                del self.refs[rid]
            else:
                raise ValueError(f"delete: unknown id {raw!r}")
        self._notify(list(dict.fromkeys(changed)))

    def _seed_ref(self, item: dict[str, Any]) -> None:
        rtype = item["attributes"]["type"]
        raw = item.get("Id")
        rid = to_id18(str(raw)) if raw else self._next_id(PREFIX[rtype])
        if rid is None:
            raise ValueError(f"{rtype}: Id {raw!r} is not a 15- or 18-character id")
        if rid in self.appts:
            raise ValueError(f"{rtype}: Id {rid} is already a ServiceAppointment")
        ref = self.refs.get(rid, {})
        if ref and ref["attributes"]["type"] != rtype:
            raise ValueError(f"{rtype}: Id {rid} is already a {ref['attributes']['type']}")
        merged = {**ref, **copy.deepcopy(item)}
        merged["attributes"] = {"type": rtype, "url": f"/services/data/{API_VERSIONS[0]}/sobjects/{rtype}/{rid}"}
        merged["Id"] = rid
        for flag in ("external", "channel_required"):
            if flag in merged and not isinstance(merged[flag], bool):
                raise ValueError(f"{rtype}.{flag} must be a boolean")
        self.refs[rid] = merged

    def _seed_appt(self, item: dict[str, Any]) -> str:
        raw = item.get("Id")
        rid = to_id18(str(raw)) if raw else self._next_id(PREFIX["ServiceAppointment"])
        if rid is None:
            raise ValueError(f"ServiceAppointment: Id {raw!r} is not a 15- or 18-character id")
        if rid in self.refs:
            raise ValueError(f"ServiceAppointment: Id {rid} is already a reference record")
        existing = rid in self.appts
        rec = self.appts[rid] if existing else self._new_appt(rid)
        work = copy.deepcopy(rec)
        self._apply_fields(work, item)
        if existing or not ({"SystemModstamp", "LastModifiedDate"} & set(item)):
            self._touch(work)
        elif "SystemModstamp" not in item:
            work["SystemModstamp"] = work["LastModifiedDate"]
        elif "LastModifiedDate" not in item:
            work["LastModifiedDate"] = work["SystemModstamp"]
        self._check_unique(work)
        self._commit(work)
        return rid

    def _holder(self, value: str) -> str | None:
        """The live record holding ``Syncd_Id__c == value`` (unique index, case-sensitive)."""
        rid = self.syncd_index.get(value)
        rec = self.appts.get(rid) if rid else None
        if rec is not None and rec["_deleted_at"] is None and rec["Syncd_Id__c"] == value:
            return str(rec["Id"])
        return None

    def _check_unique(self, rec: dict[str, Any]) -> None:
        value = rec.get("Syncd_Id__c")
        if value is None:
            return
        holder = self._holder(value)
        if holder is not None and holder != rec["Id"] and rec["_deleted_at"] is None:
            raise ValueError(f"Syncd_Id__c {value!r} is already used by {holder}")

    def _commit(self, rec: dict[str, Any]) -> None:
        self.appts[rec["Id"]] = rec
        if rec["Syncd_Id__c"] is not None and rec["_deleted_at"] is None:
            self.syncd_index[rec["Syncd_Id__c"]] = rec["Id"]

    def _apply_fields(self, rec: dict[str, Any], changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key in ("attributes", "Id", "_notifications"):
                continue
            if key == "_assigned_resources":
                if not isinstance(value, list):
                    raise ValueError("_assigned_resources must be a list of ServiceResource ids")
                ids = [to_id18(str(v)) for v in value]
                if any(v is None for v in ids):
                    raise ValueError("_assigned_resources: not an id")
                rec["_assigned"] = [v for v in ids if v is not None]
            elif key == "_ehr":
                if not isinstance(value, dict):
                    raise ValueError("_ehr must be an object")
                rec["_ehr"] = copy.deepcopy(value)
            elif key == "_deleted_at":
                rec["_deleted_at"] = seconds(parse_iso(str(value))) if value is not None else None
            elif key in DATETIME_FIELDS:
                rec[key] = seconds(parse_iso(str(value))) if value is not None else None
            elif key == "Status":
                if value not in STATUS_CATEGORY:
                    raise ValueError(f"Status: unknown value {value!r}; one of {', '.join(STATUS_CATEGORY)}")
                rec["Status"] = value
                if "StatusCategory" not in changes:
                    rec["StatusCategory"] = STATUS_CATEGORY[value]
            elif key == "StatusCategory":
                if value not in STATUS_CATEGORY.values():
                    raise ValueError(f"StatusCategory: unknown value {value!r}")
                rec["StatusCategory"] = value
            elif key in SA_FIELDS:
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{key} must be a string or null")
                if value is not None and key.endswith("Id") and key != "Id":
                    normal = to_id18(value)
                    if normal is None:
                        raise ValueError(f"{key}: {value!r} is not an id")
                    value = normal
                rec[key] = value
            else:
                raise ValueError(f"ServiceAppointment: unknown field {key!r}")

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        rid = to_id18(record_id)
        if rid is None or rid not in self.appts:
            raise KeyError(record_id)
        rec = copy.deepcopy(self.appts[rid])
        self._apply_fields(rec, changes)
        self._touch(rec)
        self._check_unique(rec)
        self._commit(rec)
        self._notify([rid])

    # -- webhooks (§2 (a), generic scheme, at most once) -----------------------------------------
    def _notify(self, ids: list[str]) -> None:
        if not ids or not self.options.get("webhook_url"):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # seeded directly from synchronous code: nobody is listening yet
            return
        secret = str(self.options["webhook_secret"]).encode()
        for start in range(0, len(ids), 200):
            body = json.dumps({"ids": ids[start : start + 200]}, separators=(",", ":")).encode()
            timestamp = str(int(self.clock.timestamp()))
            digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Syncd-Timestamp": timestamp,
                "X-Syncd-Signature": f"v1={digest}",
            }
            self.send_webhook(body, headers)

    # -- limits, auth, faults -----------------------------------------------------------------
    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return concurrent_exceeded()

    def custom_fault_types(self) -> frozenset[str]:
        return frozenset(
            {
                "session_expired",
                "refresh_invalid_grant",
                "not_success",
                "ehr_reject",
                "concurrent_limit",
                "coverage_lag",
            }
        )

    async def custom_fault(
        self, action: dict[str, Any], request: web.Request, handler: Handler
    ) -> web.StreamResponse | None:
        ftype = action.get("type")
        if ftype == "session_expired":
            token = self._bearer(request)
            if token:
                self.revoked.add(token)
            return session_invalid()
        if ftype == "refresh_invalid_grant":
            return oauth_error("invalid_grant", "expired access/refresh token")
        if ftype == "concurrent_limit":
            return concurrent_exceeded()
        if ftype == "coverage_lag":
            request["sf_coverage_lag"] = float(action.get("minutes", 1))
            return await handler(request)
        if ftype == "not_success":
            errors = action.get("errors") or [
                {"errorCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record"}
            ]
            if CONNECT_PATH not in request.path:
                # a standard REST write refuses the same way with its usual error array
                items = [{"message": e.get("message", ""), "errorCode": e.get("errorCode", "")} for e in errors]
                return sf_json(items, status=400)
            request["sf_connect_fault"] = (None, list(errors))
            return await handler(request)
        if ftype == "ehr_reject":
            errors = [{"errorCode": "SLOT_UNAVAILABLE", "message": "The slot is no longer available"}]
            request["sf_connect_fault"] = ("rejected", errors)
            return await handler(request)
        return None

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme == "Bearer" and token.strip() else None

    def _authenticate(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None or not header.strip():
            return session_invalid()
        token = self._bearer(request)
        if token is None:
            return sf_json([{"message": "INVALID_HEADER_TYPE", "errorCode": "INVALID_AUTH_HEADER"}], 401)
        entry = self.tokens.get(token)
        if entry is None or token in self.revoked:
            return session_invalid()
        age = (self.now() - entry[0]).total_seconds()
        if age >= float(self.options["token_ttl_seconds"]):
            return session_invalid()
        return None

    def _limit_header(self, resp: web.StreamResponse) -> None:
        remaining, _ = self.daily.peek()
        limit = self.daily.limit
        if not resp.prepared:
            resp.headers["Sforce-Limit-Info"] = f"api-usage={limit - remaining}/{limit}"

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

    # -- replication feeds (§2 (b)) -----------------------------------------------------------
    def _earliest_available(self, now: datetime) -> datetime:
        floor = minute(now - days(15))
        # the last reset, with one minute of grace so that a poller started within the reset's
        # minute (cursor = pass start truncated to the minute - 1 minute) is not refused
        reset = minute(self.reset_at) - timedelta(minutes=1)
        if reset <= now:
            floor = max(floor, reset)
        return floor

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

    # -- reads (§3) ---------------------------------------------------------------------------
    @staticmethod
    def _fields(raw: str) -> list[str]:
        by_lower = {name.lower(): name for name in SA_FIELDS}
        out: list[str] = []
        for part in raw.split(","):
            name = part.strip()
            canonical = by_lower.get(name.lower())
            if canonical is None:
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type ServiceAppointment",
                )
            if canonical not in out:
                out.append(canonical)
        return out

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

    @staticmethod
    def _query_match(rec: dict[str, Any], conds: dict[str, Any]) -> bool:
        start = rec["SchedStartTime"]
        if "start_ge" in conds:
            return start is not None and conds["start_ge"] <= start < conds["start_lt"]
        return (
            rec["ParentRecordId"] is not None
            and rec["ParentRecordId"] == to_id18(str(conds["parent_eq"]))
            and start is not None
            and start == conds["start_eq"]
            and rec["Syncd_Id__c"] is None
        )

    def _render_query(self, rec: dict[str, Any], version: str, fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": self._sa_attributes(rec["Id"], version)}
        for name in fields:
            value = rec.get(name)
            out[name] = sf_datetime(value) if name in DATETIME_FIELDS else value
        return out

    def _page(self, rows: list[dict[str, Any]], offset: int, locator: str | None, version: str) -> dict[str, Any]:
        page = rows[offset : offset + QUERY_PAGE]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + QUERY_PAGE >= len(rows), "records": page}
        if not body["done"]:
            if locator is None:
                self._seq += 1
                locator = make_id("01g", "Sq", self._seq)
                self.cursors[locator] = rows
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{offset + QUERY_PAGE}"
        return body

    async def _h_query_more(self, request: web.Request) -> web.StreamResponse:
        locator, _, raw_offset = request.match_info["locator"].rpartition("-")
        rows = self.cursors.get(locator)
        if rows is None or not raw_offset.isdigit() or int(raw_offset) > len(rows):
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return sf_json(self._page(rows, int(raw_offset), locator, self._version(request)))

    # -- sObject PATCH / DELETE (§4, §5, §7) --------------------------------------------------
    async def _json(self, request: web.Request) -> Any:
        if "Content-Type" in request.headers and request.content_type != "application/json":
            raise SfError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content-Type header specified in HTTP request is not supported: {request.content_type}",
            )
        raw = await request.read()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SfError(400, "JSON_PARSER_ERROR", f"Unexpected character in the request body: {exc}") from exc

    def _existing(self, raw_id: str) -> dict[str, Any]:
        rid = to_id18(raw_id)
        rec = self.appts.get(rid) if rid else None
        if rec is None:
            raise not_found()
        if rec["_deleted_at"] is not None:
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return rec

    async def _h_patch(self, request: web.Request) -> web.StreamResponse:
        rec = self._existing(request.match_info["id"])
        body = await self._json(request)
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "Can not deserialize SObject out of a non-object token")
        by_lower = {name.lower(): name for name in PATCHABLE}
        changes: dict[str, Any] = {}
        for key, value in body.items():
            name = by_lower.get(key.lower())
            if name is None:
                raise SfError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {key}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.",
                    [key],
                )
            if value is not None and not isinstance(value, str):
                raise SfError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of string from {key}")
            changes[name] = value
        header = request.headers.get("If-Unmodified-Since")
        if header is not None:
            since = parse_http_date(header)
            if since is not None and rec["LastModifiedDate"] > since:
                raise SfError(
                    412,
                    "PRECONDITION_FAILED",
                    "The requested resource has been modified since the date in the If-Unmodified-Since header",
                )
        work = copy.deepcopy(rec)
        if "Status" in changes:
            target = changes["Status"]
            if target not in STATUS_CATEGORY:
                raise SfError(
                    400,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"Status: bad value for restricted picklist field: {target}",
                    ["Status"],
                )
            if target != rec["Status"]:
                if target not in TRANSITIONS[rec["Status"]]:
                    raise SfError(
                        400,
                        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                        f"You can't change the status from {rec['Status']} to {target}.",
                        ["Status"],
                    )
                work["Status"] = target
                work["StatusCategory"] = STATUS_CATEGORY[target]
        for name in ("Comments", "Description"):
            if name in changes:
                work[name] = changes[name]
        if "CancellationReason" in changes:
            reason = changes["CancellationReason"]
            if reason is not None and len(reason) > 255:
                raise SfError(
                    400, "STRING_TOO_LONG", "Cancellation Reason: data value too large", ["CancellationReason"]
                )
            work["CancellationReason"] = reason
        if "Syncd_Id__c" in changes:
            value = changes["Syncd_Id__c"]
            if value != rec["Syncd_Id__c"]:
                if rec["Syncd_Id__c"] is not None:
                    raise SfError(
                        400,
                        "FIELD_INTEGRITY_EXCEPTION",
                        "Syncd_Id__c can be set only once",
                        ["Syncd_Id__c"],
                    )
                if value is not None and len(value) > 64:
                    raise SfError(400, "STRING_TOO_LONG", "Syncd Id: data value too large", ["Syncd_Id__c"])
                holder = self._holder(value) if value is not None else None
                if holder is not None:
                    raise SfError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: Syncd_Id__c duplicates value on record with id: {holder}",
                        ["Syncd_Id__c"],
                    )
                work["Syncd_Id__c"] = value
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
        status = status_override or (_lower_status(rec["Status"]) if rec is not None else None)
        return self._output(rec["Id"] if rec is not None else None, False, status, errors)

    def _check_keys(self, body: Any, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        for key in body:
            if key not in allowed:
                raise SfError(400, "JSON_PARSER_ERROR", f'Unrecognized field "{key}"')
        return body

    def _schedule(self, body: dict[str, Any], rid: str | None) -> dict[str, Any]:
        """Validate a create/update body (seed rules, §10 items 4-5); the values to store."""
        for key in CONNECT_STR:
            if body.get(key) is not None and not isinstance(body[key], str):
                raise SfError(400, "JSON_PARSER_ERROR", f"{key}: a string is expected")
        for key in CONNECT_STR_LISTS:
            value = body.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise SfError(400, "JSON_PARSER_ERROR", f"{key}: an array of strings is expected")
        participants = body.get("participants")
        if participants is not None and (
            not isinstance(participants, list)
            or not all(
                isinstance(p, dict)
                and isinstance(p.get("reference"), str)
                and set(p) <= {"reference", "isReferenceRequired"}
                and isinstance(p.get("isReferenceRequired", False), bool)
                for p in participants
            )
        ):
            raise SfError(400, "JSON_PARSER_ERROR", "participants: objects with a string 'reference' expected")
        slots = body.get("slots")
        if slots is not None and (
            not isinstance(slots, list)
            or not all(
                isinstance(s, dict) and set(s) <= {"id", "reference"} and all(isinstance(v, str) for v in s.values())
                for s in slots
            )
        ):
            raise SfError(400, "JSON_PARSER_ERROR", "slots: objects with string 'id' and 'reference' expected")
        zone = body.get("timeZone")
        if zone is not None and not valid_zone(zone):
            raise SfError(400, "INVALID_INPUT", f"timeZone: {zone} is not a valid IANA time zone")
        for key in ("startDate", "endDate"):
            if not body.get(key):
                raise ConnectFailure("MISSING_REQUIRED_FIELD", f"{key} is required")
        times: dict[str, datetime] = {}
        for key in ("startDate", "endDate"):
            try:
                times[key] = seconds(parse_iso(body[key], zone))
            except ValueError as exc:
                raise SfError(400, "INVALID_INPUT", f"{key}: invalid date/time {body[key]!r}") from exc
        if not participants:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "participants is required")
        by_type: dict[str, list[str]] = {name: [] for name in PARTICIPANT_TYPES}
        for p in participants:
            kind, _, raw_ref = p["reference"].partition("/")
            ref_id = to_id18(raw_ref)
            if kind not in PARTICIPANT_TYPES or ref_id is None:
                raise ConnectFailure("INVALID_REFERENCE", f"Invalid participant reference: {p['reference']}")
            if ref_id not in by_type[kind]:
                by_type[kind].append(ref_id)
        for kind in ("Patient", "Facility"):
            if not by_type[kind]:
                raise ConnectFailure("MISSING_REQUIRED_FIELD", f"A {kind} participant is required")
            if len(by_type[kind]) > 1:
                raise ConnectFailure("INVALID_REFERENCE", f"Only one {kind} participant is allowed")
        if not by_type["Practitioner"] and not by_type["Device"]:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "A Practitioner or Device participant is required")
        work_type = body.get("workTypeId")
        others = [key for key in ("appointmentTypes", "serviceTypes", "serviceCategories") if body.get(key)]
        if not work_type and not others:
            raise ConnectFailure(
                "MISSING_REQUIRED_FIELD",
                "One of workTypeId, appointmentTypes, serviceTypes or serviceCategories is required",
            )
        if not work_type and others and not body.get("sourceSystem"):
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "sourceSystem is required when workTypeId is not provided")
        for kind, ids in by_type.items():
            for ref_id in ids:
                self._resolve(ref_id, PARTICIPANT_TYPES[kind], kind)
        work_type_id = self._resolve(work_type, "WorkType", "workTypeId") if work_type else None
        channel = body.get("channelId")
        channel_id = self._resolve(channel, "EngagementChannelType", "channelId") if channel else None
        if work_type_id and self.refs[work_type_id].get("channel_required") and not channel_id:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "channelId is required for this visit type")
        external = [pid for pid in by_type["Practitioner"] if self.refs[pid].get("external")]
        if external and not slots:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "slots is required for an external resource")
        for slot in slots or []:
            if to_id18(slot.get("reference", "")) not in by_type["Practitioner"]:
                raise ConnectFailure(
                    "INVALID_REFERENCE",
                    f"slots reference {slot.get('reference')!r} must match a Practitioner participant",
                )
        if times["endDate"] <= times["startDate"]:
            raise ConnectFailure("INVALID_TIME_RANGE", "endDate must be after startDate")
        ehr = {
            key: copy.deepcopy(body[key])
            for key in (
                "sourceSystem",
                "appointmentTypes",
                "serviceTypes",
                "serviceCategories",
                "specialties",
                "slots",
            )
            if body.get(key) is not None
        }
        if by_type["Device"]:
            ehr["devices"] = by_type["Device"]
        return {
            "SchedStartTime": times["startDate"],
            "SchedEndTime": times["endDate"],
            "ParentRecordId": by_type["Patient"][0],
            "ServiceTerritoryId": by_type["Facility"][0],
            "WorkTypeId": work_type_id,
            "EngagementChannelTypeId": channel_id,
            "Comments": body.get("comment"),
            "_assigned": by_type["Practitioner"],
            "_ehr": ehr,
        }

    def _resolve(self, raw: str, sobject: str, what: str) -> str:
        ref_id = to_id18(raw)
        ref = self.refs.get(ref_id) if ref_id else None
        if ref_id is None or ref is None or ref["attributes"]["type"] != sobject:
            raise ConnectFailure("INVALID_REFERENCE", f"{what} {raw} doesn't reference a valid {sobject}")
        return ref_id

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
        return self._output(rid, True, _lower_status(rec["Status"]), [], http=201)

    async def _h_update(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["id"]
        rec = self._live(path_id)
        if rec is None:
            raise not_found()
        faulted = self._connect_fault(request, rec)
        if faulted is not None:
            return faulted
        body = self._check_keys(await self._json(request), CONNECT_KEYS)
        status = _lower_status(rec["Status"])
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
        status = _lower_status(rec["Status"])

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


__all__ = ["SalesforceHealthSandbox", "create_sandbox"]
