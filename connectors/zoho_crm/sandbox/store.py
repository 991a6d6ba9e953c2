"""Zoho CRM sandbox: the sandbox's state and control API (docs/vendors/zoho_crm.md), over the records of
:mod:`connectors.zoho_crm.sandbox.records`. Routes are in :mod:`connectors.zoho_crm.sandbox.app`, the
write checks in :mod:`connectors.zoho_crm.sandbox.rules`."""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from aiohttp import web

from connectors.zoho_crm.sandbox.records import Appt, Channel, Refs, Token
from connectors.zoho_crm.sandbox.wire import (
    ADMIN_USER,
    API,
    API_USER,
    CUSTOMER_MODULES,
    DATETIME_FIELDS,
    DEFAULT_SERVICE,
    FIELDS,
    LOCATIONS,
    MODULE,
    STATUSES,
    parse_loose_time,
    parse_offset,
    render_time,
    second,
    zid,
)
from syncd.sandboxkit.base import SandboxBase, WindowCounter

#: fields a seeded record cannot hold as null
SEED_NOT_NULL = frozenset(
    {
        "Appointment_Name",
        "Service_Name",
        "Owner",
        "Appointment_Start_Time",
        "Appointment_End_Time",
        "Duration",
        "Location",
        "Status",
        "Reschedule_Count",
        "Created_Time",
        "Modified_Time",
    }
)
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


