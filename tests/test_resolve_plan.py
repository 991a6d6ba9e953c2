"""The pure parts of ``conflicts resolve`` (syncd/engine/resolve.py): which fields a conflict settles
together, how the chosen value is taken, and what the operator is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.engine.resolve import Resolution, TargetPlan, shown, take_unit, unit_of, with_fields
from syncd.model import Appointment, Status

START = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
BASE = Appointment(status=Status.BOOKED, start=START, end=START + timedelta(minutes=30), patient="P-1",
                   notes="bring the x-rays")


def test_the_slot_and_the_status_with_its_reason_are_settled_as_units() -> None:
    assert unit_of("start") == unit_of("end") == ("start", "end")
    assert unit_of("status") == ("status", "cancellation_reason")
    assert unit_of("notes") == ("notes",)
    assert unit_of("target") == ("status", "cancellation_reason")  # a write conflict that names no field


def test_taking_a_status_carries_its_reason_and_a_live_status_drops_one() -> None:
    cancelled = BASE.with_changes(status=Status.CANCELLED, cancellation_reason="Patient request")
    took = take_unit(BASE, cancelled, unit_of("status"))
    assert isinstance(took, Appointment) and took.cancellation_reason == "Patient request"
    back = take_unit(cancelled, BASE, unit_of("status"))
    assert isinstance(back, Appointment) and back.status is Status.BOOKED and back.cancellation_reason is None
    moved = BASE.with_changes(start=START + timedelta(hours=1), end=START + timedelta(hours=2))
    slot = take_unit(BASE, moved, unit_of("start"))
    assert isinstance(slot, Appointment) and slot.duration == timedelta(hours=1) and slot.notes == BASE.notes


def test_an_impossible_combination_is_a_reason_not_an_exception() -> None:
    early = BASE.with_changes(start=START - timedelta(days=1), end=START - timedelta(days=1) + timedelta(minutes=5))
    result = with_fields(BASE, early, ["end"])  # an end before the start it would stand with
    assert isinstance(result, str) and "end must be after start" in result


def test_free_text_is_shown_only_as_length_and_digest() -> None:
    values = shown(BASE, ["notes", "start", "patient"])
    assert values["notes"].startswith(f"len={len(BASE.notes or '')} sha256:") and "x-rays" not in values["notes"]
    assert values == {"notes": values["notes"], "start": "2026-12-10T09:00:00Z", "patient": "P-1"}


def _refused(alternatives: tuple[str, ...]) -> Resolution:
    target = TargetPlan("zoho", "554", "update", ("notes",), refusal="holds the appointment Cancelled, which "
                                                                      "takes no change to notes")
    return Resolution(7, "A-1", "notes", "sf", BASE, (target, TargetPlan("sf", "08p", "none")),
                      alternatives=alternatives)


def test_a_refusal_names_the_system_its_reason_and_the_choice_that_works() -> None:
    one = _refused(("zoho",))
    assert one.refused and not one.writes
    text = one.message(dry_run=False)
    assert "cannot take sf's version: zoho holds the appointment Cancelled" in text
    assert "nothing was written; the conflict stays open; resolve with --take zoho to keep zoho's value" in text
    assert "--take zoho, --take dentally" in _refused(("zoho", "dentally")).message(dry_run=True)
    assert "no member's version can be written to every system" in _refused(()).message(dry_run=False)
    doc = one.as_json(dry_run=True)
    assert doc["refused"] is True and doc["alternatives"] == ["zoho"] and doc["dry_run"] is True
    assert doc["targets"][0]["refused"].startswith("holds the appointment Cancelled")


def test_a_plan_that_works_lists_every_member() -> None:
    plan = Resolution(7, "A-1", "notes", "zoho", BASE, (
        TargetPlan("zoho", "554", "none"),
        TargetPlan("sf", "08p", "update", ("notes",), {"notes": "len=3 sha256:a"}, {"notes": "len=5 sha256:b"}),
    ))
    assert not plan.refused and [t.connector for t in plan.writes] == ["sf"]
    text = plan.message(dry_run=True)
    assert "zoho 554: nothing to write" in text and "sf 08p: update notes len=3 sha256:a -> len=5 sha256:b" in text
    assert text.endswith("dry run: nothing was written")
    assert plan.reason() is None


def test_a_field_a_member_cannot_hold_is_named_not_refused() -> None:
    plan = TargetPlan("saludya", "apt_1", "none", not_written=("location",))
    assert plan.refusal is None
    assert plan.describe() == "saludya apt_1: nothing to write (location: not held or not written there)"
    assert plan.as_json()["not_written"] == ["location"]
