"""The Salesforce Health Cloud sandbox's org data: ServiceAppointments and reference records, their
rendering, the sandbox's state, control API and webhooks (docs/vendors/salesforce_health.md). The API's
rules are in :mod:`connectors.salesforce_health.sandbox.rules`, the routes in
:mod:`connectors.salesforce_health.sandbox.app`."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web

from connectors.salesforce_health.sandbox.soql import SA_FIELDS
from connectors.salesforce_health.sandbox.wire import (
    PREFIX,
    concurrent_exceeded,
    hashed_id,
    make_id,
    oauth_error,
    parse_iso,
    seconds,
    session_invalid,
    sf_datetime,
    sf_json,
    to_id18,
)
from syncd.sandboxkit import SandboxBase, WindowCounter
from syncd.sandboxkit.base import Handler
from syncd.sandboxkit.faults import FaultAction, fault_hook

__all__ = ["SalesforceStore"]

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
DATETIME_FIELDS = frozenset({"SchedStartTime", "SchedEndTime", "LastModifiedDate", "SystemModstamp"})
QUERY_PAGE = 2000
REF_TYPES = ("Account", "ServiceTerritory", "ServiceResource", "WorkType", "EngagementChannelType", "Asset")


def lower_status(status: str | None) -> str | None:
    return status.lower() if status is not None else None


class SalesforceStore(SandboxBase):
    """The org's records and the sandbox's own state."""

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

    @fault_hook("session_expired")
    async def _session_expired(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self._bearer(request)
        if token:
            self.revoked.add(token)
        return session_invalid()

    @fault_hook("refresh_invalid_grant")
    async def _refresh_refused(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return oauth_error("invalid_grant", "expired access/refresh token")

    @fault_hook("concurrent_limit")
    async def _too_concurrent(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        return concurrent_exceeded()

    @fault_hook("coverage_lag")
    async def _coverage_lag(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        request["sf_coverage_lag"] = float(action.get("minutes", 1))
        return await handler(request)

    @fault_hook("not_success")
    async def _not_success(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        errors = action.get("errors") or [
            {"errorCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record"}
        ]
        if CONNECT_PATH not in request.path:
            # a standard REST write refuses the same way with its usual error array
            items = [{"message": e.get("message", ""), "errorCode": e.get("errorCode", "")} for e in errors]
            return sf_json(items, status=400)
        request["sf_connect_fault"] = (None, list(errors))
        return await handler(request)

    @fault_hook("ehr_reject")
    async def _ehr_reject(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        errors = [{"errorCode": "SLOT_UNAVAILABLE", "message": "The slot is no longer available"}]
        request["sf_connect_fault"] = ("rejected", errors)
        return await handler(request)

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

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme == "Bearer" and token.strip() else None
