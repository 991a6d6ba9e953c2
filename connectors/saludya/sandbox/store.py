"""The SaludYa sandbox's records: their fields and time format, state and control API.

Records keep the clinic's wall clock (``date``, ``time``) in the sandbox's zone (docs/vendors/saludya.md
§4). The API's rules are in :mod:`connectors.saludya.sandbox.rules`, the routes in
:mod:`connectors.saludya.sandbox.app`.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.sandboxkit.base import SandboxBase

__all__ = ["SaludYaStore"]

log = logging.getLogger(__name__)

STATUSES = ("scheduled", "confirmed", "in_progress", "completed", "cancelled", "no_show")
TERMINAL = frozenset({"completed", "cancelled", "no_show"})
RECORD_FIELDS = (
    "id", "patient_id", "patient_name", "patient_email", "patient_phone", "doctor_id", "doctor_name",
    "specialty", "date", "time", "duration_minutes", "status", "reason", "notes", "diagnosis",
    "prescription", "follow_up_required", "follow_up_date", "created_at", "updated_at", "completed_at",
    "cancelled_at", "cancellation_reason",
)  # fmt: skip
#: the spec's list fields (fault ``list_missing_fields``)
LIST_FIELDS = (
    "id", "patient_id", "patient_name", "doctor_id", "doctor_name", "specialty", "date", "time",
    "duration_minutes", "status", "reason",
)  # fmt: skip
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_z(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {value!r} must carry an offset")
    return dt.astimezone(UTC).replace(microsecond=0)


def valid_date(value: Any) -> bool:
    if not isinstance(value, str) or not DATE_RE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def valid_time(value: Any) -> bool:
    return isinstance(value, str) and bool(TIME_RE.match(value))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def local_start(rec: Mapping[str, Any]) -> datetime:
    """The record's naive local start (clinic wall clock)."""
    return datetime.fromisoformat(f"{rec['date']}T{rec['time']}")


def new_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(10))

