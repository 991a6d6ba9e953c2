"""Reading sandbox records the way every vendor's sandbox answers them (``/_sandbox/records``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def is_appointment(record: Mapping[str, Any]) -> bool:
    attrs = record.get("attributes")
    if isinstance(attrs, Mapping):
        return attrs.get("type") == "ServiceAppointment"
    return True


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("Id", record.get("id")))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def zoho_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def short(value: str | None, width: int = 12) -> str:
    if not value:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"


def optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
