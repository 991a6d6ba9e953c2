"""Zoho CRM sandbox: constants, time helpers, error bodies and the search-criteria parser.

Written from docs/vendors/zoho_crm.md only; never shared with the connector.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from syncd.sandboxkit.base import json_response

MODULE = "Appointments__s"
API = "/crm/v7"
ORG_PREFIX = "5545974000"

ADMIN_USER = {"name": "Patricia Boyle", "id": "5545974000000393001", "email": "patricia@clinic.example"}
API_USER = {"name": "syncd", "id": "5545974000000393002", "email": "syncd@clinic.example"}
DEFAULT_SERVICE = {"id": "5545974000000520001", "name": "Check-up", "duration": 30}
WATCH_RESOURCE_ID = "5545974000000002175"

STATUSES = ("Scheduled", "Overdue", "Completed", "Cancelled")
TERMINAL = ("Completed", "Cancelled")
REASONS = ("By Customer", "By Team")
LOCATIONS = ("Business Address", "Client Address")
CUSTOMER_MODULES = ("Contacts", "Leads", "Accounts")

#: every field of a record, in Zoho's order (§3 list plus Created_By / Modified_By)
FIELDS = (
    "id",
    "Appointment_Name",
    "Appointment_For",
    "Service_Name",
    "Owner",
    "Appointment_Start_Time",
    "Appointment_End_Time",
    "Duration",
    "Location",
    "Address",
    "Status",
    "Cancellation_Reason",
    "Cancellation_Note",
    "Rescheduled_From",
    "Reschedule_Reason",
    "Reschedule_Note",
    "Reschedule_Count",
    "Job_Sheet_Name",
    "Job_Sheet_Description__s",
    "Additional_Information",
    "Syncd_Id",
    "Created_Time",
    "Modified_Time",
    "Created_By",
    "Modified_By",
)
DATETIME_FIELDS = (
    "Appointment_Start_Time",
    "Appointment_End_Time",
    "Rescheduled_From",
    "Created_Time",
    "Modified_Time",
)
READ_ONLY = (
    "Appointment_End_Time",
    "Duration",
    "Reschedule_Count",
    "Created_Time",
    "Created_By",
    "Modified_Time",
    "Modified_By",
)
CANCEL_KEYS = ("Cancellation_Reason", "Cancellation_Note")
RESCHEDULE_KEYS = ("Rescheduled_From", "Reschedule_Reason", "Reschedule_Note")
JOB_SHEET_KEYS = ("Job_Sheet_Name", "Job_Sheet_Description__s")
#: fields an update may change on a Scheduled or Overdue record besides the status groups
PLAIN_EDIT_KEYS = (
    "Appointment_Name",
    "Appointment_For",
    "Owner",
    "Location",
    "Address",
    "Additional_Information",
    "Syncd_Id",
)
EDIT_KEYS = (
    *PLAIN_EDIT_KEYS,
    "Service_Name",
    "Status",
    "Appointment_Start_Time",
    *CANCEL_KEYS,
    *RESCHEDULE_KEYS,
    *JOB_SHEET_KEYS,
)

# ISO 8601 with an explicit ±hh:mm offset, second precision, no fraction, no "Z" (§4, assumed)
_ISO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")

# HTTP status of each per-record / top-level code (§6)
CODE_STATUS = {"NOT_ALLOWED": 403, "NO_PERMISSION": 403, "INVALID_URL_PATTERN": 404}
MESSAGES = {
    "MANDATORY_NOT_FOUND": "required field not found",
    "INVALID_DATA": "invalid data",
    "DEPENDENT_FIELD_MISSING": "dependent field missing",
    "DEPENDENT_FIELD_UNCHANGED": "the new appointment time has to be greater than the existing one",
    "DEPENDENT_MISMATCH": "dependent field mismatch",
    "NOT_ALLOWED": "not allowed",
    "LIMIT_EXCEEDED": "the number of records exceeds the limit",
}


def zid(n: int) -> str:
    """A 19-digit Zoho record id in the sandbox org."""
    return f"{ORG_PREFIX}{n:09d}"


def parse_offset(text: str) -> timezone:
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text.strip())
    if not m:
        raise ValueError(f"display_offset: expected ±hh:mm, got {text!r}")
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return timezone(-delta if m.group(1) == "-" else delta)


def parse_zoho_time(value: Any) -> datetime | None:
    """A Zoho write datetime (offset required, no fraction, no Z) or None when malformed."""
    if not isinstance(value, str) or not _ISO_OFFSET.match(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_loose_time(value: Any) -> datetime:
    """A datetime from seeds/headers: any ISO 8601 with an offset (``Z`` accepted); ValueError else."""
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without an offset: {value!r}")
    return parsed


def second(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(microsecond=0)


def render_time(dt: datetime | None, tz: timezone) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(tz).replace(microsecond=0).isoformat()


def top_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    return json_response({"code": code, "details": details or {}, "message": message, "status": "error"}, status)


def record_error(code: str, api_name: str, index: int, message: str | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "details": {"api_name": api_name, "json_path": f"$.data[{index}].{api_name}"},
        "message": message or MESSAGES.get(code, "invalid data"),
        "status": "error",
    }


def code_status(code: str) -> int:
    return CODE_STATUS.get(code, 400)


AUTH_FAILURE = ("AUTHENTICATION_FAILURE", "Authentication failed")
INVALID_TOKEN = ("INVALID_TOKEN", "invalid oauth token")
SCOPE_MISMATCH = ("OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")


def invalid_url() -> web.Response:
    return top_error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")


def invalid_method() -> web.Response:
    return top_error(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")


def invalid_module() -> web.Response:
    return top_error(400, "INVALID_MODULE", "the module name given seems to be invalid", {"resource_path_index": 0})


def too_many(message: str, retry_after: float) -> web.Response:
    secs = max(1, int(-(-retry_after // 1)))
    return json_response(
        {"code": "TOO_MANY_REQUESTS", "details": {}, "message": message, "status": "error"},
        429,
        headers={"Retry-After": str(secs)},
    )


# -- search criteria --------------------------------------------------------------------------

SEARCH_FIELDS = ("Syncd_Id", "Appointment_Start_Time", "Status")


class CriteriaError(ValueError):
    """A criteria string the search cannot run; ``api_name`` names the field when known."""

    def __init__(self, message: str, api_name: str | None = None) -> None:
        super().__init__(message)
        self.api_name = api_name


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    values: tuple[Any, ...]

    def matches(self, record: dict[str, Any]) -> bool:
        current = record.get(self.field)
        if current is None:
            return False
        if self.field == "Appointment_Start_Time":
            if self.op == "equals":
                return any(current == v for v in self.values)
            return bool(self.values[0] <= current <= self.values[1])
        text = str(current).lower()
        if self.op == "equals":
            return any(text == str(v).lower() for v in self.values)
        low, high = str(self.values[0]).lower(), str(self.values[1]).lower()
        return low <= text <= high


Predicate = Callable[[dict[str, Any]], bool]


def _split_values(raw: str) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            buf.append(raw[i + 1])
            i += 2
            continue
        if ch == ",":
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return out


def _condition(text: str) -> Condition:
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise CriteriaError(f"bad condition {text!r}")
    field, op, raw = parts[0].strip(), parts[1].strip(), parts[2]
    if field not in SEARCH_FIELDS:
        raise CriteriaError("the field is not available for search", field)
    if op not in ("equals", "between"):
        raise CriteriaError(f"the comparator {op!r} is not supported", field)
    values = _split_values(raw)
    if op == "between" and len(values) != 2:
        raise CriteriaError("between needs two values", field)
    if field == "Appointment_Start_Time":
        parsed: list[Any] = []
        for v in values:
            dt = parse_zoho_time(v.strip())
            if dt is None:
                raise CriteriaError("invalid datetime in criteria", field)
            parsed.append(second(dt))
        return Condition(field, op, tuple(parsed))
    return Condition(field, op, tuple(values))


def parse_criteria(text: str) -> Predicate:
    """Parse ``(A:equals:x)``, ``((A:equals:x)and(B:between:y,z))``, ``…or…`` into a predicate."""
    pos = 0

    def group() -> Predicate:
        nonlocal pos
        if pos >= len(text) or text[pos] != "(":
            raise CriteriaError("criteria must be wrapped in parentheses")
        pos += 1
        if pos < len(text) and text[pos] == "(":
            left = group()
            while pos < len(text) and text[pos] != ")":
                rest = text[pos:]
                low = rest.lower()
                if low.startswith("and"):
                    pos += 3
                    right = group()
                    left = _and(left, right)
                elif low.startswith("or"):
                    pos += 2
                    right = group()
                    left = _or(left, right)
                else:
                    raise CriteriaError("expected 'and' or 'or' between conditions")
            if pos >= len(text):
                raise CriteriaError("unbalanced parentheses")
            pos += 1
            return left
        start = pos
        while pos < len(text):
            if text[pos] == "\\":
                pos += 2
                continue
            if text[pos] == ")":
                break
            pos += 1
        if pos >= len(text):
            raise CriteriaError("unbalanced parentheses")
        cond = _condition(text[start:pos])
        pos += 1
        return cond.matches

    pred = group()
    if pos != len(text):
        raise CriteriaError("trailing text after criteria")
    return pred


def _and(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) and b(r)


def _or(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) or b(r)