class ZohoStore(SandboxBase):
    """Zoho CRM's records and the sandbox's own state."""

    vendor = "zoho_crm"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "timezone": "Asia/Kolkata",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "refresh_token": "sandbox-refresh",
        "token_ttl_seconds": 3600,
        "scopes": [
            "ZohoCRM.modules.appointments.ALL",
            "ZohoCRM.notifications.ALL",
            "ZohoCRM.settings.READ",
        ],
        "read_only_user": False,
        "mark_as_complete": "ask_user",
        "job_sheet_mandatory": False,
        "services": [dict(DEFAULT_SERVICE)],
        "display_offset": "+05:30",
        "credits_per_day": 5000,
        "concurrency": 5,
    }

    # -- state -----------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.records: dict[str, Appt] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.channels: dict[int, Channel] = {}
        self.users: dict[str, dict[str, Any]] = {
            u["id"]: {"id": u["id"], "full_name": u["name"], "email": u["email"]} for u in (ADMIN_USER, API_USER)
        }
        self.customers: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in CUSTOMER_MODULES}
        self.customers["Contacts"]["5545974000000412001"] = {
            "id": "5545974000000412001",
            "First_Name": "Ana",
            "Last_Name": "Ruiz",
            "Full_Name": "Ana Ruiz",
        }
        self.services: dict[str, dict[str, Any]] = {}
        self._load_services()
        self.tokens: dict[str, Token] = {}
        self.live_tokens: dict[str, deque[str]] = {}
        self.revoked: set[str] = set()
        self.page_tokens: dict[str, tuple[tuple[Any, ...], int, datetime]] = {}
        self.credits = WindowCounter(self.clock, int(self.options.get("credits_per_day", 5000)), 86400)
        self.in_flight = 0
        self.notify_drop_pending = 0
        self.next_id = 4_000_001
        self.next_history_id = 6_000_001
        self.next_due = FAR_FUTURE

    def _load_services(self) -> None:
        for svc in self.options.get("services") or []:
            sid = str(svc["id"])
            self.services[sid] = {
                "id": sid,
                "name": svc.get("name", ""),
                "duration": int(svc.get("duration", 30)),
                "locations": list(svc.get("locations") or LOCATIONS),
            }

    def on_options_changed(self, names: set[str]) -> None:
        if "services" in names:
            self._load_services()
        if names & {"mark_as_complete", "display_offset"}:
            self.next_due = datetime.min.replace(tzinfo=UTC)

    @property
    def tz(self) -> timezone:
        return parse_offset(str(self.options["display_offset"]))

    @property
    def refs(self) -> Refs:
        return Refs(self.customers, self.users, self.services)

    def _base(self, request: web.Request | None = None) -> str:
        if self.base_url:
            return self.base_url
        if request is not None:
            return f"{request.scheme}://{request.host}"
        return "http://127.0.0.1:8702"

    def _new_id(self) -> str:
        while True:
            rid = zid(self.next_id)
            self.next_id += 1
            if rid not in self.records:
                return rid

    def _live(self, rid: str) -> Appt | None:
        rec = self.records.get(rid)
        return rec if rec is not None and rec.deleted_at is None else None

    def _bump(self, rec: Appt, by: dict[str, Any]) -> None:
        now = second(self.now())
        prev = rec.data.get("Modified_Time")
        rec.data["Modified_Time"] = max(now, prev + timedelta(seconds=1)) if prev is not None else now
        rec.data["Modified_By"] = {"name": by["name"], "id": by["id"]}
        self._schedule(rec)

    def _due(self, rec: Appt) -> datetime:
        if rec.deleted_at is not None or rec.status not in ("Scheduled", "Overdue"):
            return FAR_FUTURE
        auto = self.options.get("mark_as_complete") == "auto"
        due = FAR_FUTURE
        if rec.status == "Scheduled":
            due = rec.start + timedelta(microseconds=1)
        if auto:
            due = min(due, rec.end)
        return due

    def _schedule(self, rec: Appt) -> None:
        self.next_due = min(self.next_due, self._due(rec))

    # -- clock rules (§10.12) --------------------------------------------------------------------
    def tick(self) -> None:
        """Scheduled → Overdue once now > start; with ``auto``, → Completed once now ≥ end."""
        now = self.now()
        if now < self.next_due:
            return
        auto = self.options.get("mark_as_complete") == "auto"
        changed: list[str] = []
        next_due = FAR_FUTURE
        for rec in self.records.values():
            if rec.deleted_at is not None or rec.status not in ("Scheduled", "Overdue"):
                continue
            new = rec.status
            if auto and now >= rec.end:
                new = "Completed"
            elif rec.status == "Scheduled" and now > rec.start:
                new = "Overdue"
            if new != rec.status:
                rec.data["Status"] = new
                self._bump(rec, ADMIN_USER)
                changed.append(rec.id)
            next_due = min(next_due, self._due(rec))
        self.next_due = next_due
        self.notify("update", changed)

    # -- notifications (§2 a) ------------------------------------------------------------------
    def notify(self, operation: str, ids: list[str]) -> None:
        if not ids:
            return
        now = self.now()
        uri = f"{self._base()}{API}/{MODULE}"
        for channel in list(self.channels.values()):
            if channel.expiry <= now or not channel.wants(operation):
                continue
            for i in range(0, len(ids), 100):
                if self.notify_drop_pending > 0:
                    self.notify_drop_pending -= 1
                    continue
                body = {
                    "server_time": int(now.timestamp() * 1000),
                    "query_params": {},
                    "module": MODULE,
                    "resource_uri": uri,
                    "ids": ids[i : i + 100],
                    "affected_fields": [],
                    "operation": operation,
                    "channel_id": channel.channel_id,
                    "token": channel.token,
                }
                try:
                    self.send_webhook(
                        json.dumps(body).encode(), {"Content-Type": "application/json"}, url=channel.notify_url
                    )
                except RuntimeError:  # no running loop (direct call outside the server)
                    return

    # -- control hooks -------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        tz = self.tz
        records = []
        for rec in self.records.values():
            row = rec.render(tz)
            row["_deleted_at"] = render_time(rec.deleted_at, tz)
            row["_notifications"] = [dict(n) for n in rec.notifications]
            row["_last_trigger"] = rec.last_trigger
            row["_rescheduled_history"] = rec.render_history(tz)
            records.append(row)
        out: dict[str, Any] = {
            "records": records,
            "users": [dict(u) for u in self.users.values()],
            "services": [dict(s) for s in self.services.values()],
            "watch": [c.render(f"{self._base()}{API}/{MODULE}") for c in self.channels.values()],
        }
        for module, rows in self.customers.items():
            out[module] = [dict(r) for r in rows.values()]
        return out

    def seed(self, body: dict[str, Any]) -> None:
        allowed = {"records", "users", "services", "delete", "watch", *CUSTOMER_MODULES}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")
        for row in body.get("users") or []:
            uid = str(row["id"])
            self.users[uid] = {
                "id": uid,
                "full_name": row.get("full_name") or row.get("name", ""),
                "email": row.get("email"),
            }
        for module in CUSTOMER_MODULES:
            for row in body.get(module) or []:
                self.customers[module][str(row["id"])] = {**row, "id": str(row["id"])}
        for row in body.get("services") or []:
            sid = str(row["id"])
            self.services[sid] = {
                "id": sid,
                "name": row.get("name", ""),
                "duration": int(row.get("duration", 30)),
                "locations": list(row.get("locations") or LOCATIONS),
            }
        inserted: list[str] = []
        updated: list[str] = []
        for raw in body.get("records") or []:
            if not isinstance(raw, dict):
                raise ValueError("records: each record must be an object")
            rid, is_new = self._seed_record(raw)
            (inserted if is_new else updated).append(rid)
        deleted: list[str] = []
        for rid in body.get("delete") or []:
            rec = self._live(str(rid))
            if rec is None:
                raise ValueError(f"delete: unknown or already deleted id {rid}")
            self._delete(rec, ADMIN_USER)
            deleted.append(rec.id)
        self.notify("insert", inserted)
        self.notify("update", updated)
        self.notify("delete", deleted)

    def _seed_value(self, key: str, value: Any) -> Any:
        if value is None:
            if key in SEED_NOT_NULL:
                raise ValueError(f"{key}: null is not allowed")
            return None
        if key in DATETIME_FIELDS:
            return second(parse_loose_time(value))
        if key == "Appointment_For":
            if not isinstance(value, dict) or "id" not in value:
                raise ValueError("Appointment_For: an object with module and id is required")
            module, cid = str(value.get("module") or "Contacts"), str(value["id"])
            return {"module": module, "name": value.get("name") or self.refs.customer_name(module, cid), "id": cid}
        if key in ("Owner", "Created_By", "Modified_By"):
            uid = str(value["id"]) if isinstance(value, dict) else str(value)
            owner = self.refs.owner(uid)
            if isinstance(value, dict):
                owner.update({k: v for k, v in value.items() if v is not None})
            return owner if key == "Owner" else {"name": owner["name"], "id": uid}
        if key == "Service_Name":
            sid = str(value["id"]) if isinstance(value, dict) else str(value)
            svc = self.refs.service(sid)
            if isinstance(value, dict) and value.get("name"):
                svc["name"] = value["name"]
            return svc
        if key in ("Duration", "Reschedule_Count"):
            return int(value)
        if key == "Status" and value not in STATUSES:
            raise ValueError(f"Status: one of {', '.join(STATUSES)}")
        if key == "Location" and value not in LOCATIONS:
            raise ValueError(f"Location: one of {', '.join(LOCATIONS)}")
        return value

    def _seed_record(self, raw: dict[str, Any]) -> tuple[str, bool]:
        rid = str(raw.get("id") or self._new_id())
        if not rid.isdigit():
            raise ValueError(f"id: Zoho ids are digit strings, got {rid!r}")
        unknown = sorted(k for k in raw if k not in FIELDS and not k.startswith("_"))
        if unknown:
            raise ValueError(f"record {rid}: unknown field(s) {', '.join(unknown)}")
        values = {k: self._seed_value(k, raw[k]) for k in FIELDS if k in raw and k != "id"}
        rec = self.records.get(rid)
        if rec is not None:
            for key in ("Created_Time", "Modified_Time"):
                values.pop(key, None)
            rec.data.update(values)
            if "Appointment_Start_Time" in values or "Duration" in values:
                if "Appointment_End_Time" not in values:
                    duration = int(rec.data.get("Duration") or 0)
                    rec.data["Appointment_End_Time"] = rec.start + timedelta(minutes=duration)
            if "_deleted_at" in raw and raw["_deleted_at"] is None and rec.deleted_at is not None:
                rec.deleted_at = None
                self.deleted.pop(rid, None)
            self._bump(rec, ADMIN_USER)
            if raw.get("_deleted_at") and rec.deleted_at is None:
                self._delete(rec, ADMIN_USER, when=second(parse_loose_time(raw["_deleted_at"])))
            return rid, False
        if values.get("Appointment_Start_Time") is None:
            raise ValueError(f"record {rid}: Appointment_Start_Time is required")
        now = second(self.now())
        service = values.get("Service_Name") or self.refs.service(str(DEFAULT_SERVICE["id"]))
        dur: Any = values.get("Duration")
        if dur is None:
            dur = self.services.get(str(service["id"]), {}).get("duration", 30)
        data: dict[str, Any] = {name: None for name in FIELDS}
        data.update(
            {
                "id": rid,
                "Appointment_Name": service.get("name") or "Appointment",
                "Service_Name": service,
                "Owner": self.refs.owner(ADMIN_USER["id"]),
                "Duration": int(dur),
                "Location": "Business Address",
                "Status": "Scheduled",
                "Reschedule_Count": 0,
                "Created_Time": now,
                "Modified_Time": now,
                "Created_By": {"name": ADMIN_USER["name"], "id": ADMIN_USER["id"]},
                "Modified_By": {"name": ADMIN_USER["name"], "id": ADMIN_USER["id"]},
            }
        )
        data.update(values)
        data["Service_Name"] = service
        if data.get("Appointment_End_Time") is None:
            data["Appointment_End_Time"] = data["Appointment_Start_Time"] + timedelta(minutes=int(data["Duration"]))
        if "Modified_Time" not in values and "Created_Time" in values:
            data["Modified_Time"] = data["Created_Time"]
        rec = Appt(data=data)
        self.records[rid] = rec
        if raw.get("_deleted_at"):
            self._delete(rec, ADMIN_USER, when=second(parse_loose_time(raw["_deleted_at"])))
        self._schedule(rec)
        return rid, True

    def _delete(self, rec: Appt, by: dict[str, Any], when: datetime | None = None) -> None:
        rec.deleted_at = when or second(self.now())
        rec.deleted_by = {"name": by["name"], "id": by["id"]}
        self.deleted[rec.id] = {
            "id": rec.id,
            "display_name": rec.data.get("Appointment_Name"),
            "type": "recycle",
            "deleted_by": dict(rec.deleted_by),
            "created_by": dict(rec.data.get("Created_By") or {}),
            "deleted_time": rec.deleted_at,
        }

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        rec = self._live(record_id)
        if rec is None:
            raise KeyError(record_id)
        values = {k: self._seed_value(k, v) for k, v in changes.items() if k in FIELDS and k != "id"}
        rec.data.update(values)
        if "Appointment_Start_Time" in values and "Appointment_End_Time" not in values:
            rec.data["Appointment_End_Time"] = rec.start + timedelta(minutes=int(rec.data.get("Duration") or 0))
        self._bump(rec, ADMIN_USER)
        self.notify("update", [rec.id])

