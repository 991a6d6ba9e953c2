"""Contract kit for Salesforce Health Cloud: seeds and edits the sandbox the way an org user would."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.salesforce_health.sandbox.wire import to_id18
from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox
from syncd.secret import Secret
from tests.connectors.kit import RuleCase, control

_COUNTER = itertools.count(1)


def _sid(prefix: str, n: int) -> str:
    """An 18-character Salesforce id from a 15-character one built of ``prefix`` and ``n``."""
    value = to_id18(f"{prefix}KT{n:010d}")
    assert value is not None
    return value


PATIENT = _sid("001", 1)
PATIENT_2 = _sid("001", 2)
UNKNOWN_PATIENT = _sid("001", 999)
FACILITY = _sid("0Hh", 1)
PRACTITIONER = _sid("0Hn", 1)
PRACTITIONER_2 = _sid("0Hn", 2)
WORK_TYPE = _sid("08q", 1)
WORK_TYPE_CHANNEL = _sid("08q", 2)
CHANNEL = _sid("0eF", 1)

REFERENCE_DATA: list[dict[str, Any]] = [
    {"attributes": {"type": "Account"}, "Id": PATIENT, "IsPersonAccount": True, "LastName": "Kit"},
    {"attributes": {"type": "Account"}, "Id": PATIENT_2, "IsPersonAccount": True, "LastName": "Kit"},
    {"attributes": {"type": "ServiceTerritory"}, "Id": FACILITY, "Name": "Centro"},
    {"attributes": {"type": "ServiceResource"}, "Id": PRACTITIONER, "Name": "Dr A", "external": False},
    {"attributes": {"type": "ServiceResource"}, "Id": PRACTITIONER_2, "Name": "Dr B", "external": False},
    {"attributes": {"type": "WorkType"}, "Id": WORK_TYPE, "Name": "Check-up", "channel_required": False},
    {"attributes": {"type": "WorkType"}, "Id": WORK_TYPE_CHANNEL, "Name": "Video", "channel_required": True},
    {"attributes": {"type": "EngagementChannelType"}, "Id": CHANNEL, "Name": "In Person"},
]


def _sf(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")



async def as_another_user_before_this_minute(sb: RunningSandbox, body: dict[str, Any]) -> None:
    """Apply a change stamped just before the current minute, then restore the clock.

    The replication feeds cover ``start <= SystemModstamp < latestDateCovered`` with
    ``latestDateCovered`` = now truncated to the minute (docs/vendors/salesforce_health.md §2 b): a change stamped in
    the
    current minute only shows in the next minute's poll. Stamping it one second before the minute
    lets an immediate poll see it, as it would a minute later against a real org.
    """
    now = datetime.now(UTC)
    stamp = now.replace(second=0, microsecond=0) - timedelta(seconds=1)
    await control(sb, "POST", "/_sandbox/clock", {"now": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")})
    try:
        await control(sb, "POST", "/_sandbox/records", body)
    finally:
        await control(sb, "POST", "/_sandbox/clock", {"now": None})


class SalesforceHealthKit:
    vendor = "salesforce_health"
    three_pages = 401  # pages of 200 (composite batch read)
    create_route = ("POST", "/services/data/*/connect/health/appointment-management/appointment")
    read_route = ("GET", "/services/data/*/composite/sobjects/ServiceAppointment")
    has_refresh = True
    token_route: str | None = "/services/oauth2/token"

    def sandbox_options(self) -> dict[str, Any]:
        return {}

    def connector_config(self, base_url: str) -> ConnectorConfig:
        return ConnectorConfig(
            name="sf",
            type="salesforce_health",
            base_url=base_url,
            timezone="Europe/Madrid",
            webhook_secret=Secret("sandbox-webhook-secret"),
            max_requests_per_second=200.0,
            auth={
                "token_url": Secret(base_url + "/services/oauth2/token"),
                "client_id": Secret("sandbox-client"),
                "client_secret": Secret("sandbox-secret"),
                "refresh_token": Secret("sandbox-refresh"),
                "api_version": Secret("65.0"),
            },
        )

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        base = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=1)
        records: list[dict[str, Any]] = list(REFERENCE_DATA)
        ids: list[str] = []
        for _ in range(n):
            k = next(_COUNTER)
            rid = _sid("08p", k)
            start = base + timedelta(minutes=30 * k)
            ids.append(rid)
            records.append({
                "attributes": {"type": "ServiceAppointment"},
                "Id": rid,
                "Status": "Scheduled",
                "SchedStartTime": _sf(start),
                "SchedEndTime": _sf(start + timedelta(minutes=30)),
                "ParentRecordId": PATIENT,
                "WorkTypeId": WORK_TYPE,
                "ServiceTerritoryId": FACILITY,
                "EngagementChannelTypeId": CHANNEL,
                "Comments": "Seeded",
                "_assigned_resources": [PRACTITIONER],
            })
        await control(sb, "POST", "/_sandbox/records", {"records": records})
        return ids

    def new_appointment(self) -> Appointment:
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=20, hours=1)
        return Appointment(
            status=Status.BOOKED, start=start, end=start + timedelta(minutes=45), patient=PATIENT,
            practitioner=PRACTITIONER, location=FACILITY, service_type=WORK_TYPE, notes="New from syncd",
            extra={"channel_id": CHANNEL},
        )

    def update_of(self, current: Appointment) -> tuple[Appointment, frozenset[str]]:
        assert current.start is not None and current.end is not None
        desired = current.with_changes(
            start=current.start + timedelta(hours=2), end=current.end + timedelta(hours=2),
            notes=(current.notes or "") + " (moved)", practitioner=PRACTITIONER_2,
        )
        return desired, frozenset({"start", "end", "notes", "practitioner"})

    def cancel_of(self, current: Appointment) -> Appointment:
        return current.with_changes(status=Status.CANCELLED, cancellation_reason="Patient request")

    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        body = {"records": [{"attributes": {"type": "ServiceAppointment"}, "Id": external_id,
                             "Comments": f"Edited by reception {next(_COUNTER)}"}]}
        await as_another_user_before_this_minute(sb, body)

    async def delete(self, sb: RunningSandbox, external_id: str) -> None:
        await as_another_user_before_this_minute(sb, {"records": [], "delete": [external_id]})

    def rule_cases(self) -> list[RuleCase]:
        def with_status(status: str) -> Any:
            async def prepare(sb: RunningSandbox, rec: VendorRecord) -> None:
                await control(sb, "POST", "/_sandbox/records", {"records": [
                    {"attributes": {"type": "ServiceAppointment"}, "Id": rec.external_id, "Status": status}]})
            return prepare

        def fault(action: dict[str, Any], method: str) -> Any:
            async def prepare(sb: RunningSandbox, rec: VendorRecord) -> None:
                await control(sb, "POST", "/_sandbox/faults", {
                    "match": {"method": method, "path": "/services/data/*/connect/health/*"},
                    "times": 1, "action": action})
            return prepare

        def cur(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            return rec.appointment

        def moved(rec: VendorRecord) -> Appointment:
            a = cur(rec)
            assert a.start is not None and a.end is not None
            return a.with_changes(start=a.start + timedelta(hours=1), end=a.end + timedelta(hours=1))

        new = self.new_appointment
        return [
            RuleCase("put_on_completed", WriteKind.UPDATE, moved, "INVALID_STATE", with_status("Completed")),
            RuleCase("cancel_in_progress", WriteKind.CANCEL, lambda r: self.cancel_of(cur(r)), "INVALID_STATE",
                     with_status("In Progress")),
            RuleCase("completed_to_scheduled", WriteKind.UPDATE,
                     lambda r: cur(r).with_changes(status=Status.BOOKED), "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                     with_status("Completed")),
            RuleCase("in_progress_to_unscheduled", WriteKind.UPDATE,
                     lambda r: cur(r).with_changes(status=Status.PENDING), "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                     with_status("In Progress")),
            RuleCase("create_without_facility", WriteKind.CREATE, lambda r: new().with_changes(location=None),
                     "MISSING_REQUIRED_FIELD"),
            RuleCase("create_without_provider", WriteKind.CREATE, lambda r: new().with_changes(practitioner=None),
                     "MISSING_REQUIRED_FIELD"),
            RuleCase("create_without_patient", WriteKind.CREATE, lambda r: new().with_changes(patient=None),
                     "MISSING_REQUIRED_FIELD"),
            RuleCase("create_without_visit_type", WriteKind.CREATE,
                     lambda r: new().with_changes(service_type=None), "MISSING_REQUIRED_FIELD"),
            RuleCase("create_without_times", WriteKind.CREATE,
                     lambda r: new().with_changes(status=Status.PROPOSED, start=None, end=None),
                     "MISSING_REQUIRED_FIELD"),
            RuleCase("channel_required_for_visit_type", WriteKind.CREATE,
                     lambda r: new().with_changes(service_type=WORK_TYPE_CHANNEL, extra={}),
                     "MISSING_REQUIRED_FIELD"),
            RuleCase("unknown_patient", WriteKind.UPDATE, lambda r: cur(r).with_changes(patient=UNKNOWN_PATIENT),
                     "INVALID_REFERENCE"),
            RuleCase("ehr_refuses_slot", WriteKind.UPDATE, moved, "SLOT_UNAVAILABLE",
                     fault({"type": "ehr_reject"}, "PUT")),
        ]

    async def expire_token(self, sb: RunningSandbox) -> None:
        await control(sb, "POST", "/_sandbox/faults", {
            "match": {"method": "GET", "path": "/services/data/*"}, "times": 1,
            "action": {"type": "session_expired"}})

    async def revoke(self, sb: RunningSandbox) -> None:
        await control(sb, "POST", "/_sandbox/faults", {
            "match": {"method": "POST", "path": "/services/oauth2/token"}, "times": 10,
            "action": {"type": "refresh_invalid_grant"}})
        await control(sb, "POST", "/_sandbox/faults", {
            "match": {"method": "GET", "path": "/services/data/*"}, "times": 1,
            "action": {"type": "session_expired"}})


KIT = SalesforceHealthKit()
