"""``Connector.write_refusal`` agrees with the vendor: what it refuses, the sandbox (or the connector's
own pre-send check) refuses too, and what it lets through is written.

Each case puts a seeded record into a native state the way another user would (``/_sandbox/records``),
reads it, asks the pure decision about a change, then makes that write through the connector against
the sandbox. ``conflicts resolve`` relies on this decision to refuse a choice up front instead of
writing, failing and reopening the conflict (issue 15, item 6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors import create_connector
from syncd.connector import Connector, MemoryStateStore, WriteKind, WriteRequest
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox, start_sandbox
from tests.connectors.conftest import load_kit
from tests.connectors.kit import control

Change = Callable[[Appointment], Appointment]


def notes(appt: Appointment) -> Appointment:
    return appt.with_changes(notes="changed by another system")


def later(appt: Appointment) -> Appointment:
    assert appt.start is not None and appt.end is not None
    return appt.with_changes(start=appt.start + timedelta(hours=1), end=appt.end + timedelta(hours=1))


def cancel(appt: Appointment) -> Appointment:
    return appt.with_changes(status=Status.CANCELLED, cancellation_reason="Patient called")


def status(value: Status) -> Change:
    return lambda appt: appt.with_changes(status=value, cancellation_reason=None)


def description(appt: Appointment) -> Appointment:
    return appt.with_changes(description="Another reason for the visit")


def other_service(service: str) -> Change:
    return lambda appt: appt.with_changes(service_type=service)


def _past() -> dict[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    fmt = "%Y-%m-%dT%H:%M:%S.000Z"
    return {"startAt": start.strftime(fmt), "endAt": (start + timedelta(minutes=30)).strftime(fmt)}


@dataclass(frozen=True)
class Case:
    vendor: str
    name: str
    change: Change
    refused: bool
    state: dict[str, Any] = field(default_factory=dict)
    """Raw fields set on the seeded record first (its native status), as another user would."""


ZOHO_CANCELLED = {"Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Patient request"}
CASES = [
    # Zoho (docs/vendors/zoho_crm.md §5): Cancelled and Completed take no edit at all (E7)
    Case("zoho_crm", "scheduled_takes_notes", notes, False),
    Case("zoho_crm", "scheduled_takes_a_later_start", later, False),
    Case("zoho_crm", "scheduled_takes_a_cancellation", cancel, False),
    Case("zoho_crm", "cancelled_refuses_notes", notes, True, ZOHO_CANCELLED),
    Case("zoho_crm", "cancelled_refuses_a_later_start", later, True, ZOHO_CANCELLED),
    # Salesforce (docs/vendors/salesforce_health.md §5): PUT locked in In Progress and terminal categories,
    # Comments through the sObject PATCH in every state, transitions by the table
    Case("salesforce_health", "scheduled_takes_notes", notes, False),
    Case("salesforce_health", "scheduled_takes_a_later_start", later, False),
    Case("salesforce_health", "canceled_takes_notes", notes, False, {"Status": "Canceled"}),
    Case("salesforce_health", "canceled_refuses_a_later_start", later, True, {"Status": "Canceled"}),
    Case("salesforce_health", "in_progress_refuses_a_later_start", later, True, {"Status": "In Progress"}),
    Case("salesforce_health", "in_progress_takes_notes", notes, False, {"Status": "In Progress"}),
    Case("salesforce_health", "completed_refuses_booked", status(Status.BOOKED), True, {"Status": "Completed"}),
    # SaludYa (docs/vendors/saludya.md §5): terminal takes nothing, in_progress only status and notes
    Case("saludya", "confirmed_takes_notes", notes, False),
    Case("saludya", "confirmed_takes_a_later_start", later, False),
    Case("saludya", "confirmed_takes_a_no_show", status(Status.NOSHOW), False),
    Case("saludya", "cancelled_refuses_notes", notes, True,
         {"status": "cancelled", "cancellation_reason": "Paciente tuvo una emergencia"}),
    Case("saludya", "no_show_refuses_a_description", description, True, {"status": "no_show"}),
    Case("saludya", "in_progress_takes_notes", notes, False, {"status": "in_progress"}),
    Case("saludya", "in_progress_refuses_a_later_start", later, True, {"status": "in_progress"}),
    Case("saludya", "in_progress_refuses_a_cancellation", cancel, True, {"status": "in_progress"}),
    # Onlive (docs/vendors/onlive.md §4, §5): closed and past appointments take nothing; serviceId immutable
    Case("onlive", "confirmed_takes_notes", notes, False, {"status": "confirmed"}),
    Case("onlive", "confirmed_takes_a_cancellation", cancel, False, {"status": "confirmed"}),
    Case("onlive", "cancelled_refuses_notes", notes, True, {"status": "cancelled"}),
    Case("onlive", "completed_refuses_notes", notes, True, {"status": "completed"}),
    Case("onlive", "past_refuses_notes", notes, True, {"status": "confirmed", **_past()}),
    Case("onlive", "service_is_immutable", other_service("5b1e2c3d-0000-4a6b-8c7d-9e0f1a2b3c4d"), True,
         {"status": "confirmed"}),
    # Dentally (docs/vendors/dentally.md §5): Pending edits all, Confirmed state and notes only, terminal notes only
    Case("dentally", "pending_takes_a_later_start", later, False, {"state": "Pending"}),
    Case("dentally", "confirmed_refuses_a_later_start", later, True, {"state": "Confirmed"}),
    Case("dentally", "confirmed_takes_notes", notes, False, {"state": "Confirmed"}),
    Case("dentally", "cancelled_takes_notes", notes, False, {"state": "Cancelled", "cancellation_reason_id": 2}),
    Case("dentally", "completed_refuses_pending", status(Status.PENDING), True, {"state": "Completed"}),
    Case("dentally", "confirmed_refuses_completed", status(Status.FULFILLED), True, {"state": "Confirmed"}),
    Case("dentally", "arrived_refuses_a_cancellation", cancel, True, {"state": "Arrived"}),
    Case("dentally", "pending_takes_a_cancellation", cancel, False, {"state": "Pending"}),
]


@dataclass
class Vendor:
    sandbox: RunningSandbox
    connector: Connector


@pytest.fixture
async def vendor(request: pytest.FixtureRequest) -> AsyncIterator[Vendor]:
    case: Case = request.param
    kit = load_kit(case.vendor)
    sandbox = await start_sandbox(kit.vendor, port=0, **{**kit.sandbox_options(), "rate_limits": False})
    connector = create_connector(kit.connector_config(sandbox.url), state=MemoryStateStore())
    try:
        yield Vendor(sandbox, connector)
    finally:
        await connector.close()
        await sandbox.stop()


def _key(vendor: str, external_id: str) -> dict[str, Any]:
    if vendor == "salesforce_health":
        return {"attributes": {"type": "ServiceAppointment"}, "Id": external_id}
    if vendor == "dentally":
        return {"id": int(external_id)}
    return {"id": external_id}


@pytest.mark.parametrize(("vendor", "case"), [(c, c) for c in CASES], indirect=["vendor"],
                         ids=[f"{c.vendor}-{c.name}" for c in CASES])
async def test_write_refusal_agrees_with_the_vendor(vendor: Vendor, case: Case) -> None:
    """The pure decision refuses exactly the changes the vendor refuses, and the others are written."""
    kit = load_kit(case.vendor)
    [rid] = await kit.seed(vendor.sandbox, 1)
    if case.state:
        await control(vendor.sandbox, "POST", "/_sandbox/records", {"records": [{**_key(case.vendor, rid),
                                                                                **case.state}]})
    record = (await vendor.connector.read([rid]))[rid]
    current = record.appointment
    assert current is not None, record.error
    desired = case.change(current)
    refusal = vendor.connector.write_refusal(current, desired, now=datetime.now(UTC))
    assert (refusal is not None) is case.refused, refusal
    if refusal is not None:
        assert current.native_status is not None and (current.native_status in refusal or "past" in refusal
                                                      or "service" in refusal)
    cancelling = desired.status in (Status.CANCELLED, Status.ENTERED_IN_ERROR) and not current.status.terminal
    kind = WriteKind.CANCEL if cancelling else WriteKind.UPDATE
    [outcome] = await vendor.connector.write([WriteRequest(kind, "apt_refusal_case", desired, external_id=rid,
                                                           current=record,
                                                           changed=frozenset(desired.diff(current)))])
    assert outcome.ok is (refusal is None), outcome.error
    if outcome.ok:
        after = (await vendor.connector.read([rid]))[rid].appointment
        assert after is not None
        for name in desired.diff(current):
            if name not in record.unexpressible and name != "status":
                assert getattr(after, name) == getattr(desired, name), name


REPLACE_CASES = [
    # a change the vendor makes by cancelling the old record and booking anew needs a cancellable record
    ("saludya", "confirmed", "patient", "pat_other", False),
    ("saludya", "in_progress", "patient", "pat_other", True),
    ("saludya", "completed", "practitioner", "doc_other", True),
    ("dentally", "Confirmed", "patient", "4242", False),
    ("dentally", "Arrived", "patient", "4242", True),
    ("dentally", "Did not attend", "patient", "4242", True),
    ("onlive", "confirmed", "practitioner", "c0a80199-7d2e-4f4b-9c1a-5e6f7a8b9c0d", False),
    ("onlive", "cancelled", "practitioner", "c0a80199-7d2e-4f4b-9c1a-5e6f7a8b9c0d", True),
]


@pytest.mark.parametrize(("vendor_type", "native", "name", "value", "refused"), REPLACE_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in REPLACE_CASES])
async def test_a_replace_flow_needs_an_old_record_that_can_be_cancelled(
    vendor_type: str, native: str, name: str, value: str, refused: bool
) -> None:
    """A patient, doctor or practitioner change is a replace flow; a record whose state cannot be
    cancelled (or a closed one) refuses it, before anything is created."""
    kit = load_kit(vendor_type)
    connector = create_connector(kit.connector_config("http://127.0.0.1:9"), state=MemoryStateStore())
    try:
        base = kit.new_appointment()
        canonical = connector.mapping.to_canonical(native)
        reason = "Patient request" if canonical in (Status.CANCELLED, Status.ENTERED_IN_ERROR) else None
        current = base.with_changes(status=canonical, native_status=native, cancellation_reason=reason)
        desired = current.with_changes(**{name: value})
        assert connector.needs_replace(current, desired) is not None or canonical.terminal
        refusal = connector.write_refusal(current, desired, now=datetime.now(UTC))
        assert (refusal is not None) is refused, refusal
    finally:
        await connector.close()
