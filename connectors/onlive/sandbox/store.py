"""The Onlive sandbox's records: their shape and time format, state, reference data and control API.

Soft deletion keeps a record with ``deletedAt``; calendars and services are the reference data the
§5 rules check against (docs/vendors/onlive.md). The API's rules are in
:mod:`connectors.onlive.sandbox.rules`, the routes in :mod:`connectors.onlive.sandbox.app`.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, ClassVar

from syncd.sandboxkit.base import SandboxBase, seed_list

__all__ = ["OnliveStore"]

DEFAULT_CALENDARS = ["c0a80121-7d2e-4f4b-9c1a-5e6f7a8b9c0d", "c0a80122-7d2e-4f4b-9c1a-5e6f7a8b9c0d"]
DEFAULT_SERVICE_ID = "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ORGANIZATION_ID = "9d2f0a4e-1b3c-4d5e-8f6a-7b8c9d0e1f2a"
SEED_NAMESPACE = uuid.UUID("6f1c2d3e-0a4b-4c5d-9e8f-7a6b5c4d3e2f")

STATUSES = ("pending", "confirmed", "cancelled", "completed", "no-show")
CLOSED = frozenset({"cancelled", "completed", "no-show"})
RECORD_KEYS = (
    "id", "deletedAt", "createdAt", "updatedAt", "title", "description", "lang", "startAt", "endAt", "event",
    "reminders", "extraFields", "guests", "calendarIds", "serviceId", "status", "subStatus", "origin",
    "originUrl", "comment", "interactionId", "externalId", "cancellationReason", "organizationId",
    "userGroupId",
)
TIME_KEYS = ("deletedAt", "createdAt", "updatedAt", "startAt", "endAt")

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)$"
)


# -- small helpers ---------------------------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 date-time with ``Z`` or an offset, as an aware UTC datetime; None if invalid."""
    if not isinstance(value, str):
        return None
    m = ISO_RE.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if zone == "Z":
        tz = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or "0")
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        when = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or "0"), micro, tzinfo=tz
        )
    except ValueError:
        return None
    return when.astimezone(UTC)


