"""Running one example of a convergence property (tests/scenarios/test_convergence.py, the three-member
CRM/EHR group; tests/scenarios/test_soak_saludya.py, CRM/SaludYa/CRM): the steps, their trace, the
world's set-up, the edits and faults a step makes, the resync passes, the ledger's view afterwards.

What differs between the two properties (their members, how steps are drawn, the edits only one of them
makes, the checks) stays in the test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import event, note

from syncd.engine.onboard import LINK_FIELD
from syncd.ledger.models import metadata
from syncd.ledger.store import Ledger
from syncd.model import Appointment
from tests.scenarios.convergence_support import FaultSpot, RecordView, VendorAdapter, expected_status
from tests.scenarios.harness import World

N_INITIAL, N_EXTRA = 4, 2
"""Appointments seeded in the first member, and the seed appointments left for ``new`` steps."""
MAX_QUIET_PASSES = 6
EXAMPLE_TIMEOUT = 40.0
NOTES = ("Call before visit", "Wheelchair access", "Reminder sent", "Bring referral letter")
FAULTS = ("status_write", "status_read", "rate_limit_write", "rate_limit_read", "drop_create", "mutate_update")
WRITE_KINDS = ("created", "updated", "cancelled")

Adapters = Mapping[str, VendorAdapter]
"""vendor type -> how the properties read and edit its sandbox records"""
CustomEdit = Callable[["Step", dict[str, Any], str], Awaitable[str | None]]
"""An edit only one property makes: ``(step, record, external id)`` -> None once made, else why skipped."""


@dataclass(frozen=True)
class Step:
    op: str
    member: str = ""
    slot: int = 0
    arg: int = 0

    def __repr__(self) -> str:
        return "resync" if self.op == "resync" else f"{self.op}({self.member}, slot={self.slot}, arg={self.arg})"


@dataclass
class Trace:
    """What happened while running one example (for the accounting and for failure messages)."""

    passes: list[dict[str, Any]] = field(default_factory=list)
    replaced: Counter[str] = field(default_factory=Counter)
    faults_added: dict[str, Counter[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(Counter))
    new_used: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.lines.append(text)
        note(text)


# -- set-up ----------------------------------------------------------------------------------------

async def fresh_ledger_url(base_url: str, tmp: Path) -> str:
    """A fresh ledger for one example: a new SQLite file, or the test's PostgreSQL database emptied."""
    if base_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp / 'ledger.db'}"
    ledger = await Ledger.open(base_url)
    try:
        await ledger.upgrade()
        async with ledger.transaction() as tx:
            for table in reversed(metadata.sorted_tables):
                await tx.conn.execute(sa.delete(table))
    finally:
        await ledger.close()
    return base_url


async def seed_member(world: World, adapters: Adapters, name: str, n_appointments: int) -> None:
    """Seed ``name`` with the reference data and the first ``n_appointments`` appointments."""
    vendor = world.types[name]
    adapter = adapters[vendor]
    body, rows = importlib.import_module(f"connectors.{vendor}.sandbox").seed_body(world.dataset)
    kept = [r for r in body.get("records", []) if adapter.is_appointment(r)][:n_appointments]
    body = {**body, "records": [r for r in body.get("records", []) if not adapter.is_appointment(r)] + kept}
    await world.control(name, "POST", "/_sandbox/records", body)
    world.crosswalk[name] = [r for r in rows if r[0] != "appointment"]


async def first_sync(world: World, adapters: Adapters, holder: str, trace: Trace) -> None:
    """Seed ``holder`` with ``N_INITIAL`` appointments and every other member with reference data only,
    import the crosswalk, and check the first pass creates every appointment in every other member."""
    await seed_member(world, adapters, holder, N_INITIAL)
    others = [name for name in world.types if name != holder]
    for name in others:
        await seed_member(world, adapters, name, 0)
    await world.import_crosswalk()
    first = await resync(world, trace)
    for name in others:
        assert first["connectors"][name]["created"] == N_INITIAL, first


# -- steps -----------------------------------------------------------------------------------------

