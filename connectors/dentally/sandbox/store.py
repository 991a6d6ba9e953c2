"""The Dentally sandbox's records: their vocabulary and time format, state, webhooks and control API.

Records are kept with ``datetime`` values internally and rendered in the vendor's JSON shape
(``render``); every change passes through ``emit``, which posts the signed webhook (generic scheme,
docs/vendors/dentally.md §2 (a)) with Dentally's retry and deactivation behaviour. In-surgery
appointments complete at practice-local midnight (``tick``). The vendor's API rules are in
:mod:`connectors.dentally.sandbox.rules`, the routes in :mod:`connectors.dentally.sandbox.app`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections import deque
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from syncd.sandboxkit.base import SandboxBase, WindowCounter, seed_list

__all__ = ["DentallyStore"]

STATES = ("Pending", "Confirmed", "Arrived", "In surgery", "Completed", "Cancelled", "Did not attend")
TERMINAL = frozenset({"Completed", "Cancelled", "Did not attend"})
STATE_AT: dict[str, str] = {
    "Pending": "pending_at",
    "Confirmed": "confirmed_at",
    "Arrived": "arrived_at",
    "In surgery": "in_surgery_at",
    "Completed": "completed_at",
    "Cancelled": "cancelled_at",
    "Did not attend": "did_not_attend_at",
}
TIME_FIELDS = ("start_time", "finish_time", *STATE_AT.values(), "created_at", "updated_at")
FIELD_ORDER = (
    "id", "uuid", "start_time", "finish_time", "duration", "patient_id", "practitioner_id", "site_id",
    "room_id", "reason", "state", "notes", "cancellation_reason_id", "cancellation_reason", "metadata",
    *STATE_AT.values(), "created_at", "updated_at",
)  # fmt: skip
CANCELLATION_REASONS: tuple[dict[str, Any], ...] = (
    {"id": 1, "reason": "Booked in error"},
    {"id": 2, "reason": "Cancelled by patient"},
    {"id": 3, "reason": "Cancelled by practice"},
    {"id": 4, "reason": "Other"},
)
SCOPES = "appointment patient:read user:read"
INVALID = "is invalid"
MS = timedelta(milliseconds=1)
UUID_NS = uuid.UUID("6f1c2a4e-0d3b-4b7a-9c55-3d2e1f0a9b87")


def fmt_time(dt: datetime | None) -> str | None:
    """UTC with milliseconds and ``Z``: ``2026-12-01T09:00:00.000Z``."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_ms(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