def fmt(when: datetime) -> str:
    """UTC with milliseconds: ``YYYY-MM-DDTHH:mm:ss.sssZ``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ms(when: datetime) -> datetime:
    return when.replace(microsecond=(when.microsecond // 1000) * 1000)


@lru_cache(maxsize=200_000)
def ts(stored: str) -> datetime:
    """Parse a stored (already normalised) time."""
    parsed = parse_time(stored)
    if parsed is None:
        raise ValueError(f"bad stored time {stored!r}")
    return parsed



def blank_record() -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(reminders=[], extraFields={}, guests=[], calendarIds=[], status="pending",
                  organizationId=ORGANIZATION_ID)
    return record


class OnliveStore(SandboxBase):
    """Onlive's records and the sandbox's own state (docs/vendors/onlive.md)."""

    vendor: ClassVar[str] = "onlive"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "access_keys": {"OLAK7Q2N4X9EXAMPLE": "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"},
        "per_minute": 120,
        "timezone": "Europe/Madrid",
        "calendars": list(DEFAULT_CALENDARS),
        "services": [
            {"id": DEFAULT_SERVICE_ID, "name": "Video consultation", "duration": 30,
             "calendarIds": list(DEFAULT_CALENDARS)},
        ],
    }

    records: dict[str, dict[str, Any]]
    notifications: dict[str, int]
    calendars: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    windows: dict[str, tuple[float, int]]

    # -- state hooks -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.records = {}
        self.notifications = {}
        self.windows = {}
        self.calendars = {}
        self.services = {}
        self._load_reference()

    def _load_reference(self) -> None:
        for cal in self.options.get("calendars") or []:
            self._put_calendar(cal)
        for svc in self.options.get("services") or []:
            self._put_service(svc)

    def _put_calendar(self, cal: Any) -> None:
        entry = {"id": cal} if isinstance(cal, str) else dict(cal)
        cid = entry.get("id")
        if not isinstance(cid, str) or not UUID_RE.match(cid):
            raise ValueError(f"calendars: id must be a UUID, got {cid!r}")
        entry["id"] = cid.lower()
        self.calendars[cid.lower()] = {**self.calendars.get(cid.lower(), {}), **entry}

    def _put_service(self, svc: Any) -> None:
        if not isinstance(svc, dict):
            raise ValueError("services: each entry must be an object")
        sid = svc.get("id")
        if not isinstance(sid, str) or not UUID_RE.match(sid):
            raise ValueError(f"services: id must be a UUID, got {sid!r}")
        duration = svc.get("duration")
        if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
            raise ValueError(f"services[{sid}].duration: positive integer (minutes) required")
        cals = svc.get("calendarIds", [])
        if not isinstance(cals, list) or not all(isinstance(c, str) for c in cals):
            raise ValueError(f"services[{sid}].calendarIds: list of calendar ids required")
        self.services[sid.lower()] = {**svc, "id": sid.lower(), "calendarIds": [c.lower() for c in cals]}

    def on_options_changed(self, names: set[str]) -> None:
        if "per_minute" in names or "rate_limits" in names:
            self.windows.clear()
        if "calendars" in names or "services" in names:
            self._load_reference()

    def dump(self) -> dict[str, Any]:
        rows = sorted(self.records.values(), key=lambda r: (r["createdAt"], r["id"]))
        return {
            "records": [
                {
                    **copy.deepcopy(r),
                    "_deleted_at": r["deletedAt"],
                    "_notifications": self.notifications.get(r["id"], 0),
                }
                for r in rows
            ],
            "calendars": [copy.deepcopy(c) for c in self.calendars.values()],
            "services": [copy.deepcopy(s) for s in self.services.values()],
        }

    def seed(self, body: dict[str, Any]) -> None:
        for cal in body.get("calendars") or []:
            self._put_calendar(cal)
        for svc in body.get("services") or []:
            self._put_service(svc)
        for raw in seed_list(body, "records"):
            self._seed_record(raw)
        for rid in seed_list(body, "delete"):
            key = str(rid).lower()
            if key not in self.records:
                raise ValueError(f"delete: unknown appointment {rid}")
            record = self.records[key]
            if record["deletedAt"] is None:
                self._bump(record)
                record["deletedAt"] = record["updatedAt"]

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records: each record must be an object")
        rid = str(raw.get("id") or uuid.uuid4()).lower()
        if not UUID_RE.match(rid):
            raise ValueError(f"records: id {rid!r} is not a UUID")
        existing = self.records.get(rid)
        record = copy.deepcopy(existing) if existing else blank_record()
        for key, value in raw.items():
            if key in ("_deleted_at", "_notifications"):
                continue
            if key.startswith("_"):
                continue
            if key not in RECORD_KEYS:
                raise ValueError(f"records[{rid}]: unknown field {key}")
            record[key] = copy.deepcopy(value)
        record["id"] = rid
        if "_deleted_at" in raw:
            record["deletedAt"] = raw["_deleted_at"]
        for key in TIME_KEYS:
            if record[key] is not None:
                parsed = parse_time(record[key])
                if parsed is None:
                    raise ValueError(f"records[{rid}].{key}: ISO 8601 with offset required")
                record[key] = fmt(parsed)
        if record["startAt"] is None or record["endAt"] is None:
            raise ValueError(f"records[{rid}]: startAt and endAt are required")
        if record["status"] not in STATUSES:
            raise ValueError(f"records[{rid}].status: one of {', '.join(STATUSES)}")
        if not isinstance(record["guests"], list) or not isinstance(record["calendarIds"], list):
            raise ValueError(f"records[{rid}]: guests and calendarIds must be lists")
        record["calendarIds"] = [str(c).lower() for c in record["calendarIds"]]
        now = fmt(self.now())
        if existing is None:
            record["createdAt"] = record["createdAt"] or now
            record["updatedAt"] = record["updatedAt"] or record["createdAt"]
        else:
            record["updatedAt"] = existing["updatedAt"]
            self._bump(record)
        if "_notifications" in raw:
            self.notifications[rid] = int(raw["_notifications"])
        else:
            self.notifications.setdefault(rid, 0)
        self.records[rid] = record

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        record = self.records[record_id.lower()]
        for key, value in changes.items():
            if key not in RECORD_KEYS or key in ("id", "createdAt", "updatedAt"):
                continue
            if key in TIME_KEYS and value is not None:
                parsed = parse_time(value)
                value = fmt(parsed) if parsed else value
            record[key] = copy.deepcopy(value)
        self._bump(record)

    def _bump(self, record: dict[str, Any]) -> None:
        """Strictly increasing ``updatedAt``: the clock, or 1 ms after the previous value."""
        now = ms(self.now())
        prev = ts(record["updatedAt"]) if record.get("updatedAt") else None
        if prev is not None and now <= prev:
            now = prev + timedelta(milliseconds=1)
        record["updatedAt"] = fmt(now)

    def _notify(self, record: dict[str, Any]) -> None:
        self.notifications[record["id"]] = self.notifications.get(record["id"], 0) + 1
