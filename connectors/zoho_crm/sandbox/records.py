"""Zoho CRM sandbox: the stored appointment, its reference data, watch channels and tokens
(docs/vendors/zoho_crm.md), as :mod:`connectors.zoho_crm.sandbox.store` keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from connectors.zoho_crm.sandbox.wire import (
    DATETIME_FIELDS,
    FIELDS,
    render_time,
)


class _TimeField:
    """A datetime field of ``Appt.data``, read as an attribute (the store keeps every ``DATETIME_FIELDS``
    value as an aware datetime)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, rec: Appt, owner: type[Appt] | None = None) -> datetime:
        value: datetime = rec.data[self.name]
        return value


@dataclass
class Appt:
    """One ``Appointments__s`` record; ``data`` holds Zoho fields, datetimes as aware UTC values."""

    data: dict[str, Any]
    deleted_at: datetime | None = None
    deleted_by: dict[str, Any] | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)
    last_trigger: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)

    start = _TimeField("Appointment_Start_Time")
    end = _TimeField("Appointment_End_Time")
    modified = _TimeField("Modified_Time")
    created = _TimeField("Created_Time")

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["Status"])

    def render(self, tz: timezone, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in fields or FIELDS:
            value = self.data.get(name)
            if name in DATETIME_FIELDS:
                out[name] = render_time(value, tz)
            elif isinstance(value, dict):
                out[name] = dict(value)
            else:
                out[name] = value
        if "id" not in out:
            out = {"id": self.id, **out}
        return out

    def render_history(self, tz: timezone) -> list[dict[str, Any]]:
        rows = []
        for row in self.history:
            rows.append(
                {
                    k: (render_time(v, tz) if isinstance(v, datetime) else (dict(v) if isinstance(v, dict) else v))
                    for k, v in row.items()
                }
            )
        return rows


@dataclass
class Channel:
    """A watch channel (``POST /crm/v7/actions/watch``)."""

    channel_id: int
    events: list[str]
    expiry: datetime
    expiry_text: str
    token: str | None
    notify_url: str
    notify_on_related_action: bool

    def wants(self, operation: str) -> bool:
        wanted = {"insert": "create", "update": "edit", "delete": "delete"}[operation]
        for event in self.events:
            _, _, op = event.partition(".")
            if op in ("all", wanted):
                return True
        return False

    def render(self, resource_uri: str) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "events": list(self.events),
            "channel_expiry": self.expiry_text,
            "token": self.token,
            "notify_url": self.notify_url,
            "notify_on_related_action": self.notify_on_related_action,
            "resource_uri": resource_uri,
        }


@dataclass
class Refs:
    """Reference data the rules look up: customers by module, users, services."""

    customers: dict[str, dict[str, dict[str, Any]]]
    users: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]

    def customer_name(self, module: str, cid: str) -> str:
        row = self.customers.get(module, {}).get(cid, {})
        name = row.get("Full_Name") or row.get("Account_Name")
        if not name:
            name = " ".join(str(p) for p in (row.get("First_Name"), row.get("Last_Name")) if p)
        return str(name or "")

    def owner(self, uid: str) -> dict[str, Any]:
        row = self.users.get(uid, {})
        return {"name": row.get("full_name", ""), "id": uid, "email": row.get("email")}

    def service(self, sid: str) -> dict[str, Any]:
        row = self.services.get(sid, {})
        return {"name": row.get("name", ""), "id": sid}


@dataclass
class Token:
    issued: datetime
    refresh_token: str
    scopes: frozenset[str]
