"""The four SOQL shapes the sandbox answers (docs/vendors/salesforce_health.md §2 (c), §3, §9 and §10 item 11).

Keywords are case-insensitive and any whitespace is allowed; the select list may add fields from
the §3 list to a shape's own fields. Anything else is ``MALFORMED_QUERY``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.salesforce_health.sandbox.wire import SfError, parse_iso

SA_FIELDS: tuple[str, ...] = (
    "Id",
    "AppointmentNumber",
    "Status",
    "StatusCategory",
    "SchedStartTime",
    "SchedEndTime",
    "ParentRecordId",
    "WorkTypeId",
    "ServiceTerritoryId",
    "EngagementChannelTypeId",
    "Description",
    "Comments",
    "CancellationReason",
    "LastModifiedDate",
    "SystemModstamp",
    "Syncd_Id__c",
)
AR_FIELDS: tuple[str, ...] = ("Id", "ServiceAppointmentId", "ServiceResourceId")

_OBJECT_FIELDS = {
    "serviceappointment": ("ServiceAppointment", SA_FIELDS),
    "assignedresource": (
        "AssignedResource",
        AR_FIELDS,
    ),
}

# (object, frozenset of condition kinds) -> fields the select list must hold
SHAPES: dict[tuple[str, frozenset[str]], tuple[str, ...]] = {
    ("ServiceAppointment", frozenset({"start_ge", "start_lt"})): ("Id", "SystemModstamp"),
    ("ServiceAppointment", frozenset({"syncd_eq"})): ("Id",),
    ("ServiceAppointment", frozenset({"parent_eq", "start_eq", "syncd_null"})): ("Id", "Syncd_Id__c"),
    ("AssignedResource", frozenset({"sa_in"})): ("ServiceAppointmentId", "ServiceResourceId"),
}

_QUERY_RE = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)\s+WHERE\s+(?P<where>.+?)"
    r"(?:\s+ORDER\s+BY\s+Id(?:\s+ASC)?)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_STR = r"'(?:[^'\\]|\\.)*'"
_COND_RE = re.compile(
    r"(?P<f>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:(?P<op>>=|<=|!=|=|<|>)\s*(?P<v>" + _STR + r"|null\b|[0-9][0-9T:.Z+\-]*)"
    r"|(?P<in>IN)\s*\((?P<list>\s*" + _STR + r"(?:\s*,\s*" + _STR + r")*\s*)\))",
    re.IGNORECASE | re.DOTALL,
)
_AND_RE = re.compile(r"\s+AND\s+", re.IGNORECASE)
_STR_ITEM_RE = re.compile(_STR)


@dataclass
class Query:
    obj: str
    fields: list[str]
    conds: dict[str, Any] = field(default_factory=dict)


def _malformed(detail: str) -> SfError:
    return SfError(400, "MALFORMED_QUERY", detail)


def _unquote(token: str) -> str:
    inner = token[1:-1]
    return re.sub(r"\\(.)", r"\1", inner)


def _datetime(token: str, field_name: str) -> datetime:
    if token.startswith("'"):
        raise _malformed(
            f"value of filter criterion for field '{field_name}' must be of type dateTime and should not be "
            "enclosed in quotes"
        )
    try:
        return parse_iso(token)
    except ValueError as exc:
        raise _malformed(f"line 1:0 no viable alternative at character '{token}'") from exc


def parse(soql: str) -> Query:
    m = _QUERY_RE.match(soql or "")
    if m is None:
        raise _malformed("unexpected token: the query is not one this org's integration may run")
    obj_key = m.group("obj").lower()
    if obj_key not in _OBJECT_FIELDS:
        raise _malformed(f"sObject type '{m.group('obj')}' is not supported in this query shape")
    obj, known = _OBJECT_FIELDS[obj_key]
    by_lower = {name.lower(): name for name in known}
    fields: list[str] = []
    for raw in m.group("fields").split(","):
        name = raw.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise _malformed(f"unexpected token: '{name}'")
        canonical = by_lower.get(name.lower())
        if canonical is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{obj}'. If you are attempting to use a custom field, be "
                "sure to append the '__c' after the custom field name.",
            )
        if canonical not in fields:
            fields.append(canonical)
    conds: dict[str, Any] = {}
    where = m.group("where")
    pos = 0
    while True:
        cm = _COND_RE.match(where, pos)
        if cm is None:
            raise _malformed(f"unexpected token near '{where[pos : pos + 20]}'")
        kind, value = _condition(cm, obj)
        if kind in conds:
            raise _malformed(f"condition repeated: {cm.group(0)}")
        conds[kind] = value
        pos = cm.end()
        if pos == len(where):
            break
        am = _AND_RE.match(where, pos)
        if am is None:
            raise _malformed(f"unexpected token near '{where[pos : pos + 20]}'")
        pos = am.end()
    required = SHAPES.get((obj, frozenset(conds)))
    if required is None:
        raise _malformed("unexpected WHERE clause for this org's integration queries")
    missing = [name for name in required if name not in fields]
    if missing:
        raise _malformed(f"this query shape must select {', '.join(required)}")
    return Query(obj=obj, fields=fields, conds=conds)


def _condition(cm: re.Match[str], obj: str) -> tuple[str, Any]:
    name = cm.group("f").lower()
    if cm.group("in"):
        if obj == "AssignedResource" and name == "serviceappointmentid":
            return "sa_in", [_unquote(tok) for tok in _STR_ITEM_RE.findall(cm.group("list"))]
        raise _malformed(f"unexpected IN condition on {cm.group('f')}")
    op, token = cm.group("op"), cm.group("v")
    is_null = token.lower() == "null"
    is_str = token.startswith("'")
    if obj == "ServiceAppointment":
        if name == "schedstarttime" and not is_null:
            kinds = {">=": "start_ge", "<": "start_lt", "=": "start_eq"}
            if op in kinds:
                return kinds[op], _datetime(token, "SchedStartTime")
        if name == "syncd_id__c" and op == "=":
            if is_null:
                return "syncd_null", None
            if is_str:
                return "syncd_eq", _unquote(token)
        if name == "parentrecordid" and op == "=" and is_str:
            return "parent_eq", _unquote(token)
    raise _malformed(f"unexpected condition: {cm.group(0)}")