async def live_records(world: World, adapters: Adapters, name: str) -> list[dict[str, Any]]:
    adapter = adapters[world.types[name]]
    return sorted((r for r in await world.records(name) if adapter.is_appointment(r) and not r.get("_deleted_at")),
                  key=adapter.external_id)


async def apply_edit(
    world: World, adapters: Adapters, step: Step, trace: Trace, custom: CustomEdit | None = None
) -> None:
    """Another user's edit in ``step.member``: a new booking, or a change to one open record (``custom``
    makes the edits only one property has, ``notes`` included when it takes them)."""
    name = step.member
    adapter = adapters[world.types[name]]
    if step.op == "new":
        extras = [a.key for a in world.dataset.appointments[N_INITIAL:] if a.key not in trace.new_used]
        if not extras:
            trace.log(f"{step!r}: skipped (no unused seed appointment left)")
            return
        key = extras[step.arg % len(extras)]
        trace.new_used.add(key)
        await world.control(name, "POST", "/_sandbox/records", {"records": [adapter.new_record(world.dataset, key)]})
        trace.log(f"{step!r}: new appointment for seed {key}")
        return
    live = [r for r in await live_records(world, adapters, name) if not adapter.is_terminal(r)]
    if not live:
        trace.log(f"{step!r}: skipped (no open record)")
        return
    rec = live[step.slot % len(live)]
    rid = adapter.external_id(rec)
    skipped: str | None = None
    if step.op == "delete":
        await world.control(name, "POST", "/_sandbox/records", {"delete": [rec.get("id", rec.get("Id"))]})
    elif step.op == "cancel":
        await world.edit(name, rid, adapter.cancel())
    elif step.op == "reschedule":
        if adapter.can_reschedule(rec):
            await world.edit(name, rid, adapter.reschedule(rec, 1 + step.arg % 3))
        else:
            skipped = f"{rid} cannot be rescheduled in its state"
    elif custom is not None:
        skipped = await custom(step, rec, rid)
    elif step.op == "notes":
        await world.edit(name, rid, adapter.notes(NOTES[step.arg % len(NOTES)]))
    trace.log(f"{step!r}: skipped ({skipped})" if skipped else f"{step!r}: {step.op} {rid}")


async def apply_fault(world: World, adapters: Adapters, step: Step, trace: Trace) -> None:
    """Arm one one-shot fault in ``step.member`` (a vendor without a rate-limit signal gets a 503)."""
    name = step.member
    adapter = adapters[world.types[name]]
    kind = FAULTS[step.slot % len(FAULTS)]
    spot: FaultSpot
    action: dict[str, Any]
    if kind.startswith("rate_limit") and not adapter.rate_limit_ok:
        kind = kind.replace("rate_limit", "status")
    if kind == "status_write":
        spot, action = adapter.any_write[step.slot % len(adapter.any_write)], {"type": "status", "status": 503}
    elif kind == "status_read":
        spot, action = adapter.read, {"type": "status", "status": 503}
    elif kind == "rate_limit_write":
        spot, action = adapter.update, {"type": "rate_limit", "retry_after": 1}
    elif kind == "rate_limit_read":
        spot, action = adapter.read, {"type": "rate_limit", "retry_after": 1}
    elif kind == "drop_create":
        spot, action = adapter.create, {"type": "drop_after_apply"}
    else:
        changes = adapter.notes(f"Edited during sync {step.slot}")
        spot, action = adapter.update, {"type": "mutate_before", "changes": changes}
    await world.fault(name, spot.method, spot.path, action)
    trace.faults_added[name][(spot.method, spot.path, str(action["type"]))] += 1
    trace.log(f"{step!r}: fault {action['type']} on {spot.method} {spot.path}")


async def resync(world: World, trace: Trace) -> dict[str, Any]:
    """One ``syncd resync`` pass, traced (its document, the replace flows it ran)."""
    result = await world.resync()
    doc = result.document
    trace.passes.append(doc)
    trace.replaced.update(d.connector for d in result.decisions if d.action == "replaced")
    writes = {n: {k: c[k] for k in WRITE_KINDS if c[k]} for n, c in doc["connectors"].items()}
    trace.log(f"resync -> exit {result.exit_code}, writes {writes}, dead letters {doc['dead_letters']}, "
              f"conflicts {doc['open_conflicts']}, stopped {doc.get('stopped')}")
    return doc