class SaludYaStore(SandboxBase):
    """SaludYa's records and the sandbox's own state (docs/vendors/saludya.md)."""

    vendor: ClassVar[str] = "saludya"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "api_keys": {"sandbox-key": "*"},
        "per_15min": 100,
        "per_hour": 300,
        "per_day": 1000,
        "timezone": "America/Bogota",
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._check_timezone()

    # -- state -------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.deleted_at: dict[str, datetime] = {}
        self.notifications: Counter[str] = Counter()
        self.patients: dict[str, dict[str, Any]] = {}
        self.doctors: dict[str, dict[str, Any]] = {}
        #: key -> window seconds -> (window start epoch, requests counted)
        self.quota: dict[str, dict[int, tuple[int, int]]] = {}

    def _check_timezone(self) -> None:
        try:
            ZoneInfo(str(self.options["timezone"]))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown IANA zone {self.options['timezone']!r}") from exc

    def _live(self, appointment_id: str) -> dict[str, Any] | None:
        if appointment_id in self.deleted_at:
            return None
        return self.records.get(appointment_id)

    def _bump(self, rec: dict[str, Any]) -> datetime:
        """Strictly increasing whole-second ``updated_at`` (docs/vendors/saludya.md §8)."""
        now = self.now().replace(microsecond=0)
        prev = parse_iso_z(rec["updated_at"]) if rec.get("updated_at") else None
        if prev is not None and now <= prev:
            now = prev + timedelta(seconds=1)
        rec["updated_at"] = iso_z(now)
        return now

    def render(self, rec: Mapping[str, Any], fields: Iterable[str] = RECORD_FIELDS) -> dict[str, Any]:
        patient = self.patients.get(rec["patient_id"])
        doctor = self.doctors.get(rec["doctor_id"])
        full = dict(rec)
        if patient is not None:
            full["patient_name"] = patient.get("name")
            full["patient_email"] = patient.get("email")
            full["patient_phone"] = patient.get("phone")
        if doctor is not None:
            full["doctor_name"] = doctor.get("name")
        return {name: full.get(name) for name in fields}

    # -- control API -------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        rows = []
        for rid, rec in sorted(self.records.items(), key=lambda kv: (kv[1]["created_at"], kv[0])):
            row = self.render(rec)
            deleted = self.deleted_at.get(rid)
            row["_deleted_at"] = iso_z(deleted) if deleted else None
            row["_notifications"] = self.notifications[rid]
            rows.append(row)
        return {
            "records": rows,
            "patients": [dict(p) for p in self.patients.values()],
            "doctors": [dict(d) for d in self.doctors.values()],
        }

    def seed(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"records", "patients", "doctors", "delete"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
        for p in body.get("patients") or []:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                raise ValueError("patients[]: each patient needs a string id")
            self.patients[p["id"]] = {
                "id": p["id"], "name": p.get("name"), "email": p.get("email"), "phone": p.get("phone"),
            }  # fmt: skip
        for d in body.get("doctors") or []:
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise ValueError("doctors[]: each doctor needs a string id")
            self.doctors[d["id"]] = {"id": d["id"], "name": d.get("name"), "specialty": d.get("specialty")}
        for raw in body.get("records") or []:
            self._seed_record(raw)
        for rid in body.get("delete") or []:
            if rid not in self.records:
                raise ValueError(f"delete: unknown appointment id {rid!r}")
            self.deleted_at.setdefault(str(rid), self.now().replace(microsecond=0))

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records[]: each record must be an object")
        unknown = set(raw) - set(RECORD_FIELDS) - {"_deleted_at", "_notifications"}
        if unknown:
            raise ValueError(f"records[]: unknown field(s) {', '.join(sorted(unknown))}")
        rid = raw.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError("records[].id: a string id is required")
        existing = self.records.get(rid)
        rec: dict[str, Any] = dict(existing) if existing else {name: None for name in RECORD_FIELDS}
        if existing is None:
            rec.update({"id": rid, "duration_minutes": 30, "status": "scheduled", "follow_up_required": False})
        rec.update({k: v for k, v in raw.items() if not k.startswith("_")})
        for name in ("patient_id", "doctor_id"):
            if not isinstance(rec.get(name), str):
                raise ValueError(f"records[{rid}].{name}: a string id is required")
        if not valid_date(rec.get("date")):
            raise ValueError(f"records[{rid}].date: YYYY-MM-DD required")
        if not valid_time(rec.get("time")):
            raise ValueError(f"records[{rid}].time: HH:MM required")
        if not is_int(rec.get("duration_minutes")):
            raise ValueError(f"records[{rid}].duration_minutes: an integer is required")
        if rec.get("status") not in STATUSES:
            raise ValueError(f"records[{rid}].status: one of {', '.join(STATUSES)}")
        if rec.get("specialty") is None:
            rec["specialty"] = (self.doctors.get(rec["doctor_id"]) or {}).get("specialty")
        now = self.now().replace(microsecond=0)
        if existing is None:
            rec["created_at"] = iso_z(parse_iso_z(raw["created_at"])) if raw.get("created_at") else iso_z(now)
            rec["updated_at"] = iso_z(parse_iso_z(raw["updated_at"])) if raw.get("updated_at") else None
            if rec["updated_at"] is None:
                rec["updated_at"] = rec["created_at"]
        else:
            self._bump(rec)
        if rec["status"] == "completed" and not rec.get("completed_at"):
            rec["completed_at"] = rec["updated_at"]
        if rec["status"] == "cancelled" and not rec.get("cancelled_at"):
            rec["cancelled_at"] = rec["updated_at"]
        self.records[rid] = {name: rec.get(name) for name in RECORD_FIELDS}
        if "_notifications" in raw:
            self.notifications[rid] = int(raw["_notifications"] or 0)
        if "_deleted_at" in raw:
            if raw["_deleted_at"]:
                self.deleted_at[rid] = parse_iso_z(str(raw["_deleted_at"]))
            else:
                self.deleted_at.pop(rid, None)

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        self._apply_as_staff(record_id, changes, bump=True)

    def _apply_as_staff(self, record_id: str, changes: Mapping[str, Any], *, bump: bool) -> None:
        rec = self._live(record_id)
        if rec is None:
            raise KeyError(record_id)
        unknown = set(changes) - set(RECORD_FIELDS) - {"send_notification"}
        if unknown or "id" in changes:
            raise ValueError(f"mutate: unknown or read-only field(s) {sorted(unknown | ({'id'} & set(changes)))}")
        old_status = rec["status"]
        for name, value in changes.items():
            if name != "send_notification":
                rec[name] = value
        if bump:
            now = self._bump(rec)
            if rec["status"] != old_status and rec["status"] == "completed" and "completed_at" not in changes:
                rec["completed_at"] = iso_z(now)
            if rec["status"] != old_status and rec["status"] == "cancelled" and "cancelled_at" not in changes:
                rec["cancelled_at"] = iso_z(now)

