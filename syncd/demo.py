"""``syncd demo``: the five vendor sandboxes and the real daemon in one process, with a scripted story.

What it does, in order (about 30 seconds):

1. starts one built-in sandbox per configured connector on a free port (their rate limits relaxed,
   the figures real vendors enforce stay the sandboxes' defaults), so it never collides with a
   running ``syncd sandbox``;
2. derives a temporary copy of the configuration: same connectors, groups and owners, but every
   ``base_url`` pointing at its sandbox, the sandboxes' documented credentials, a 1-second
   ``poll_interval``, a high ``max_requests_per_second`` and a fresh SQLite ledger in a temporary
   directory (removed at the end unless ``--keep``);
3. seeds invented, realistic appointments into one system of each sync group (Dentally for the
   CRM/EHR group), reference data (patients, practitioners, sites, services) into every system, and
   imports the crosswalk -- leaving out one patient's Salesforce row on purpose; as at a real go-live,
   a few of Dentally's bookings were also typed by hand into Zoho and Salesforce (no syncd reference),
   and one booking into Zoho only;
4. runs the daemon (:func:`syncd.daemon.run_daemon`, the same code as ``syncd run``): its first sync
   links the hand-typed records instead of copying them (onboarding), and while it polls the demo
   makes five scripted changes as other users would: a reschedule in the CRM, a cancellation in the
   EHR, a GET/PUT race on a target's write, a patient change that Dentally forbids in place, and the
   missing crosswalk entry from step 3; then, in the SaludYa group, a booking born in SaludYa that
   must reach its CRM with its service type (SaludYa's read-only specialty) and the group's
   ``default_location``;
5. checks each outcome (the onboarding one too) by reading the sandboxes' and the ledger's state,
   prints a summary and exits 0 when all hold (1 otherwise, naming what did not).

The live view is built from the daemon's own structured log (the ``sync_decision`` events, which carry
ids, connector names and field names only), so it shows exactly what ``syncd run`` decides. The JSON
log lines themselves go to ``syncd-demo.log`` in the temporary directory, not to the terminal. Nothing
printed here is patient data: appointments are named by ids, changes by field names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from syncd import registry
from syncd.config import Config, ConnectorConfig, LedgerConfig, LogConfig, ServerConfig, SyncGroup
from syncd.crosswalk import import_rows, parse_csv
from syncd.daemon import run_daemon
from syncd.ledger.store import Ledger
from syncd.logging import configure_logging
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.sandboxkit.seedgen import SeedAppointment, SeedDataset, crosswalk_csv, generate
from syncd.secret import Secret

__all__ = [
    "CRM_APPOINTMENTS",
    "OTHER_APPOINTMENTS",
    "SEED",
    "DemoError",
    "demo_datasets",
    "run_demo",
]

SEED = 11
"""Seed of the invented data set (deterministic names, so that tests can check none is printed)."""
CRM_APPOINTMENTS = 10
OTHER_APPOINTMENTS = 5
POLL_SECONDS = 1.0
REQUESTS_PER_SECOND = 100.0
STEP_TIMEOUT = 15.0
ECHO_WINDOW = 5.0
"""An unchanged read this soon after syncd's own write to that record is shown as its echo."""
"""How long one scripted step may take to converge before it is reported as not holding."""
RECEPTION_NOTE = "Patient will arrive ten minutes late"
"""The concurrent edit of the race scenario (written into a sandbox, never printed)."""

# The sandboxes' documented credentials (docs/vendors/README.md "Sandbox options and credentials") come
# from the vendor registry (each key's ``sandbox`` value): the demo never sends a configured credential
# anywhere, so a production config cannot leak into it. So do the vendors' roles (which member of a group
# holds the seeded appointments: the clinical system first; which ones are CRMs) and where a sandbox
# record keeps its service, location and start.
CREATABLE = ("proposed", "pending", "booked")
SALUDYA_BOOKING_ID = "apt_demonewbooking1"

ACTION_STYLE = {
    "created": ("green", "created"),
    "updated": ("cyan", "updated"),
    "cancelled": ("yellow", "cancelled"),
    "replaced": ("magenta", "replaced"),
    "dead_letter": ("red", "dead-letter"),
    "conflict": ("red", "conflict"),
    "retry": ("bright_magenta", "re-merge"),
    "create_skipped": ("dim", "not created"),
    "echo": ("dim", "echo ignored"),
    "linked": ("bright_green", "linked"),
}
ACTION_HELP = {
    "created": "new appointment written",
    "updated": "change carried over",
    "cancelled": "cancellation carried over",
    "replaced": "created anew, old one cancelled (vendor forbids the change in place)",
    "dead_letter": "could not be synced: parked with a reason",
    "conflict": "no policy settled it: left for an operator",
    "retry": "target changed under our write: re-read, re-merged, retried",
    "create_skipped": "status not creatable in the target",
    "echo": "our own write read back: not a new change",
    "linked": "already there (typed by hand, or made by syncd before): linked, not copied",
}


class DemoError(Exception):
    """The configuration cannot run the scripted story (names what is missing)."""


# ----------------------------------------------------------------------------------------- data


def demo_datasets(now: datetime) -> tuple[SeedDataset, SeedDataset]:
    """The CRM/EHR group's data set (tuned for the five scenarios) and the other groups' data set.

    Names and contact details depend on :data:`SEED` only, never on ``now``.
    """
    crm = generate(CRM_APPOINTMENTS, seed=SEED, now=now, locations=1)
    patients = crm.patients
    shared = patients[:-1]
    appointments: list[SeedAppointment] = []
    for index, appt in enumerate(crm.appointments):
        if index == len(crm.appointments) - 1:
            patient = patients[-1].key  # the missing-crosswalk patient: this appointment only
        else:
            patient = shared[index % len(shared)].key
        status = "pending" if index in (0, 2) else appt.status  # Pending in Dentally: times editable
        if index in (1, 3):
            status = "booked"
        appointments.append(dataclasses.replace(appt, patient=patient, status=status))
    crm = dataclasses.replace(crm, appointments=tuple(appointments))
    other = generate(OTHER_APPOINTMENTS, seed=SEED + 1, now=now, locations=1)
    return crm, other