def quiet(doc: dict[str, Any]) -> bool:
    return all(c[k] == 0 for c in doc["connectors"].values() for k in WRITE_KINDS) and not doc.get("stopped")


async def play(
    world: World, adapters: Adapters, steps: Sequence[Step], trace: Trace, custom: CustomEdit | None = None
) -> None:
    """Make ``steps`` in order, then resync until a pass writes nothing (at most ``MAX_QUIET_PASSES``).
    Leftover faults stay armed: they are one-shot, and the passes after the steps are where they fire."""
    for step in steps:
        if step.op == "resync":
            await resync(world, trace)
        elif step.op == "fault":
            await apply_fault(world, adapters, step, trace)
        else:
            await apply_edit(world, adapters, step, trace, custom)
    for n in range(1, MAX_QUIET_PASSES + 1):
        if quiet(await resync(world, trace)):
            event(f"quiet after {n} pass(es)")
            return
    raise AssertionError(f"no quiet pass after {MAX_QUIET_PASSES} resyncs: {trace.passes[-1]}")


async def fired_faults(world: World, name: str, trace: Trace) -> Counter[tuple[str, str, str]]:
    """The faults armed in ``name`` that fired (armed minus those still waiting)."""
    left = (await world.control(name, "GET", "/_sandbox/faults"))["faults"]
    remaining = Counter((f["match"]["method"], f["match"]["path"], str(f["action"]["type"])) for f in left)
    return trace.faults_added[name] - remaining


async def disarm_faults(world: World, trace: Trace) -> None:
    """Remove every fault still armed; ``trace.faults_added`` then holds the ones that fired."""
    for name in world.types:
        trace.faults_added[name] = await fired_faults(world, name, trace)
        await world.control(name, "DELETE", "/_sandbox/faults")


async def guarded(work: Coroutine[Any, Any, None]) -> None:
    """Run one example with a time limit; a hang fails with the stack of every task still waiting."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=EXAMPLE_TIMEOUT)
    if task in done:
        task.result()
        return
    stacks = []
    for other in asyncio.all_tasks():
        if other is not asyncio.current_task():
            buf = io.StringIO()
            other.print_stack(limit=12, file=buf)
            stacks.append(buf.getvalue())
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise AssertionError(f"example still running after {EXAMPLE_TIMEOUT} s; waiting tasks:\n" + "\n".join(stacks))


# -- the ledger afterwards -------------------------------------------------------------------------

@dataclass
class LedgerView:
    snapshots: dict[str, Appointment]
    links: dict[str, list[Any]]
    retired: set[tuple[str, str]]
    crosswalk: dict[tuple[str, str, str], str]
    conflicted: set[str]
    dead: set[str]
    outbox: list[Any]
    undecided: set[tuple[str, str]] = field(default_factory=set)
    """(connector, external id) of records an open link conflict names: onboarding could not tell which
    appointment they are (e.g. a booking typed at the slot another one was just moved to)."""


async def ledger_view(world: World) -> LedgerView:
    ledger = await world.ledger()
    try:
        async with ledger.transaction(readonly=True) as tx:
            all_links = await tx.all_links(include_retired=True)
            cids = {lk.canonical_id for lk in all_links}
            rows = await tx.appointments(cids)
            entries = await tx.crosswalk_entries()
            conflicts = await tx.conflicts()
            letters = await tx.dead_letters()
            outbox = await tx.outbox_pending(limit=100_000, states=("pending", "sending", "done", "failed"))
    finally:
        await ledger.close()
    links: dict[str, list[Any]] = defaultdict(list)
    for lk in all_links:
        if not lk.retired:
            links[lk.canonical_id].append(lk)
    return LedgerView(
        snapshots={cid: Appointment.from_json(row.snapshot) for cid, row in rows.items() if row.snapshot},
        links=dict(links),
        retired={(lk.connector, lk.external_id) for lk in all_links if lk.retired},
        crosswalk={(e.kind, e.key, e.connector): e.external_id for e in entries},
        conflicted={c.canonical_id for c in conflicts},
        dead={d.canonical_id for d in letters if d.canonical_id},
        outbox=list(outbox),
        undecided={(str(c.values.get("connector")), str(ext)) for c in conflicts if c.field == LINK_FIELD
                   for ext in c.values.get("records", [])},
    )


async def record_views(world: World, adapters: Adapters) -> dict[str, dict[str, RecordView]]:
    """member -> external id -> the adapter's view of each of its appointment records."""
    views: dict[str, dict[str, RecordView]] = {}
    for name, vendor in world.types.items():
        adapter = adapters[vendor]
        views[name] = {adapter.external_id(r): adapter.view(r)
                       for r in await world.records(name) if adapter.is_appointment(r)}
    return views


