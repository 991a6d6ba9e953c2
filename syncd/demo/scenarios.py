"""The scripted steps: each makes one change as another user would, then waits until syncd has carried
it everywhere it must (or names what did not hold). The order and titles are the table in
:mod:`syncd.demo.script`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.demo.data import RECEPTION_NOTE, SALUDYA_BOOKING_ID
from syncd.demo.records import parse_time, zoho_time
from syncd.demo.roles import crm_service_location
from syncd.demo.story import Outcome, Story
from syncd.sandboxkit.seedgen import SeedDataset


async def _seeded_in_crm(
    story: Story, outcome: Outcome, index: int
) -> tuple[str, dict[str, str], datetime, datetime] | None:
    """Seeded appointment ``index``: its canonical id, its id in each member, and its start and end as the
    CRM holds them; None (the outcome settled as failed) when the CRM holds no readable record."""
    cid, ids = await story.ids_of(index)
    rec = await story.sandboxes.record(story.crm.crm, ids[story.crm.crm])
    start = parse_time(rec.get("Appointment_Start_Time") if rec else None)
    end = parse_time(rec.get("Appointment_End_Time") if rec else None)
    if start is None or end is None:
        await story.settle(outcome, f"{story.crm.crm} holds no readable appointment for {cid}", "")
        return None
    return cid, ids, start, end


async def _move_in_crm(story: Story, crm_id: str, start: datetime, end: datetime) -> None:
    """A CRM user moves record ``crm_id`` to ``start``-``end``."""
    await story.sandboxes.edit(
        story.crm.crm, crm_id, {"Appointment_Start_Time": zoho_time(start), "Appointment_End_Time": zoho_time(end)}
    )


# -- 1. reschedule in the CRM ----------------------------------------------------------------------
async def reschedule(story: Story, outcome: Outcome) -> None:
    crm, ehr, other = story.crm.names
    if (found := await _seeded_in_crm(story, outcome, 0)) is None:
        return
    cid, ids, start, end = found
    new_start, new_end = start + timedelta(hours=2), end + timedelta(hours=2)
    story.say(f"A receptionist moves appointment {cid} in {crm} (record {ids[crm]}) two hours later.")
    await _move_in_crm(story, ids[crm], new_start, new_end)

    async def check() -> str | None:
        e = await story.sandboxes.record(ehr, ids[ehr])
        o = await story.sandboxes.record(other, ids[other])
        if e is None or parse_time(e.get("start_time")) != new_start:
            return f"{ehr} {ids[ehr]} does not start at the new time"
        if o is None or parse_time(o.get("SchedStartTime")) != new_start:
            return f"{other} {ids[other]} does not start at the new time"
        return None

    why = await story.until(check, cid=cid)
    done = f"rescheduled in {crm} → {ehr} {ids[ehr]} and {other} {ids[other]} now start {new_start:%H:%M} UTC"
    await story.settle(outcome, why, done)


# -- 2. cancellation in the EHR --------------------------------------------------------------------
async def cancellation(story: Story, outcome: Outcome) -> None:
    crm, ehr, other = story.crm.names
    cid, ids = await story.ids_of(1)
    story.say(f"The patient calls the practice: appointment {cid} is cancelled in {ehr} (record {ids[ehr]}).")
    await story.sandboxes.edit(ehr, ids[ehr], {"state": "Cancelled", "cancellation_reason_id": 2})

    async def check() -> str | None:
        c = await story.sandboxes.record(crm, ids[crm])
        o = await story.sandboxes.record(other, ids[other])
        if c is None or c.get("Status") != "Cancelled":
            return f"{crm} {ids[crm]} is not cancelled"
        if o is None or o.get("Status") != "Canceled":
            return f"{other} {ids[other]} is not cancelled"
        return None

    why = await story.until(check, cid=cid)
    await story.settle(outcome, why, f"cancelled in {ehr} → {crm} {ids[crm]} Cancelled, {other} {ids[other]} Canceled")


# -- 3. GET/PUT race -------------------------------------------------------------------------------
async def race(story: Story, outcome: Outcome) -> None:
    crm, ehr, other = story.crm.names
    if (found := await _seeded_in_crm(story, outcome, 2)) is None:
        return
    cid, ids, start, end = found
    story.say(
        f"Appointment {cid} is moved an hour later in {crm}; while syncd writes it to {other}, "
        f"another {other} user edits its comment (a mutate_before fault on syncd's re-read right "
        f"before the write)."
    )
    why: str | None = None
    for attempt in range(1, 4):
        # The fault fires on the next batch read of that route; when one of the daemon's own polls
        # happens to take it first, the edit is an ordinary concurrent one (synced all the same), and
        # the race is staged again.
        note = RECEPTION_NOTE if attempt == 1 else f"{RECEPTION_NOTE} ({attempt})"
        new_start, new_end = start + timedelta(hours=attempt), end + timedelta(hours=attempt)
        since = time.monotonic()
        await story.sandboxes.fault(
            other,
            "GET",
            "/services/data/*/composite/sobjects/ServiceAppointment",
            {"type": "mutate_before", "id": ids[other], "changes": {"Comments": note}},
        )
        await _move_in_crm(story, ids[crm], new_start, new_end)

        async def converged(note: str = note, new_start: datetime = new_start) -> str | None:
            o = await story.sandboxes.record(other, ids[other])
            c = await story.sandboxes.record(crm, ids[crm])
            e = await story.sandboxes.record(ehr, ids[ehr])
            if o is None or parse_time(o.get("SchedStartTime")) != new_start:
                return f"{other} {ids[other]} lost the new time"
            if o.get("Comments") != note:
                return f"{other} {ids[other]} lost the concurrent edit (overwritten)"
            if c is None or c.get("Additional_Information") != note:
                return f"the concurrent edit did not reach {crm} {ids[crm]}"
            if e is None or e.get("notes") != note or parse_time(e.get("start_time")) != new_start:
                return f"{ehr} {ids[ehr]} did not receive both changes"
            return None

        why = await story.until(converged, cid=cid)
        if why is not None or story.feed.seen("retry", other, since):
            break
        why = f"syncd did not re-read and re-merge {other} {ids[other]} (a poll took the edit first)"
    kept = "the new time and the concurrent note both kept, in all three systems"
    done = f"race on {other} {ids[other]} → re-read and re-merged: {kept}"
    await story.settle(outcome, why, done)


# -- 4. patient change Dentally forbids ------------------------------------------------------------
async def patient_change(story: Story, outcome: Outcome) -> None:
    crm, ehr, other = story.crm.names
    cid, ids = await story.ids_of(3)
    current = story.dataset.appointments[3].patient
    new_patient = next(p.key for p in story.dataset.patients if p.key not in (current, story.missing_patient))
    contact = story.ref(crm, "patient", new_patient)
    ehr_patient = story.ref(ehr, "patient", new_patient)
    other_patient = story.ref(other, "patient", new_patient)
    if contact is None or ehr_patient is None or other_patient is None:
        await story.settle(outcome, f"no crosswalk entries for patient {new_patient}", "")
        return
    module, _, contact_id = contact.partition(":")
    story.say(
        f"The CRM user rebooks appointment {cid} ({crm} {ids[crm]}) for another family member, "
        f"patient {new_patient}; {ehr} forbids changing an appointment's patient."
    )
    await story.sandboxes.edit(
        crm, ids[crm], {"Appointment_For": {"module": module or "Contacts", "id": contact_id, "name": "-"}}
    )
    old_id = ids[ehr]
    replaced: list[str] = []

    async def check() -> str | None:
        new_id = (await story.links(ehr)).get(cid)
        if not new_id or new_id == old_id:
            return f"{ehr} still links {old_id} (no replacement)"
        old = await story.sandboxes.record(ehr, old_id)
        new = await story.sandboxes.record(ehr, new_id)
        if old is None or old.get("state") != "Cancelled" or old.get("cancellation_reason_id") != 1:
            return f"{ehr} {old_id} is not cancelled with reason 'Booked in error'"
        if new is None or str(new.get("patient_id")) != ehr_patient:
            return f"{ehr} {new_id} does not carry the new patient"
        if str((new.get("metadata") or {}).get("syncd_replaces")) != old_id:
            return f"{ehr} {new_id} does not name {old_id} as the appointment it replaces"
        if f"replaced by appointment {new_id}" not in str(old.get("notes") or ""):
            return f"{ehr} {old_id}'s notes do not point at {new_id}"
        o = await story.sandboxes.record(other, ids[other])
        if o is None or o.get("ParentRecordId") != other_patient:
            return f"{other} {ids[other]} does not carry the new patient"
        replaced.append(new_id)
        return None

    why = await story.until(check, cid=cid)
    new_id = replaced[-1] if replaced else "-"
    done = (
        f"{ehr} patient change → replaced: new {new_id}, old {old_id} cancelled "
        f"'Booked in error', crosswalk points at {new_id}; {other} updated in place"
    )
    await story.settle(outcome, why, done)


# -- 5. missing crosswalk entry --------------------------------------------------------------------
async def missing_crosswalk(story: Story, outcome: Outcome) -> None:
    other = story.crm.other
    patient = story.missing_patient
    index = next(i for i, a in enumerate(story.dataset.appointments) if a.patient == patient)
    story.say(
        f"Seeded appointment {story.seeded_id(index)} belongs to patient {patient}, who has no "
        f"{other} row in the crosswalk (left out on purpose)."
    )
    found: list[str] = []

    async def check() -> str | None:
        for letter in await story.dead_letters():
            reason = letter.reason
            if (
                letter.connector == other
                and letter.kind == "missing_reference"
                and "patient" in reason
                and patient in reason
                and other in reason
            ):
                found.append(reason)
                return None
        return f"no dead letter naming patient {patient} and {other}"

    why = await story.until(check, timeout=5.0)
    fix = "(fix: syncd crosswalk import, then syncd deadletters retry)"
    done = f'dead-lettered for {other}: "{found[0] if found else ""}" {fix}'
    await story.settle(outcome, why, done)


# -- 6. onboarding: bookings already typed by hand are linked, not copied --------------------------
async def onboarding(story: Story, outcome: Outcome) -> None:
    crm, ehr, other = story.crm.names
    typed = story.typed
    if typed is None:
        await story.settle(outcome, "no bookings were typed by hand before the start", "")
        return
    story.say(
        f"Before go-live, reception had typed {len(typed.both)} of {ehr}'s bookings into {crm} and "
        f"{other} by hand (no syncd reference), and one booking into {crm} only."
    )

    async def check() -> str | None:
        links = {name: await story.links(name) for name in (crm, ehr, other)}
        for position, index in enumerate(typed.both):
            cid = await story.link_of(ehr, story.seeded_id(index))
            if cid is None:
                return f"{ehr} {story.seeded_id(index)} is not linked to an appointment"
            for name in (crm, other):
                mine = typed.ids[name][position]
                if links[name].get(cid) != mine:
                    return f"{name} record {mine} is not the one linked to appointment {cid} (copied?)"
        cid = await story.link_of(crm, typed.crm_only_id)
        if cid is None:
            return f"{crm} record {typed.crm_only_id} is not linked to an appointment"
        for name in (ehr, other):
            if cid not in links[name]:
                return f"{crm}'s booking {cid} was not created in {name}"
        return None

    why = await story.until(check)
    linked = sum(story.feed.counts[name]["linked"] for name in (crm, other))
    done = (
        f"{linked} records typed by hand in {crm} and {other} linked to {ehr}'s "
        f"bookings (no copies); the {crm}-only booking created in {ehr} and "
        f"{other} once"
    )
    await story.settle(outcome, why, done)


# ----------------------------------------------------------------------------------------- SaludYa


def _saludya_booking(dataset: SeedDataset, zone: str) -> tuple[dict[str, Any], str, datetime]:
    """A booking a SaludYa receptionist makes (SaludYa's own ids left to the caller): tomorrow evening in
    the clinic's zone, off the seeded slot grid, within SaludYa's hot scan window (today and tomorrow).
    Returns the record without ids, the service key whose name is its specialty, and its start (UTC)."""
    service = dataset.services[1 % len(dataset.services)]
    tz = ZoneInfo(zone)
    tomorrow = (datetime.now(tz) + timedelta(days=1)).date()
    local = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 18, 30, tzinfo=tz)
    record = {
        "specialty": service.name,
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M"),
        "duration_minutes": service.minutes,
        "status": "confirmed",
        "reason": None,
        "notes": None,
    }
    return record, service.key, local.astimezone(UTC)


async def saludya_booking_reaches_crm(story: Story, outcome: Outcome) -> None:
    """Scenario: a receptionist books in SaludYa; the CRM gets it with the service its specialty maps to
    (read-only in SaludYa, read all the same) and the group's default location (SaludYa stores none)."""
    target, dataset = story.saludya, story.saludya_dataset
    if target is None or dataset is None:
        await story.settle(outcome, "no sync group with a SaludYa member and a CRM it creates in", "")
        return
    sy, crm = target.saludya, target.crm
    patient, doctor = dataset.patients[0].key, dataset.practitioners[0].key
    sy_patient, sy_doctor = story.ref(sy, "patient", patient), story.ref(sy, "practitioner", doctor)
    if sy_patient is None or sy_doctor is None:
        await story.settle(outcome, f"no {sy} crosswalk entries for patient {patient} / practitioner {doctor}", "")
        return
    record, service, start = _saludya_booking(dataset, story.config.connectors[sy].timezone)
    record.update({"id": SALUDYA_BOOKING_ID, "patient_id": sy_patient, "doctor_id": sy_doctor})
    default = story.config.connectors[sy].default_location
    want_service = story.ref(crm, "service", service)
    want_location = story.ref(crm, "location", default) if default else None
    story.say(
        f"A receptionist books appointment {SALUDYA_BOOKING_ID} in {sy} with the specialty of service "
        f"{service} (read-only there: only {sy}'s users set it); {sy} stores no location, its "
        f"default_location is {default or 'not set'}."
    )
    await story.sandboxes.control(sy, "POST", "/_sandbox/records", {"records": [record]})
    found: list[str] = []

    async def check() -> str | None:
        cid = next((c for c, ext in (await story.links(sy)).items() if ext == SALUDYA_BOOKING_ID), None)
        if cid is None:
            return f"{sy} {SALUDYA_BOOKING_ID} was not read yet"
        crm_id = (await story.links(crm)).get(cid)
        rec = await story.sandboxes.record(crm, crm_id) if crm_id else None
        if rec is None or crm_id is None:
            return f"{crm} holds no appointment for {cid}"
        got = crm_service_location(story.config.connectors[crm].type, rec)
        if got is None:
            return f"{crm}: its vendor declares no sandbox record fields"
        if parse_time(got[2]) != start:
            return f"{crm} {crm_id} does not start at the booked time"
        if got[0] != want_service:
            return f"{crm} {crm_id} does not carry service {service} ({want_service})"
        if default and got[1] != want_location:
            return f"{crm} {crm_id} is not at the default location {default}"
        found[:] = [cid, crm_id]
        return None

    why = await story.until(check)
    cid, crm_id = found if found else ("-", "-")
    where = f" at {default}" if default else ""
    done = f"booked in {sy} ({SALUDYA_BOOKING_ID}) → {crm} {crm_id} created for {cid} with service {service}{where}"
    await story.settle(outcome, why, done)