def _is_appointment(record: Mapping[str, Any]) -> bool:
    attrs = record.get("attributes")
    if isinstance(attrs, Mapping):
        return attrs.get("type") == "ServiceAppointment"
    return True


def _record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("Id", record.get("id")))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _zoho_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _short(value: str | None, width: int = 12) -> str:
    if not value:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"


# ----------------------------------------------------------------------------------------- config


def demo_config(base: Config, urls: Mapping[str, str], ledger_path: Path) -> Config:
    """``base`` pointed at the sandboxes (``urls``: connector name -> URL), with demo timings."""
    connectors: dict[str, ConnectorConfig] = {}
    for name, cfg in base.connectors.items():
        url = urls[name]
        sandbox_auth = registry.get(cfg.type).sandbox_auth(url)
        auth: dict[str, Secret] = {k: Secret(v) for k, v in sandbox_auth.items() if k in cfg.auth}
        connectors[name] = dataclasses.replace(
            cfg,
            base_url=url,
            poll_interval=POLL_SECONDS,
            max_requests_per_second=REQUESTS_PER_SECOND,
            webhook_secret=Secret("sandbox-webhook-secret") if cfg.webhook_secret is not None else None,
            auth=MappingProxyType(auth),
        )
    return dataclasses.replace(
        base,
        ledger=LedgerConfig(url=f"sqlite+aiosqlite:///{ledger_path}"),
        server=ServerConfig(host="127.0.0.1", port=0, max_body_bytes=base.server.max_body_bytes),
        # debug: the live view shows echoes, which are the `unchanged` decisions (logged at debug)
        log=LogConfig(level="debug", format="json"),
        connectors=MappingProxyType(connectors),
        path=None,
    )


@dataclass(frozen=True)
class CrmGroup:
    """The CRM/EHR group the five scenarios run in: connector names by role."""

    group: SyncGroup
    crm: str
    """zoho_crm: the reschedule, the race's origin and the patient change are made here"""
    ehr: str
    """dentally: holds the seeded appointments; the cancellation is made here"""
    other: str
    """salesforce_health: the race's target and the missing crosswalk entry"""


def find_crm_group(config: Config) -> CrmGroup:
    for group in config.sync:
        by_type = {config.connectors[m].type: m for m in group.members}
        if {"zoho_crm", "dentally", "salesforce_health"} <= set(by_type):
            missing = [by_type[t] for t in ("zoho_crm", "dentally", "salesforce_health")
                       if by_type[t] not in group.create_in]
            if missing:
                raise DemoError(f"sync group {group.name}: the demo needs create_in to include {', '.join(missing)}")
            return CrmGroup(group, by_type["zoho_crm"], by_type["dentally"], by_type["salesforce_health"])
    raise DemoError("the demo needs a [[sync]] group with a zoho_crm, a dentally and a salesforce_health member "
                    "(as in the repository's config.toml)")


# ----------------------------------------------------------------------------------------- live feed


@dataclass
class Event:
    at: float
    action: str
    connector: str
    canonical_id: str | None
    external_id: str | None
    fields: tuple[str, ...]