# -- checks both properties make -------------------------------------------------------------------

def check_links(
    lv: LedgerView, views: Mapping[str, Mapping[str, RecordView]], members: Sequence[str], *, allow_undecided: bool
) -> None:
    """(1) one live link per member, every vendor record linked, no canonical reference twice.
    ``allow_undecided``: a record an open link conflict names may stay unlinked (it waits for a person)."""
    linked: dict[tuple[str, str], str] = {}
    for cid, links in lv.links.items():
        per_member = Counter(lk.connector for lk in links)
        assert all(n == 1 for n in per_member.values()), f"{cid}: several live links {per_member}"
        linked.update({(lk.connector, lk.external_id): cid for lk in links})
        snapshot = lv.snapshots.get(cid)
        assert snapshot is not None, f"{cid}: linked but no ledger snapshot"
        missing = set(members) - set(per_member)
        if snapshot.status.creatable and cid not in lv.conflicted | lv.dead:
            assert not missing, f"{cid} ({snapshot.status}) has no record in {sorted(missing)}"
    for name, by_id in views.items():
        refs: Counter[str] = Counter()
        for rid, view in by_id.items():
            if (name, rid) in lv.retired:
                continue
            if view.deleted and (name, rid) not in linked:
                continue  # created and deleted by its users before syncd ever read it: nothing to sync
            if allow_undecided and (name, rid) in lv.undecided and (name, rid) not in linked:
                continue  # listed by `conflicts list`: which appointment it is waits for a person
            assert (name, rid) in linked, f"{name} record {rid} is linked to no canonical appointment"
            if view.reference is not None and not view.deleted:
                refs[view.reference] += 1
                assert view.reference == linked[(name, rid)], (
                    f"{name} {rid} carries reference {view.reference} but is linked to {linked[(name, rid)]}")
        dupes = {ref: n for ref, n in refs.items() if n > 1}
        assert not dupes, f"{name}: several live records carry one canonical reference: {dupes}"


def checked_values(
    world: World, lv: LedgerView, views: Mapping[str, Mapping[str, RecordView]]
) -> Iterator[tuple[Appointment, Any, RecordView, str]]:
    """(2) every linked record outside an open conflict or dead letter exists, is deleted only when the
    ledger's appointment is over, and holds the ledger's status, start and notes. Yields (snapshot,
    link, view, where) of each live one, for the property's own checks of what that member holds."""
    for cid, links in lv.links.items():
        snapshot = lv.snapshots[cid]
        if cid in lv.conflicted or cid in lv.dead:
            continue  # listed by `conflicts list` / `deadletters list`: allowed to differ
        for lk in links:
            view = views[lk.connector].get(lk.external_id)
            where = f"{cid} in {lk.connector} ({lk.external_id})"
            assert view is not None, f"{where}: no such record"
            if view.deleted:
                assert snapshot.status.terminal, f"{where} was deleted but the ledger holds {snapshot.status}"
                continue
            assert view.status == expected_status(world.types[lk.connector], snapshot.status.value), (
                f"{where}: status {view.status}, ledger {snapshot.status.value}")
            assert snapshot.start is not None and view.start == snapshot.start, (
                f"{where}: start {view.start.isoformat()}, ledger {snapshot.start}")
            assert view.notes == (snapshot.notes or None), f"{where}: notes differ from the ledger"
            yield snapshot, lk, view, where
