"""Salesforce Health Cloud's API rules in the sandbox (docs/vendors/salesforce_health.md §1-§7): the
session and daily limit, the §5 state table, the Connect API's body and scheduling checks, field
selection and query matching."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from connectors.salesforce_health.sandbox.soql import SA_FIELDS
from connectors.salesforce_health.sandbox.store import STATUS_CATEGORY, SalesforceStore
from connectors.salesforce_health.sandbox.wire import (
    ConnectFailure,
    SfError,
    concurrent_exceeded,
    days,
    minute,
    not_found,
    parse_http_date,
    parse_iso,
    seconds,
    session_invalid,
    sf_json,
    to_id18,
    valid_zone,
)

__all__ = ["SalesforceRules"]

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
MAX_COMPOSITE_IDS = 200


class SalesforceRules(SalesforceStore):
    """The checks the vendor applies to a request, on top of the store."""

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return concurrent_exceeded()

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

    def _earliest_available(self, now: datetime) -> datetime:
        floor = minute(now - days(15))
        # the last reset, with one minute of grace so that a poller started within the reset's
        # minute (cursor = pass start truncated to the minute - 1 minute) is not refused
        reset = minute(self.reset_at) - timedelta(minutes=1)
        if reset <= now:
            floor = max(floor, reset)
        return floor

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

    def _existing(self, raw_id: str) -> dict[str, Any]:
        rid = to_id18(raw_id)
        rec = self.appts.get(rid) if rid else None
        if rec is None:
            raise not_found()
        if rec["_deleted_at"] is not None:
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return rec

    def _check_keys(self, body: Any, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        for key in body:
            if key not in allowed:
                raise SfError(400, "JSON_PARSER_ERROR", f'Unrecognized field "{key}"')
        return body

    def _schedule(self, body: dict[str, Any], rid: str | None) -> dict[str, Any]:
        """Validate a create/update body (seed rules, §10 items 4-5); the values to store."""
        _check_body_types(body)
        times = _schedule_times(body)
        by_type = _participants_by_type(body.get("participants"))
        work_type = body.get("workTypeId")
        _check_visit_type(body, work_type)
        for kind, ids in by_type.items():
            for ref_id in ids:
                self._resolve(ref_id, PARTICIPANT_TYPES[kind], kind)
        work_type_id = self._resolve(work_type, "WorkType", "workTypeId") if work_type else None
        channel = body.get("channelId")
        channel_id = self._resolve(channel, "EngagementChannelType", "channelId") if channel else None
        if work_type_id and self.refs[work_type_id].get("channel_required") and not channel_id:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "channelId is required for this visit type")
        self._check_slots(body.get("slots"), by_type["Practitioner"])
        if times["endDate"] <= times["startDate"]:
            raise ConnectFailure("INVALID_TIME_RANGE", "endDate must be after startDate")
        return {
            "SchedStartTime": times["startDate"],
            "SchedEndTime": times["endDate"],
            "ParentRecordId": by_type["Patient"][0],
            "ServiceTerritoryId": by_type["Facility"][0],
            "WorkTypeId": work_type_id,
            "EngagementChannelTypeId": channel_id,
            "Comments": body.get("comment"),
            "_assigned": by_type["Practitioner"],
            "_ehr": _ehr_fields(body, by_type["Device"]),
        }

    def _check_slots(self, slots: list[dict[str, str]] | None, practitioners: list[str]) -> None:
        """An external resource is booked through its slots, each naming a Practitioner participant (§10
        items 4-5)."""
        external = [pid for pid in practitioners if self.refs[pid].get("external")]
        if external and not slots:
            raise ConnectFailure("MISSING_REQUIRED_FIELD", "slots is required for an external resource")
        for slot in slots or []:
            if to_id18(slot.get("reference", "")) not in practitioners:
                raise ConnectFailure(
                    "INVALID_REFERENCE",
                    f"slots reference {slot.get('reference')!r} must match a Practitioner participant",
                )

    # -- sObject PATCH (§4, §5) -------------------------------------------------------------------
    def _patched(self, rec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """``rec`` with a PATCH's ``changes`` applied: the §5 state table, the field limits, a
        ``Syncd_Id__c`` set once and unique."""
        work = copy.deepcopy(rec)
        if "Status" in changes:
            _check_status_change(rec["Status"], changes["Status"])
            if changes["Status"] != rec["Status"]:
                work["Status"] = changes["Status"]
                work["StatusCategory"] = STATUS_CATEGORY[changes["Status"]]
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
        if "Syncd_Id__c" in changes and changes["Syncd_Id__c"] != rec["Syncd_Id__c"]:
            work["Syncd_Id__c"] = self._checked_syncd_id(rec, changes["Syncd_Id__c"])
        return work

    def _checked_syncd_id(self, rec: dict[str, Any], value: str | None) -> str | None:
        if rec["Syncd_Id__c"] is not None:
            raise SfError(400, "FIELD_INTEGRITY_EXCEPTION", "Syncd_Id__c can be set only once", ["Syncd_Id__c"])
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
        return value

    def _resolve(self, raw: str, sobject: str, what: str) -> str:
        ref_id = to_id18(raw)
        ref = self.refs.get(ref_id) if ref_id else None
        if ref_id is None or ref is None or ref["attributes"]["type"] != sobject:
            raise ConnectFailure("INVALID_REFERENCE", f"{what} {raw} doesn't reference a valid {sobject}")
        return ref_id

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


def _check_body_types(body: dict[str, Any]) -> None:
    """The JSON types of a Connect body (§4 field table): strings, string arrays, participants, slots; an
    IANA ``timeZone`` (§10 item 5)."""
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


def _schedule_times(body: dict[str, Any]) -> dict[str, datetime]:
    """``startDate`` and ``endDate``, both required, read in the body's ``timeZone`` (§4 field table, §10
    item 4)."""
    for key in ("startDate", "endDate"):
        if not body.get(key):
            raise ConnectFailure("MISSING_REQUIRED_FIELD", f"{key} is required")
    times: dict[str, datetime] = {}
    for key in ("startDate", "endDate"):
        try:
            times[key] = seconds(parse_iso(body[key], body.get("timeZone")))
        except ValueError as exc:
            raise SfError(400, "INVALID_INPUT", f"{key}: invalid date/time {body[key]!r}") from exc
    return times


def _participants_by_type(participants: list[dict[str, Any]] | None) -> dict[str, list[str]]:
    """Participant type -> their record ids: one Patient, one Facility, a Practitioner or a Device or
    both (§10 item 4)."""
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
    return by_type


def _check_visit_type(body: dict[str, Any], work_type: str | None) -> None:
    """A visit type is required: ``workTypeId``, or EHR types with their ``sourceSystem`` (§10 item 4)."""
    others = [key for key in ("appointmentTypes", "serviceTypes", "serviceCategories") if body.get(key)]
    if not work_type and not others:
        raise ConnectFailure(
            "MISSING_REQUIRED_FIELD",
            "One of workTypeId, appointmentTypes, serviceTypes or serviceCategories is required",
        )
    if not work_type and others and not body.get("sourceSystem"):
        raise ConnectFailure("MISSING_REQUIRED_FIELD", "sourceSystem is required when workTypeId is not provided")


def _ehr_fields(body: dict[str, Any], devices: list[str]) -> dict[str, Any]:
    """What the EHR side keeps of a schedule body (read back by the Connect GET)."""
    ehr = {
        key: copy.deepcopy(body[key])
        for key in ("sourceSystem", "appointmentTypes", "serviceTypes", "serviceCategories", "specialties", "slots")
        if body.get(key) is not None
    }
    if devices:
        ehr["devices"] = devices
    return ehr


def patch_fields(body: Any) -> dict[str, Any]:
    """A PATCH body's fields by their API names (case-insensitive; only ``PATCHABLE``, strings or null)."""
    if not isinstance(body, dict):
        raise SfError(400, "JSON_PARSER_ERROR", "Can not deserialize SObject out of a non-object token")
    by_lower = {name.lower(): name for name in PATCHABLE}
    changes: dict[str, Any] = {}
    for key, value in body.items():
        name = by_lower.get(key.lower())
        if name is None:
            raise _not_updatable(key)
        if value is not None and not isinstance(value, str):
            raise SfError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of string from {key}")
        changes[name] = value
    return changes


def _not_updatable(key: str) -> SfError:
    """A PATCH naming a field the integration user cannot write (§6)."""
    return SfError(
        400,
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {key}. Please check the security settings of this field "
        "and verify that it is read/write for your profile or permission set.",
        [key],
    )


def check_unmodified_since(rec: dict[str, Any], header: str | None) -> None:
    """``If-Unmodified-Since``: 412 when the record changed after it (§8)."""
    if header is None:
        return
    since = parse_http_date(header)
    if since is not None and rec["LastModifiedDate"] > since:
        raise SfError(
            412,
            "PRECONDITION_FAILED",
            "The requested resource has been modified since the date in the If-Unmodified-Since header",
        )


def _check_status_change(current: str, target: Any) -> None:
    """A restricted picklist value, and a move the §5 state table allows."""
    if target not in STATUS_CATEGORY:
        raise SfError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"Status: bad value for restricted picklist field: {target}",
            ["Status"],
        )
    if target != current and target not in TRANSITIONS[current]:
        raise SfError(
            400,
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            f"You can't change the status from {current} to {target}.",
            ["Status"],
        )