class BadValue(ValueError):
    """A request value that cannot be used; ``str()`` is the vendor's message."""


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 time that carries an offset (Dentally §4: a time without offset is refused)."""
    if not isinstance(value, str) or not value:
        raise BadValue(INVALID)
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadValue(INVALID) from exc
    if dt.tzinfo is None:
        raise BadValue("must include a UTC offset")
    return to_ms(dt)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DentallyStore(SandboxBase):
    """Dentally's records and the sandbox's own state (docs/vendors/dentally.md)."""

    vendor: ClassVar[str] = "dentally"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "timezone": "Europe/London",
        "access_token": "sandbox-token",
        "token_scopes": SCOPES,
        "token_idle_seconds": 14 * 86400,
        "revoked_tokens": [],
        "per_hour": 3600,
        "per_second": 10,
        "webhook_retry_base_seconds": 1.0,
        "webhook_retry_cap_seconds": 60.0,
        "webhook_max_failures": 50,
    }

    # -- state ------------------------------------------------------------------------------------
    def reset_state(self) -> None:
        for task in list(getattr(self, "_webhook_tasks", ())):
            task.cancel()
        self.appointments: dict[int, dict[str, Any]] = {}
        self.deleted_at: dict[int, datetime] = {}
        self.last_trigger: dict[int, str] = {}
        self.patients: dict[int, dict[str, Any]] = {}
        self.practitioners: dict[int, dict[str, Any]] = {}
        self.sites: dict[str, dict[str, Any]] = {}
        self.appointment_reasons: dict[int, dict[str, Any]] = {}
        self.cancellation_reasons: dict[int, dict[str, Any]] = {r["id"]: dict(r) for r in CANCELLATION_REASONS}
        self.next_id = 757579675
        self.token_last_used: dict[str, float] = {}
        self.dead_tokens: set[str] = set()
        self.hour_start: float | None = None
        self.hour_count = 0
        self.burst = WindowCounter(self.clock, int(self.options["per_second"]), 1.0)
        self.webhook_active = True
        self.webhook_failures = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.in_surgery: set[int] = set()
        self.generation = 0  # bumped by every change (``emit``); keys the list cache
        self.list_cache: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None

    def tz(self) -> ZoneInfo:
        return ZoneInfo(str(self.options["timezone"]))

    def render(self, rec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in FIELD_ORDER:
            value = rec.get(key)
            if key in TIME_FIELDS:
                value = fmt_time(value)
            elif key == "metadata":
                value = dict(value or {})
            out[key] = value
        return out

    def live(self, raw_id: str | int) -> dict[str, Any] | None:
        try:
            rid = int(raw_id)
        except (TypeError, ValueError):
            return None
        if rid in self.deleted_at:
            return None
        return self.appointments.get(rid)

    def bump(self, rec: dict[str, Any], when: datetime | None = None) -> None:
        """``updated_at`` strictly increasing per record (adds 1 ms when the clock has not moved)."""
        stamp = to_ms(when or self.now())
        prev = rec.get("updated_at")
        if prev is not None and stamp <= prev:
            stamp = prev + MS
        rec["updated_at"] = stamp

    def set_state(self, rec: dict[str, Any], state: str, when: datetime) -> None:
        rec["state"] = state
        rec[STATE_AT[state]] = to_ms(when)
        self.track(rec)

    def track(self, rec: dict[str, Any]) -> None:
        if rec["state"] == "In surgery":
            self.in_surgery.add(rec["id"])
        else:
            self.in_surgery.discard(rec["id"])

    def tick(self) -> None:
        """Automatic transitions: In surgery -> Completed once the practice-local day has ended."""
        now = self.now()
        tz = self.tz()
        for rid in sorted(self.in_surgery):
            rec = self.appointments[rid]
            if rec["state"] != "In surgery" or rid in self.deleted_at:
                continue
            since: datetime = rec.get("in_surgery_at") or rec["updated_at"]
            local_day = since.astimezone(tz).date() + timedelta(days=1)
            midnight = datetime.combine(local_day, time(0), tzinfo=tz).astimezone(UTC)
            if now >= midnight:
                self.set_state(rec, "Completed", midnight)
                self.bump(rec, midnight)
                self.last_trigger[rid] = "end_of_day"
                self.emit("appointment.updated", rec)

    # -- webhooks -----------------------------------------------------------------------------------
    def emit(self, event: str, rec: dict[str, Any]) -> None:
        """Post the §2 (a) payload, signed with the generic scheme, retried with backoff. Every change
        of a record passes through here."""
        self.generation += 1
        payload: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "event": event,
            "created_at": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"id": rec["id"], "uuid": rec["uuid"]},
        }
        self.events.append(payload)
        url = self.options.get("webhook_url")
        if not url or not self.webhook_active:
            return
        if self.take_fault_elsewhere("webhook_drop"):
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.in_background(self._deliver_event(str(url), body, payload["id"]))

    def sign(self, timestamp: int, body: bytes) -> str:
        secret = str(self.options["webhook_secret"]).encode()
        digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
        return f"v1={digest}"

    async def _deliver_event(self, url: str, body: bytes, event_id: str) -> None:
        delay = float(self.options["webhook_retry_base_seconds"])
        while self.webhook_active:
            stamp = int(self.clock.timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Dentally-Webhooks/1.0",
                "X-Syncd-Timestamp": str(stamp),
                "X-Syncd-Signature": self.sign(stamp, body),
            }
            status = await self.post_webhook(url, body, headers, event_id=event_id)
            if status is not None and 200 <= status < 300:
                self.webhook_failures = 0
                return
            self.webhook_failures += 1
            if self.webhook_failures >= int(self.options["webhook_max_failures"]):
                self.webhook_active = False
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, float(self.options["webhook_retry_cap_seconds"]))

    async def mutate(self, record_id: str, changes: dict[str, Any], trigger: str = "mutate") -> None:
        """Apply ``changes`` as another Dentally user (no API rules), bumping ``updated_at``."""
        rec = self.live(record_id)
        if rec is None:
            raise KeyError(record_id)
        if self.apply_raw(rec, changes):
            self.bump(rec)
            self.last_trigger[rec["id"]] = trigger
            self.emit("appointment.updated", rec)

    def apply_raw(self, rec: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Set vendor fields directly (seed, mutate); returns whether anything changed."""
        now = self.now()
        before = dict(rec)
        old_minutes = rec.get("duration")
        for key, value in changes.items():
            if key in ("id", "uuid", "updated_at") or key.startswith("_"):
                continue
            if key == "state":
                if value not in STATES:
                    raise ValueError(f"state: {value!r} is not one of {', '.join(STATES)}")
                if value != rec.get("state"):
                    self.set_state(rec, str(value), now)
            elif key in TIME_FIELDS:
                rec[key] = None if value is None else parse_instant(value)
            elif key == "metadata":
                rec[key] = dict(value or {})
            elif key in FIELD_ORDER:
                rec[key] = value
        if "start_time" in changes and "finish_time" not in changes and "duration" not in changes:
            rec["finish_time"] = rec["start_time"] + timedelta(minutes=int(old_minutes or 0))
        elif "duration" in changes and "finish_time" not in changes:
            rec["finish_time"] = rec["start_time"] + timedelta(minutes=int(changes["duration"]))
        rec["duration"] = int((rec["finish_time"] - rec["start_time"]).total_seconds() // 60)
        reason_id = rec.get("cancellation_reason_id")
        reason = self.cancellation_reasons.get(reason_id) if isinstance(reason_id, int) else None
        rec["cancellation_reason"] = reason["reason"] if reason else None
        return rec != before

    # -- control API ------------------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        self.tick()
        records = []
        for rid, rec in sorted(self.appointments.items()):
            out = self.render(rec)
            out["_deleted_at"] = fmt_time(self.deleted_at.get(rid))
            out["_notifications"] = []
            out["_last_trigger"] = self.last_trigger.get(rid)
            records.append(out)
        return {
            "records": records,
            "patients": list(self.patients.values()),
            "practitioners": list(self.practitioners.values()),
            "sites": list(self.sites.values()),
            "appointment_reasons": list(self.appointment_reasons.values()),
            "appointment_cancellation_reasons": list(self.cancellation_reasons.values()),
            "webhook_active": self.webhook_active,
        }

    def seed(self, body: dict[str, Any]) -> None:
        for key, store, id_type in (
            ("patients", self.patients, int),
            ("practitioners", self.practitioners, int),
            ("sites", self.sites, str),
            ("appointment_reasons", self.appointment_reasons, int),
            ("appointment_cancellation_reasons", self.cancellation_reasons, int),
        ):
            for item in body.get(key) or []:
                if not isinstance(item, dict) or "id" not in item:
                    raise ValueError(f"{key}: every entry needs an id")
                if id_type is int and not is_int(item["id"]):
                    raise ValueError(f"{key}: id must be an integer")
                store[item["id"]] = dict(item)
        if "webhook_active" in body:
            self.webhook_active = bool(body["webhook_active"])
            if self.webhook_active:
                self.webhook_failures = 0
        for raw in seed_list(body, "records"):
            self._seed_record(raw)
        for raw_id in seed_list(body, "delete"):
            rec = self.live(raw_id)
            if rec is None:
                raise KeyError(f"delete: no appointment {raw_id}")
            self.delete(rec, trigger="sandbox")

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records: every record must be an object")
        try:
            rid = int(raw["id"]) if raw.get("id") is not None else None
        except (TypeError, ValueError) as exc:
            raise ValueError("records: id must be an integer") from exc
        existing = self.appointments.get(rid) if rid is not None else None
        try:
            if existing is not None:
                self.apply_raw(existing, raw)
                self.bump(existing)
                rec = existing
                event = "appointment.updated"
            else:
                rec = self._new_record(raw, rid)
                event = "appointment.created"
        except BadValue as exc:
            raise ValueError(f"records: a time field {exc}") from exc
        deleted = raw.get("_deleted_at")
        if deleted:
            self.deleted_at[rec["id"]] = parse_instant(deleted)
        else:
            self.deleted_at.pop(rec["id"], None)
        self.last_trigger[rec["id"]] = "sandbox"
        self.emit(event, rec)

    def _new_record(self, raw: dict[str, Any], rid: int | None) -> dict[str, Any]:
        for required in ("start_time", "practitioner_id"):
            if raw.get(required) is None:
                raise ValueError(f"records: {required} is required")
        if raw.get("finish_time") is None and raw.get("duration") is None:
            raise ValueError("records: finish_time or duration is required")
        state = raw.get("state", "Pending")
        if state not in STATES:
            raise ValueError(f"records: state {state!r} is not one of {', '.join(STATES)}")
        if rid is None:
            rid = self.next_id
        self.next_id = max(self.next_id, rid + 1)
        now = to_ms(self.now())
        rec: dict[str, Any] = {key: None for key in FIELD_ORDER}
        rec.update(id=rid, uuid=str(raw.get("uuid") or uuid.uuid5(UUID_NS, str(rid))), notes="", metadata={})
        rec["start_time"] = parse_instant(raw["start_time"])
        rec["finish_time"] = rec["start_time"]
        raw_fields = {k: v for k, v in raw.items() if k not in ("state", "start_time")}
        if raw.get("finish_time") is None:
            raw_fields["duration"] = raw["duration"]
        raw_fields.setdefault("created_at", fmt_time(now))
        self.apply_raw(rec, raw_fields)
        if rec["finish_time"] <= rec["start_time"]:
            raise ValueError("records: finish_time must be after start_time")
        rec["state"] = state
        self.track(rec)
        if rec.get(STATE_AT[state]) is None:
            rec[STATE_AT[state]] = rec["created_at"]
        rec["updated_at"] = parse_instant(raw["updated_at"]) if raw.get("updated_at") else now
        self.appointments[rid] = rec
        return rec

    def delete(self, rec: dict[str, Any], trigger: str) -> None:
        self.deleted_at[rec["id"]] = to_ms(self.now())
        self.last_trigger[rec["id"]] = trigger
        self.emit("appointment.deleted", rec)