class LogTap(io.TextIOBase):
    """Stands in for ``sys.stderr`` while the daemon runs: every JSON log line goes to ``sink`` and
    its ``sync_decision`` events are handed to ``on_decision``."""

    def __init__(self, sink: TextIO, on_decision: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._sink = sink
        self._on_decision = on_decision
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._sink.write(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._parse(line)
        return len(text)

    def flush(self) -> None:
        self._sink.flush()

    def _parse(self, line: str) -> None:
        if not line.startswith("{") or "sync_decision" not in line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("event") == "sync_decision":
            self._on_decision(event)


class Feed:
    """The decisions the daemon made, printed as they come, and counted per connector."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.events: list[Event] = []
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.started = time.monotonic()
        self._written: dict[tuple[str, str], float] = {}
        self.quiet = False
        self.last = time.monotonic()

    def on_decision(self, raw: Mapping[str, Any]) -> None:
        action = str(raw.get("op") or "")
        connector = str(raw.get("connector") or "")
        external = raw.get("external_id")
        fields_raw = raw.get("fields")
        fields = tuple(str(f) for f in fields_raw) if isinstance(fields_raw, list) else ()
        now = time.monotonic()
        if action == "unchanged":
            written = self._written.pop((connector, str(external)), None)
            # a record syncd itself wrote a moment ago, read back by the next poll: echo suppression
            if written is None or now - written > ECHO_WINDOW:
                self.counts[connector]["unchanged"] += 1
                return
            action = "echo"
        event = Event(now, action, connector, _opt(raw.get("canonical_id")), _opt(external), fields)
        self.events.append(event)
        self.last = now
        self.counts[connector][action] += 1
        if action in ("created", "updated", "cancelled", "replaced") and external is not None:
            self._written[(connector, str(external))] = now
        if not self.quiet:
            self.console.print(self.render(event))

    def render(self, event: Event) -> Text:
        style, label = ACTION_STYLE.get(event.action, ("white", event.action))
        line = Text()
        line.append(f"  {event.at - self.started:5.1f}s ", style="dim")
        line.append(f"{event.connector:<9}", style="bold")
        line.append(f"{label:<13}", style=style)
        line.append(f"appt {_short(event.canonical_id, 14):<15}", style="blue")
        line.append(f"ext {_short(event.external_id, 20):<21}")
        if event.fields:
            line.append(", ".join(event.fields), style="italic")
        return line

    async def settled(self, idle: float = 1.5, limit: float = 5.0) -> None:
        """Wait until no decision came for ``idle`` seconds (at most ``limit``): the echoes of a step's
        writes then print under that step."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and time.monotonic() - self.last < idle:
            await asyncio.sleep(0.1)

    def seen(self, action: str, connector: str, since: float = 0.0) -> bool:
        return any(e.action == action and e.connector == connector and e.at >= since for e in self.events)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


# ----------------------------------------------------------------------------------------- sandboxes


class Sandboxes:
    """The running sandboxes, driven through their control API as another user would."""

    def __init__(self, running: Mapping[str, RunningSandbox]) -> None:
        self.running = dict(running)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sandboxes:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def control(self, name: str, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        async with self.session.request(method, self.running[name].url + path, json=body) as answer:
            text = await answer.text()
            if answer.status >= 300:
                raise DemoError(f"{name} sandbox: {method} {path} answered {answer.status}")
            return json.loads(text) if text else None

    async def appointments(self, name: str) -> list[dict[str, Any]]:
        records = (await self.control(name, "GET", "/_sandbox/records"))["records"]
        return [r for r in records if _is_appointment(r) and not r.get("_deleted_at")]

    async def record(self, name: str, external_id: str) -> dict[str, Any] | None:
        for rec in (await self.control(name, "GET", "/_sandbox/records"))["records"]:
            if _record_id(rec) == external_id:
                return dict(rec)
        return None

    async def edit(self, name: str, external_id: str, changes: Mapping[str, Any]) -> None:
        """Another user edits the record in the vendor's system (bumps its version)."""
        full = await self.record(name, external_id)
        if full is None:
            raise DemoError(f"{name} has no appointment {external_id}")
        key = "Id" if "Id" in full else "id"
        rec: dict[str, Any] = {key: full[key]}
        if "attributes" in full:
            rec["attributes"] = {"type": full["attributes"]["type"]}
        rec.update(changes)
        await self.control(name, "POST", "/_sandbox/records", {"records": [rec]})

    async def fault(self, name: str, method: str, path: str, action: Mapping[str, Any], times: int = 1) -> None:
        await self.control(name, "POST", "/_sandbox/faults",
                           {"match": {"method": method, "path": path}, "times": times, "action": dict(action)})


# ----------------------------------------------------------------------------------------- the story


@dataclass
class Outcome:
    number: int
    title: str
    ok: bool = False
    detail: str = "not run"


@dataclass
class Story:
    console: Console
    config: Config
    crm: CrmGroup
    sandboxes: Sandboxes
    feed: Feed
    dataset: SeedDataset
    crosswalk: dict[str, list[tuple[str, str, str]]]
    missing_patient: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """set when the daemon stops (Ctrl-C): pending checks give up at once"""
    typed: TypedByHand | None = None
    """the bookings staff typed by hand before go-live (the onboarding scenario)"""

    async def links(self, connector: str) -> dict[str, str]:
        """canonical id -> external id of ``connector`` (links in force)."""
        ledger = await Ledger.open(self.config.ledger.url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                return {lk.canonical_id: lk.external_id for lk in await tx.links_of_connector(connector)}
        finally:
            await ledger.close()

    async def link_of(self, connector: str, external_id: str) -> str | None:
        """canonical id of ``connector``'s record ``external_id``."""
        for cid, ext in (await self.links(connector)).items():
            if ext == external_id:
                return cid
        return None

    def ref(self, connector: str, kind: str, key: str) -> str | None:
        return next((ext for k, cw_key, ext in self.crosswalk[connector] if k == kind and cw_key == key), None)

    def seeded_id(self, index: int) -> str:
        key = self.dataset.appointments[index].key
        found = self.ref(self.crm.ehr, "appointment", key)
        assert found is not None
        return found

    async def ids_of(self, index: int) -> tuple[str, dict[str, str]]:
        """canonical id of seeded appointment ``index`` and its external id in each member."""
        cid = await self.link_of(self.crm.ehr, self.seeded_id(index))
        if cid is None:
            raise DemoError(f"appointment {self.seeded_id(index)} was not linked by the first sync")
        ids = {m: (await self.links(m)).get(cid, "") for m in self.crm.group.members}
        return cid, ids

    async def until(self, check: Callable[[], Awaitable[str | None]], *, cid: str | None = None,
                    timeout: float = STEP_TIMEOUT) -> str | None:
        """Poll ``check`` (None = holds, else why not) until it holds or ``timeout`` passes; stop early,
        naming the ledger's reason, when the daemon dead-letters appointment ``cid`` or opens a conflict
        on it."""
        started = time.monotonic()
        deadline = started + timeout
        why: str | None = "not checked"
        while time.monotonic() < deadline:
            why = await check()
            if why is None:
                return None
            if self.stop.is_set():
                return f"interrupted ({why})"
            if cid is not None and any(e.canonical_id == cid and e.action in ("dead_letter", "conflict")
                                       and e.at >= started for e in self.feed.events):
                return await self.failure_reason(cid) or why
            await asyncio.sleep(0.25)
        return why

    async def failure_reason(self, cid: str) -> str | None:
        """The ledger's reason for the dead letter or open conflict on ``cid`` (PHI-free by design)."""
        ledger = await Ledger.open(self.config.ledger.url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                letters = [dl for dl in await tx.dead_letters() if dl.canonical_id == cid]
                conflicts = [c for c in await tx.conflicts() if c.canonical_id == cid]
        finally:
            await ledger.close()
        if letters:
            letter = letters[-1]
            return f"{letter.connector} dead-lettered it ({letter.kind}): {letter.reason}"
        if conflicts:
            conflict = conflicts[-1]
            return f"conflict opened on {conflict.field}: {conflict.reason}"
        return None

    def say(self, text: str) -> None:
        self.console.print(Text("  " + text, style="dim italic"))

    async def settle(self, outcome: Outcome, why: str | None, success: str) -> None:
        if why is None:
            await self.feed.settled()
        outcome.ok = why is None
        outcome.detail = success if why is None else why
        mark = Text("  ✓ " if outcome.ok else "  ✗ ", style="bold green" if outcome.ok else "bold red")
        mark.append(outcome.detail)
        self.console.print(mark)

    # -- 1. reschedule in the CRM ---------------------------------------------------------------
    async def reschedule(self, outcome: Outcome) -> None:
        crm, ehr, other = self.crm.crm, self.crm.ehr, self.crm.other
        cid, ids = await self.ids_of(0)
        rec = await self.sandboxes.record(crm, ids[crm])
        start = _parse_time(rec.get("Appointment_Start_Time") if rec else None)
        end = _parse_time(rec.get("Appointment_End_Time") if rec else None)
        if start is None or end is None:
            await self.settle(outcome, f"{crm} holds no readable appointment for {cid}", "")
            return
        new_start, new_end = start + timedelta(hours=2), end + timedelta(hours=2)
        self.say(f"A receptionist moves appointment {cid} in {crm} (record {ids[crm]}) two hours later.")
        await self.sandboxes.edit(crm, ids[crm], {"Appointment_Start_Time": _zoho_time(new_start),
                                                  "Appointment_End_Time": _zoho_time(new_end)})

        async def check() -> str | None:
            e = await self.sandboxes.record(ehr, ids[ehr])
            o = await self.sandboxes.record(other, ids[other])
            if e is None or _parse_time(e.get("start_time")) != new_start:
                return f"{ehr} {ids[ehr]} does not start at the new time"
            if o is None or _parse_time(o.get("SchedStartTime")) != new_start:
                return f"{other} {ids[other]} does not start at the new time"
            return None

        why = await self.until(check, cid=cid)
        await self.settle(outcome, why, f"rescheduled in {crm} → {ehr} {ids[ehr]} and {other} {ids[other]} "
                                  f"now start {new_start:%H:%M} UTC")

    # -- 2. cancellation in the EHR -------------------------------------------------------------
    async def cancellation(self, outcome: Outcome) -> None:
        crm, ehr, other = self.crm.crm, self.crm.ehr, self.crm.other
        cid, ids = await self.ids_of(1)
        self.say(f"The patient calls the practice: appointment {cid} is cancelled in {ehr} (record {ids[ehr]}).")
        await self.sandboxes.edit(ehr, ids[ehr], {"state": "Cancelled", "cancellation_reason_id": 2})

        async def check() -> str | None:
            c = await self.sandboxes.record(crm, ids[crm])
            o = await self.sandboxes.record(other, ids[other])
            if c is None or c.get("Status") != "Cancelled":
                return f"{crm} {ids[crm]} is not cancelled"
            if o is None or o.get("Status") != "Canceled":
                return f"{other} {ids[other]} is not cancelled"
            return None

        why = await self.until(check, cid=cid)
        await self.settle(outcome, why, f"cancelled in {ehr} → {crm} {ids[crm]} Cancelled, "
                                        f"{other} {ids[other]} Canceled")

    # -- 3. GET/PUT race ------------------------------------------------------------------------
    async def race(self, outcome: Outcome) -> None:
        crm, ehr, other = self.crm.crm, self.crm.ehr, self.crm.other
        cid, ids = await self.ids_of(2)
        rec = await self.sandboxes.record(crm, ids[crm])
        start = _parse_time(rec.get("Appointment_Start_Time") if rec else None)
        end = _parse_time(rec.get("Appointment_End_Time") if rec else None)
        if start is None or end is None:
            await self.settle(outcome, f"{crm} holds no readable appointment for {cid}", "")
            return
        self.say(f"Appointment {cid} is moved an hour later in {crm}; while syncd writes it to {other}, "
                 f"another {other} user edits its comment (a mutate_before fault on syncd's re-read right "
                 f"before the write).")
        why: str | None = None
        for attempt in range(1, 4):
            # The fault fires on the next batch read of that route; when one of the daemon's own polls
            # happens to take it first, the edit is an ordinary concurrent one (synced all the same), and
            # the race is staged again.
            note = RECEPTION_NOTE if attempt == 1 else f"{RECEPTION_NOTE} ({attempt})"
            new_start, new_end = start + timedelta(hours=attempt), end + timedelta(hours=attempt)
            since = time.monotonic()
            await self.sandboxes.fault(other, "GET", "/services/data/*/composite/sobjects/ServiceAppointment",
                                       {"type": "mutate_before", "id": ids[other], "changes": {"Comments": note}})
            await self.sandboxes.edit(crm, ids[crm], {"Appointment_Start_Time": _zoho_time(new_start),
                                                      "Appointment_End_Time": _zoho_time(new_end)})

            async def converged(note: str = note, new_start: datetime = new_start) -> str | None:
                o = await self.sandboxes.record(other, ids[other])
                c = await self.sandboxes.record(crm, ids[crm])
                e = await self.sandboxes.record(ehr, ids[ehr])
                if o is None or _parse_time(o.get("SchedStartTime")) != new_start:
                    return f"{other} {ids[other]} lost the new time"
                if o.get("Comments") != note:
                    return f"{other} {ids[other]} lost the concurrent edit (overwritten)"
                if c is None or c.get("Additional_Information") != note:
                    return f"the concurrent edit did not reach {crm} {ids[crm]}"
                if e is None or e.get("notes") != note or _parse_time(e.get("start_time")) != new_start:
                    return f"{ehr} {ids[ehr]} did not receive both changes"
                return None

            why = await self.until(converged, cid=cid)
            if why is not None or self.feed.seen("retry", other, since):
                break
            why = f"syncd did not re-read and re-merge {other} {ids[other]} (a poll took the edit first)"
        await self.settle(outcome, why, f"race on {other} {ids[other]} → re-read and re-merged: the new time and the "
                                  f"concurrent note both kept, in all three systems")

    # -- 4. patient change Dentally forbids -----------------------------------------------------
    async def patient_change(self, outcome: Outcome) -> None:
        crm, ehr, other = self.crm.crm, self.crm.ehr, self.crm.other
        cid, ids = await self.ids_of(3)
        current = self.dataset.appointments[3].patient
        new_patient = next(p.key for p in self.dataset.patients
                           if p.key not in (current, self.missing_patient))
        contact = self.ref(crm, "patient", new_patient)
        ehr_patient = self.ref(ehr, "patient", new_patient)
        other_patient = self.ref(other, "patient", new_patient)
        if contact is None or ehr_patient is None or other_patient is None:
            await self.settle(outcome, f"no crosswalk entries for patient {new_patient}", "")
            return
        module, _, contact_id = contact.partition(":")
        self.say(f"The CRM user rebooks appointment {cid} ({crm} {ids[crm]}) for another family member, "
                 f"patient {new_patient}; {ehr} forbids changing an appointment's patient.")
        await self.sandboxes.edit(crm, ids[crm], {"Appointment_For": {"module": module or "Contacts",
                                                                     "id": contact_id, "name": "-"}})
        old_id = ids[ehr]
        replaced: list[str] = []

        async def check() -> str | None:
            new_id = (await self.links(ehr)).get(cid)
            if not new_id or new_id == old_id:
                return f"{ehr} still links {old_id} (no replacement)"
            old = await self.sandboxes.record(ehr, old_id)
            new = await self.sandboxes.record(ehr, new_id)
            if old is None or old.get("state") != "Cancelled" or old.get("cancellation_reason_id") != 1:
                return f"{ehr} {old_id} is not cancelled with reason 'Booked in error'"
            if new is None or str(new.get("patient_id")) != ehr_patient:
                return f"{ehr} {new_id} does not carry the new patient"
            if str((new.get("metadata") or {}).get("syncd_replaces")) != old_id:
                return f"{ehr} {new_id} does not name {old_id} as the appointment it replaces"
            if f"replaced by appointment {new_id}" not in str(old.get("notes") or ""):
                return f"{ehr} {old_id}'s notes do not point at {new_id}"
            o = await self.sandboxes.record(other, ids[other])
            if o is None or o.get("ParentRecordId") != other_patient:
                return f"{other} {ids[other]} does not carry the new patient"
            replaced.append(new_id)
            return None

        why = await self.until(check, cid=cid)
        new_id = replaced[-1] if replaced else "-"
        await self.settle(outcome, why, f"{ehr} patient change → replaced: new {new_id}, old {old_id} cancelled "
                                  f"'Booked in error', crosswalk points at {new_id}; {other} updated in place")

    # -- 5. missing crosswalk entry -------------------------------------------------------------
    async def missing_crosswalk(self, outcome: Outcome) -> None:
        other = self.crm.other
        patient = self.missing_patient
        index = next(i for i, a in enumerate(self.dataset.appointments) if a.patient == patient)
        self.say(f"Seeded appointment {self.seeded_id(index)} belongs to patient {patient}, who has no "
                 f"{other} row in the crosswalk (left out on purpose).")
        found: list[str] = []

        async def check() -> str | None:
            ledger = await Ledger.open(self.config.ledger.url, create=False)
            try:
                async with ledger.transaction(readonly=True) as tx:
                    letters = await tx.dead_letters()
            finally:
                await ledger.close()
            for letter in letters:
                reason = letter.reason
                if (letter.connector == other and letter.kind == "missing_reference" and "patient" in reason
                        and patient in reason and other in reason):
                    found.append(reason)
                    return None
            return f"no dead letter naming patient {patient} and {other}"

        why = await self.until(check, timeout=5.0)
        await self.settle(outcome, why, f"dead-lettered for {other}: \"{found[0] if found else ''}\" "
                                  f"(fix: syncd crosswalk import, then syncd deadletters retry)")


    # -- 6. onboarding: bookings already typed by hand are linked, not copied -------------------------
    async def onboarding(self, outcome: Outcome) -> None:
        crm, ehr, other = self.crm.crm, self.crm.ehr, self.crm.other
        typed = self.typed
        if typed is None:
            await self.settle(outcome, "no bookings were typed by hand before the start", "")
            return
        self.say(f"Before go-live, reception had typed {len(typed.both)} of {ehr}'s bookings into {crm} and "
                 f"{other} by hand (no syncd reference), and one booking into {crm} only.")

        async def check() -> str | None:
            links = {name: await self.links(name) for name in (crm, ehr, other)}
            for position, index in enumerate(typed.both):
                cid = await self.link_of(ehr, self.seeded_id(index))
                if cid is None:
                    return f"{ehr} {self.seeded_id(index)} is not linked to an appointment"
                for name in (crm, other):
                    mine = typed.ids[name][position]
                    if links[name].get(cid) != mine:
                        return f"{name} record {mine} is not the one linked to appointment {cid} (copied?)"
            cid = await self.link_of(crm, typed.crm_only_id)
            if cid is None:
                return f"{crm} record {typed.crm_only_id} is not linked to an appointment"
            for name in (ehr, other):
                if cid not in links[name]:
                    return f"{crm}'s booking {cid} was not created in {name}"
            return None

        why = await self.until(check)
        linked = sum(self.feed.counts[name]["linked"] for name in (crm, other))
        await self.settle(outcome, why, f"{linked} records typed by hand in {crm} and {other} linked to {ehr}'s "
                                        f"bookings (no copies); the {crm}-only booking created in {ehr} and "
                                        f"{other} once")


# ----------------------------------------------------------------------------------------- SaludYa


@dataclass(frozen=True)
class SaludYaGroup:
    """A group where a booking born in SaludYa must reach a CRM: connector names by role."""

    group: SyncGroup
    saludya: str
    crm: str


def find_saludya_group(config: Config) -> SaludYaGroup | None:
    """The first group with a SaludYa member and a CRM member it creates in (the repository's clinic-b)."""
    for group in config.sync:
        saludya = [m for m in group.members if config.connectors[m].type == "saludya"]
        crms = [m for m in group.members if _is_crm(config.connectors[m].type) and m in group.create_in]
        if saludya and crms:
            return SaludYaGroup(group, saludya[0], crms[0])
    return None


def _saludya_booking(dataset: SeedDataset, zone: str) -> tuple[dict[str, Any], str, datetime]:
    """A booking a SaludYa receptionist makes (SaludYa's own ids left to the caller): tomorrow evening in
    the clinic's zone, off the seeded slot grid, within SaludYa's hot scan window (today and tomorrow).
    Returns the record without ids, the service key whose name is its specialty, and its start (UTC)."""
    service = dataset.services[1 % len(dataset.services)]
    tz = ZoneInfo(zone)
    tomorrow = (datetime.now(tz) + timedelta(days=1)).date()
    local = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 18, 30, tzinfo=tz)
    record = {"specialty": service.name, "date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M"),
              "duration_minutes": service.minutes, "status": "confirmed", "reason": None, "notes": None}
    return record, service.key, local.astimezone(UTC)


async def saludya_booking_reaches_crm(story: Story, outcome: Outcome, target: SaludYaGroup,
                                      dataset: SeedDataset) -> None:
    """Scenario: a receptionist books in SaludYa; the CRM gets it with the service its specialty maps to
    (read-only in SaludYa, read all the same) and the group's default location (SaludYa stores none)."""
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
    story.say(f"A receptionist books appointment {SALUDYA_BOOKING_ID} in {sy} with the specialty of service "
              f"{service} (read-only there: only {sy}'s users set it); {sy} stores no location, its "
              f"default_location is {default or 'not set'}.")
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
        got = _crm_service_location(story.config.connectors[crm].type, rec)
        if got is None:
            return f"{crm}: its vendor declares no sandbox record fields"
        if _parse_time(got[2]) != start:
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
    await story.settle(outcome, why, f"booked in {sy} ({SALUDYA_BOOKING_ID}) → {crm} {crm_id} created for {cid} "
                                     f"with service {service}{where}")


def _is_crm(vendor_type: str) -> bool:
    """The member types a clinical booking is shown reaching (the CRMs)."""
    return registry.get(vendor_type).role == "crm"


def _holder_rank(vendor_type: str) -> tuple[bool, int]:
    """Which member of a group holds the seeded appointments: a clinical system first, then the
    registry's order."""
    return registry.get(vendor_type).role != "clinical", registry.types().index(vendor_type)


def _crm_service_location(crm_type: str, rec: Mapping[str, Any]) -> tuple[str | None, str | None, Any] | None:
    """(service id, location id, start) of a CRM record, in the CRM's own ids (None: its vendor
    declares no sandbox record fields)."""
    fields = registry.get(crm_type).sandbox_fields
    if fields is None:
        return None
    service, location, start = fields.read(rec)
    return _opt(service), _opt(location), start


# ----------------------------------------------------------------------------------------- runner


HAND_TYPED = (5, 6, 7)
"""The CRM/EHR group's bookings (data set indices) that reception typed into every system by hand."""


@dataclass(frozen=True)
class TypedByHand:
    both: tuple[int, ...]
    """data set indices of the holder's bookings also typed into the group's other systems"""
    ids: dict[str, list[str]]
    """connector -> the external ids of those hand-typed records, in the order of ``both``"""
    crm_only_id: str
    """the CRM record of a booking typed into the CRM alone"""


async def _type_by_hand(sandboxes: Sandboxes, config: Config, crm: CrmGroup, dataset: SeedDataset) -> TypedByHand:
    """Go-live as it really happens: some of the EHR's bookings were typed into the CRM and the other
    system by hand as well (the same patient, practitioner and start; no syncd reference), and one
    booking into the CRM only. The daemon must link those, not copy them."""
    first = dataset.appointments[HAND_TYPED[0]]
    last = max(a.start for a in dataset.appointments)
    crm_only = dataclasses.replace(first, key="A-HAND01", start=last + timedelta(days=1),
                                   end=last + timedelta(days=1) + (first.end - first.start))
    ids: dict[str, list[str]] = {}
    crm_only_id = ""
    for name in (crm.crm, crm.other):
        package = registry.get(config.connectors[name].type)
        bookings = [dataset.appointments[i] for i in HAND_TYPED] + ([crm_only] if name == crm.crm else [])
        body, _rows = package.seed_body(dataclasses.replace(dataset, appointments=tuple(bookings)))
        fields = package.sandbox_fields
        reference = fields.reference if fields is not None else None  # hand-typed records have none
        records = [{**r, **({reference: None} if reference is not None and reference in r else {})}
                   for r in body.get("records", []) if _is_appointment(r)]
        await sandboxes.control(name, "POST", "/_sandbox/records", {"records": records})
        ids[name] = [_record_id(r) for r in records[:len(HAND_TYPED)]]
        if name == crm.crm:
            crm_only_id = _record_id(records[-1])
    return TypedByHand(HAND_TYPED, ids, crm_only_id)


async def _seed(
    sandboxes: Sandboxes, config: Config, datasets: Mapping[str, SeedDataset], holders: Mapping[str, str]
) -> dict[str, list[tuple[str, str, str]]]:
    """Seed every connector: appointments into its group's holder, reference data everywhere."""
    rows_by: dict[str, list[tuple[str, str, str]]] = {}
    for name, cfg in config.connectors.items():
        group = config.group_of(name)
        dataset = datasets[group.name if group is not None else ""]
        body, rows = registry.get(cfg.type).seed_body(dataset)
        if holders.get(group.name if group is not None else "") != name:
            body = dict(body)
            body["records"] = [r for r in body.get("records", []) if not _is_appointment(r)]
            rows = [r for r in rows if r[0] != "appointment"]
        await sandboxes.control(name, "POST", "/_sandbox/records", body)
        rows_by[name] = list(rows)
    return rows_by


async def _import_crosswalk(config: Config, rows_by: Mapping[str, list[tuple[str, str, str]]],
                            skip: tuple[str, str, str]) -> None:
    """Reference rows only (appointments get canonical ids minted by syncd), minus ``skip``."""
    kept = {name: [r for r in rows if r[0] != "appointment" and (name, r[0], r[1]) != skip]
            for name, rows in rows_by.items()}
    rows, problems = parse_csv(crosswalk_csv(kept), config.connectors)
    if problems:
        raise DemoError(f"crosswalk: {problems[0]}")
    ledger = await Ledger.open(config.ledger.url)
    try:
        await ledger.upgrade()
        report = await import_rows(ledger, rows, config)
    finally:
        await ledger.close()
    if report.problems:
        raise DemoError(f"crosswalk: {report.problems[0]}")


def _summary(feed: Feed, config: Config) -> Table:
    table = Table(title="What syncd wrote, per target system", title_justify="left")
    table.add_column("connector")
    table.add_column("type", style="dim")
    for label in ("created", "linked", "updated", "cancelled", "re-merged", "echoes", "dead letters", "conflicts"):
        table.add_column(label, justify="right")
    for name, cfg in config.connectors.items():
        c = feed.counts.get(name, Counter())
        table.add_row(
            name, cfg.type,
            str(c["created"] + c["replaced"]), str(c["linked"]), str(c["updated"]),
            str(c["cancelled"] + c["replaced"]), str(c["retry"]), str(c["echo"]), str(c["dead_letter"]),
            str(c["conflict"]),
        )
    return table


async def _wait_initial(sandboxes: Sandboxes, expected: Mapping[str, int], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    missing = "not checked"
    while time.monotonic() < deadline:
        short = []
        for name, count in expected.items():
            have = len(await sandboxes.appointments(name))
            if have < count:
                short.append(f"{name} {have}/{count}")
        if not short:
            return None
        missing = ", ".join(short)
        await asyncio.sleep(0.3)
    return f"first sync incomplete: {missing}"


async def run_demo(base: Config, console: Console, *, workdir: Path, log_file: TextIO) -> int:
    """The whole demo; returns the exit code (0 when all scripted outcomes hold). The daemon's
    JSON log lines go to ``log_file``; the ledger is created in ``workdir``."""
    crm_group = find_crm_group(base)
    started = time.monotonic()
    now = datetime.now(UTC)
    crm_data, other_data = demo_datasets(now)
    datasets: dict[str, SeedDataset] = {g.name: (crm_data if g is crm_group.group else other_data)
                                        for g in base.sync}
    datasets[""] = other_data
    holders: dict[str, str] = {crm_group.group.name: crm_group.ehr}
    for g in base.sync:
        if g is not crm_group.group:
            holders[g.name] = min(g.members, key=lambda m: _holder_rank(base.connectors[m].type))
    missing_patient = crm_data.appointments[-1].patient

    console.rule("[bold]syncd demo[/bold]: five vendor sandboxes, one daemon, a scripted day at the clinic")
    console.print(
        "syncd keeps appointments in sync between clinic systems (CRMs and EHRs). Each \\[\\[sync]] group\n"
        "holds the same appointments; a change made in any member reaches every other member once, in\n"
        "the way that member's vendor allows. Below, every line is one decision of the running daemon:\n"
        "the target system, what it did, the canonical appointment id, the target's own id, the fields."
    )
    console.print(_legend())
    running: dict[str, RunningSandbox] = {}
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=True)
    outcomes = [
        Outcome(1, f"Reschedule in the CRM ({crm_group.crm})"),
        Outcome(2, f"Cancellation in the EHR ({crm_group.ehr})"),
        Outcome(3, f"GET/PUT race on a write to {crm_group.other}"),
        Outcome(4, f"Patient change that {crm_group.ehr} forbids in place"),
        Outcome(5, f"Missing crosswalk entry (patient, {crm_group.other})"),
        Outcome(6, f"Onboarding: bookings typed by hand in {crm_group.crm} and {crm_group.other} linked, not copied"),
    ]
    saludya_group = find_saludya_group(base)
    if saludya_group is not None:
        outcomes.append(Outcome(len(outcomes) + 1, f"A booking born in {saludya_group.saludya} reaches "
                                                  f"{saludya_group.crm} with its service type"))
    stop = asyncio.Event()
    daemon: asyncio.Task[int] | None = None
    feed = Feed(console)
    with progress:
        task = progress.add_task("starting sandboxes", total=len(outcomes) + 3)
        try:
            for name, cfg in base.connectors.items():
                running[name] = await start_sandbox(cfg.type, port=0, rate_limits=False)
            config = demo_config(base, {n: r.url for n, r in running.items()}, workdir / "syncd-demo.db")
            table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
            for column in ("connector", "type", "sandbox", "group"):
                table.add_column(column)
            for name, cfg in config.connectors.items():
                group = config.group_of(name)
                table.add_row(name, cfg.type, running[name].url, group.name if group else "-")
            console.print(table)
            progress.update(task, advance=1, description="seeding")
            async with Sandboxes(running) as sandboxes:
                rows_by = await _seed(sandboxes, config, datasets, holders)
                typed = await _type_by_hand(sandboxes, config, crm_group, crm_data)
                await _import_crosswalk(config, rows_by, (crm_group.other, "patient", missing_patient))
                seeded = {g: len(d.appointments) for g, d in datasets.items() if g}
                console.print(
                    "Seeded invented appointments into "
                    + ", ".join(f"{holders[g]} ({seeded[g]})" for g in holders)
                    + "; patients, practitioners, sites and services into every system; crosswalk imported "
                    f"without patient {missing_patient}'s {crm_group.other} row. {len(typed.both)} of "
                    f"{crm_group.ehr}'s bookings were also typed by hand into {crm_group.crm} and "
                    f"{crm_group.other}, one booking into {crm_group.crm} only (no syncd reference)."
                )
                story = Story(console, config, crm_group, sandboxes, feed, crm_data, rows_by, missing_patient,
                              stop, typed)
                configure_logging("info", "json")
                with contextlib.redirect_stderr(LogTap(log_file, feed.on_decision)):
                    daemon = asyncio.create_task(run_daemon(config, stop=stop, port=0))
                    console.rule("First sync: the daemon polls every system and creates what is missing")
                    progress.update(task, advance=1, description="first sync")
                    expected = _initial_expectations(config, datasets, holders, crm_group)
                    why = await _wait_initial(sandboxes, expected, timeout=25.0)
                    if daemon.done():
                        daemon.result()
                    if why is not None:
                        console.print(Text(f"  ✗ {why}", style="bold red"))
                    else:
                        await feed.settled()  # let the echoes of the creates pass
                    steps: list[Callable[[Outcome], Awaitable[None]]] = [
                        story.reschedule, story.cancellation, story.race, story.patient_change,
                        story.missing_crosswalk, story.onboarding]
                    if saludya_group is not None:
                        steps.append(functools.partial(saludya_booking_reaches_crm, story, target=saludya_group,
                                                       dataset=datasets[saludya_group.group.name]))
                    for outcome, step in zip(outcomes, steps, strict=True):
                        if stop.is_set():
                            break
                        progress.update(task, advance=1, description=f"scenario {outcome.number}/{len(outcomes)}")
                        console.rule(f"{outcome.number}. {outcome.title}")
                        if daemon.done():
                            daemon.result()
                        try:
                            await step(outcome)
                        except DemoError as exc:
                            await story.settle(outcome, str(exc), "")
                    feed.quiet = True
                    stop.set()
                    progress.update(task, advance=1, description="stopping the daemon")
                    await asyncio.wait_for(daemon, timeout=40)
        finally:
            stop.set()
            if daemon is not None and not daemon.done():
                daemon.cancel()
                with contextlib.suppress(BaseException):
                    await daemon
            for rs in running.values():
                await rs.stop()
    return _report(console, feed, base, outcomes, time.monotonic() - started)


def _initial_expectations(config: Config, datasets: Mapping[str, SeedDataset], holders: Mapping[str, str],
                          crm: CrmGroup) -> dict[str, int]:
    expected: dict[str, int] = {}
    for group in config.sync:
        creatable = sum(1 for a in datasets[group.name].appointments if a.status in CREATABLE)
        for member in group.create_in:
            if member == holders[group.name]:
                continue
            expected[member] = creatable - (1 if member == crm.other and group is crm.group else 0)
    return expected


def _legend() -> Table:
    legend = Table.grid(padding=(0, 2))
    for action in ("created", "linked", "updated", "cancelled", "replaced", "retry", "echo", "dead_letter",
                   "conflict"):
        style, label = ACTION_STYLE[action]
        legend.add_row(Text("    " + label, style=style), ACTION_HELP[action])
    return legend


def _report(console: Console, feed: Feed, config: Config, outcomes: list[Outcome], elapsed: float) -> int:
    console.rule("Summary")
    console.print(_summary(feed, config))
    console.print()
    console.print(Text("What just happened:", style="bold"))
    for outcome in outcomes:
        line = Text("  ✓ " if outcome.ok else "  ✗ ", style="bold green" if outcome.ok else "bold red")
        line.append(f"{outcome.number}. {outcome.title}: ", style="bold")
        line.append(outcome.detail)
        console.print(line)
    failed = [o for o in outcomes if not o.ok]
    console.print()
    if failed:
        console.print(Text(f"demo finished in {elapsed:.0f}s: {len(failed)} of {len(outcomes)} scripted outcomes "
                           f"did not hold ({', '.join(str(o.number) for o in failed)})", style="bold red"))
        return 1
    console.print(Text(f"demo finished in {elapsed:.0f}s: all {len(outcomes)} scripted outcomes hold",
                       style="bold green"))
    return 0


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[tuple[Path, TextIO]]:
    """A fresh temporary directory for the demo's ledger and its open JSON log file
    (``syncd-demo.log``); removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        with (path / "syncd-demo.log").open("a", encoding="utf-8") as log_file:
            yield path, log_file
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def console_for(stream: TextIO | None = None) -> Console:
    """Rich output on stdout: live on a terminal; plain lines (120 columns unless ``$COLUMNS``) when
    piped."""
    out = stream or sys.stdout
    interactive = out.isatty()
    width = None if interactive or os.environ.get("COLUMNS", "").isdigit() else 120
    return Console(file=out, width=width, highlight=False, force_terminal=None if interactive else False)
