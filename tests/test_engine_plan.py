"""The planner decides over values alone: no ledger, no sandbox, no event loop (syncd/engine/plan.py).

Each case hands :class:`Planner` a page as the reconciler would read it from the ledger and checks the
work it plans: snapshots, links, outbox rows, dead letters, decisions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from syncd.config import SyncGroup
from syncd.connector import Capabilities, Connector, VendorRecord, WriteKind
from syncd.engine.canonical import Members
from syncd.engine.plan import Page, Planner
from syncd.engine.stats import PassStats
from syncd.engine.work import PageWork
from syncd.ledger.models import AppointmentRow, Link
from syncd.model import Appointment, Status

START = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
GROUP = SyncGroup("clinic", ("crm", "ehr"), ("crm", "ehr"), {})
REFS = {"patient": {"crm-p1": "pat-1", "crm-p2": "pat-2"}}


def _member(*, patient_change: bool = True) -> Connector:
    caps = Capabilities(webhooks=False, batch_read_size=1, batch_write_size=1,
                        patient_change=patient_change)
    return cast(Connector, SimpleNamespace(capabilities=caps, mapping=None,
                                           needs_replace=lambda current, desired: None))


def _planner(**members: Connector) -> tuple[Planner, PassStats]:
    stats = PassStats()
    connectors = members or {"crm": _member(), "ehr": _member()}
    return Planner(Members(connectors, {}), stats), stats


def _record(ext: str, status: Status = Status.BOOKED, *, patient: str | None = "crm-p1",
            modified: datetime = START, deleted: bool = False) -> VendorRecord:
    if deleted:
        return VendorRecord(external_id=ext, version=None, appointment=None, deleted=True)
    appt = Appointment(status=status, start=START, end=START + timedelta(minutes=30), patient=patient)
    return VendorRecord(external_id=ext, version=modified.isoformat(), appointment=appt, modified_at=modified)


def _page(links: dict[str, Link] | None = None, snapshots: dict[str, AppointmentRow] | None = None,
          member_links: dict[str, list[Link]] | None = None) -> Page:
    return Page(GROUP, "crm", links or {}, snapshots or {}, member_links or {}, REFS)


def _linked_world(status: Status = Status.BOOKED) -> tuple[Page, Appointment]:
    """Appointment A1 merged from crm's c1 and written to ehr's e1, both holding ``status``."""
    base = Appointment(status=status, start=START, end=START + timedelta(minutes=30), patient="pat-1")
    held = base.to_json()
    crm = Link(canonical_id="A1", connector="crm", external_id="c1", version="v1", fingerprint=base.fingerprint(),
               modified_at=START - timedelta(hours=1), seen=held)
    ehr = Link(canonical_id="A1", connector="ehr", external_id="e1", version="w1", fingerprint=base.fingerprint(),
               modified_at=START - timedelta(hours=1), seen=held)
    row = AppointmentRow(canonical_id="A1", sync_group="clinic", snapshot=held, fingerprint=base.fingerprint())
    return _page({"c1": crm}, {"A1": row}, {"A1": [crm, ehr]}), base


def _ops(work: PageWork) -> list[tuple[str, str, str]]:
    return [(o.canonical_id, o.connector, o.op) for o in work.outbox]


def test_a_new_record_becomes_an_appointment_created_in_the_other_member() -> None:
    planner, stats = _planner()
    work = PageWork()
    planner.reconcile(_page(), _record("c1"), work)
    [(cid, row)] = work.appointments.items()
    assert row.snapshot is not None and row.snapshot["patient"] == "pat-1"  # canonical key, not crm's id
    assert _ops(work) == [(cid, "ehr", WriteKind.CREATE.value)]
    assert list(work.links) == [("crm", "c1")]
    assert stats.of("crm").changed == 1
    assert [(e.canonical_id, e.connector) for e in work.lineage] == [(cid, "crm")]


def test_a_cancelled_new_record_is_created_nowhere() -> None:
    planner, stats = _planner()
    work = PageWork()
    planner.reconcile(_page(), _record("c1", Status.CANCELLED), work)
    assert work.outbox == []
    assert [d.action for d in work.decisions] == ["create_skipped"]
    assert stats.of("ehr").unchanged == 1


def test_the_same_record_read_again_plans_nothing() -> None:
    planner, stats = _planner()
    page, _base = _linked_world()
    work = PageWork()
    planner.reconcile(page, _record("c1", modified=START), work)
    assert work.outbox == [] and work.appointments == {}
    assert [d.action for d in work.decisions] == ["unchanged"]
    assert stats.of("crm").unchanged == 1


def test_a_cancellation_is_planned_as_a_cancel_in_the_other_member() -> None:
    planner, stats = _planner()
    page, _base = _linked_world()
    work = PageWork()
    planner.reconcile(page, _record("c1", Status.CANCELLED), work)
    assert _ops(work) == [("A1", "ehr", WriteKind.CANCEL.value)]
    assert "status" in work.outbox[0].payload["changed"]
    snapshot = work.appointments["A1"].snapshot
    assert snapshot is not None and snapshot["status"] == "cancelled"
    assert stats.of("crm").changed == 1


def test_a_read_older_than_the_ledger_knows_is_a_stale_read_not_a_change() -> None:
    planner, _stats = _planner()
    page, _base = _linked_world()
    work = PageWork()
    planner.reconcile(page, _record("c1", Status.CANCELLED, modified=START - timedelta(hours=2)), work)
    assert work.outbox == []
    assert [(d.action, d.detail) for d in work.decisions] == [("unchanged", "stale read")]


def test_a_deletion_cancels_the_appointment_elsewhere_and_retires_the_link() -> None:
    planner, _stats = _planner()
    page, _base = _linked_world()
    work = PageWork()
    planner.reconcile(page, _record("c1", deleted=True), work)
    assert work.retire == [("crm", "c1")]
    assert _ops(work) == [("A1", "ehr", WriteKind.CANCEL.value)]


def test_a_deletion_of_a_terminal_appointment_changes_nothing() -> None:
    planner, stats = _planner()
    page, _base = _linked_world(Status.FULFILLED)
    work = PageWork()
    planner.reconcile(page, _record("c1", deleted=True), work)
    assert work.outbox == [] and stats.of("crm").unchanged == 1


def test_a_reference_without_a_crosswalk_entry_is_a_dead_letter_that_names_no_reference() -> None:
    planner, stats = _planner()
    work = PageWork()
    planner.reconcile(_page(), _record("c1", patient="crm-unknown-77"), work)
    assert work.outbox == [] and work.appointments == {}
    [letter] = work.dead_letters
    assert letter.kind == "missing_reference" and "crm-unknown-77" not in letter.reason
    assert stats.of("crm").dead_lettered == 1


def test_a_patient_change_is_a_replace_where_the_member_declares_it_cannot_change_patients() -> None:
    before = Appointment(status=Status.BOOKED, start=START, end=START + timedelta(minutes=30), patient="p1")
    after = before.with_changes(patient="p2")
    rigid = Members({"ehr": _member(patient_change=False)}, {})
    flexible = Members({"ehr": _member(patient_change=True)}, {})
    assert rigid.needs_replace("ehr", before, after) is not None
    assert flexible.needs_replace("ehr", before, after) is None
    assert rigid.needs_replace("ehr", before, after.with_changes(status=Status.CANCELLED)) is None
    assert rigid.needs_replace("ehr", before, before.with_changes(notes="x")) is None
