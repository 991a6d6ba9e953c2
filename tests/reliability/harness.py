"""One reliability scenario: sandboxes, ``syncd run`` replicas as subprocesses, changes, kills, faults,
and the judgement of the vendors' final state (see the package docstring).

The sandboxes serve from the harness's own process (they are the vendors: they outlive every kill);
each daemon replica is a ``python -m syncd run`` subprocess with its own port and the same config
otherwise. The replica that polls the most vendors (poll leases) is the one killed at random moments,
replica 0 the one the sandboxes kill at the hard moments; webhooks go to the last replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from syncd.ledger.models import Link
from syncd.ledger.store import Ledger
from tests.daemon_support import DaemonProcess
from tests.pg_support import PG_BASE, pg_admin
from tests.scenarios.convergence_run import seed_member
from tests.scenarios.convergence_support import ADAPTERS, FaultSpot, RecordView
from tests.scenarios.harness import World, make_world

__all__ = ["Result", "Scenario", "daemon_replica", "polled_world", "run_scenario", "stop_daemons"]

MEMBERS = {"zoho": "zoho_crm", "dentally": "dentally", "sf": "salesforce_health"}
OPEN = frozenset({"proposed", "pending", "booked", "arrived", "checked-in"})
MUTATE_NOTE = "Edited during sync"
"""The notes another user writes between syncd's read and its write (the ``mutate_before`` fault)."""
TOKEN_SPOTS = {"zoho_crm": FaultSpot("POST", "/oauth/v2/token"),
               "salesforce_health": FaultSpot("POST", "/services/oauth2/token")}
EXPIRED_TOKEN = {"zoho_crm": "invalid_token", "salesforce_health": "session_expired"}


@dataclass(frozen=True)
class Scenario:
    name: str
    database: str = "sqlite"  # or "postgres"
    replicas: int = 1
    changes: int = 60
    kills: int = 20
    """Random-moment SIGKILLs of replica 0 (hard-moment kills come on top, up to ``hard_kills``)."""
    hard_kills: int = 4
    fault_rate: float = 0.2
    """The share of vendor requests that meet a fault, spread over the fault kinds."""
    seconds: float = 60.0
    """Length of the chaos phase (changes, kills and faults)."""
    settle_seconds: float = 150.0
    initial: int = 8
    poll_interval: int = 2
    seed: int = 1


@dataclass
class Verdict:
    """What the judge found: changes lost or duplicated, conflicts left, how far the members converged."""

    lost: int = 0
    duplicated: int = 0
    conflicts: int = 0
    converged: float = 0.0
    appointments: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.converged >= 100.0


@dataclass
class Result(Verdict):
    """One scenario's run: the judge's last verdict, and what the run did to get there."""

    scenario: Scenario = field(kw_only=True)
    kills: int = 0
    hard_kills: int = 0
    faults: int = 0
    changes: int = 0
    seconds: float = 0.0


@dataclass
class Expected:
    """What an appointment must read as everywhere, after the last change a user made to it."""

    origin: str
    external_id: str
    status: str
    start: datetime
    notes: str | None
    changes: int = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One ``syncd run`` subprocess, restarted after each kill."""

    def __init__(self, index: int, config_path: Path, port: int, logs: Path) -> None:
        self.index = index
        self.config_path = config_path
        self.port = port
        self.logs = logs
        self.proc: asyncio.subprocess.Process | None = None
        self.lives = 0
        self.unexpected_exits: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.returncode is not None else self.proc.pid

    async def start(self) -> None:
        self.lives += 1
        log = (self.logs / f"replica{self.index}-life{self.lives}.log").open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "syncd", "run", "--config", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    return  # died at start (or killed by a hard-moment fault): the monitor restarts it
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"replica {self.index} did not serve within 30 s (see {self.logs})")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                await self.kill()


# -- set-up ------------------------------------------------------------------------------------------


async def polled_world(workdir: Path, ledger_url: str, members: Mapping[str, str], seeds: Mapping[str, int],
                       *, n_appointments: int) -> tuple[World, str]:
    """The sandboxes of ``members`` polled every second, each seeded with ``seeds[name]`` appointments,
    the crosswalk imported; with the config text the daemon-level tests' replicas start from (logs at
    info level)."""
    extra = {name: {"poll_interval": 1} for name in members}
    world = await make_world(workdir, ledger_url, members, n_appointments=n_appointments, connector_extra=extra)
    try:
        for name in members:
            await seed_member(world, ADAPTERS, name, seeds.get(name, 0))
        await world.import_crosswalk()
    except BaseException:
        await world.stop()
        raise
    return world, world.config_path.read_text(encoding="utf-8").replace('level = "warning"', 'level = "info"')


def daemon_replica(workdir: Path, base: str, name: str, env: Mapping[str, str]) -> DaemonProcess:
    """A ``syncd run`` (not started) on config ``base`` with its own port, config file and log folder
    ``name`` under ``workdir``: one replica of the daemon-level tests."""
    port = _free_port()
    path = workdir / f"{name}.toml"
    path.write_text(base + f'\n[server]\nhost = "127.0.0.1"\nport = {port}\n', encoding="utf-8")
    logs = workdir / name
    logs.mkdir()
    return DaemonProcess(path, port, logs, env=env)


async def stop_daemons(daemons: list[DaemonProcess], world: World) -> None:
    """Stop every daemon (a frozen one is resumed first), then the sandboxes."""
    for daemon in daemons:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGCONT)
        await daemon.stop()
    await world.stop()


def _replica_config(base: str, port: int, public_port: int) -> str:
    return base + (f'\n[server]\nhost = "127.0.0.1"\nport = {port}\n'
                   f'public_url = "http://127.0.0.1:{public_port}"\n')


# -- the run -----------------------------------------------------------------------------------------

class Run:
    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.sc = scenario
        self.dir = workdir
        self.rng = random.Random(scenario.seed)
        self.result = Result(scenario=scenario)
        self.expected: dict[tuple[str, str], Expected] = {}
        self.unused_keys: list[str] = []
        self.replicas: list[Replica] = []
        self.world: World | None = None
        self.ledger_url = ""
        self.pg_database: str | None = None
        self.killing = True
        self.hard_armed = 0
        self.restarting: set[int] = set()
        self.left_dead: set[int] = set()

    # the world -------------------------------------------------------------------------------------
    async def setup(self) -> None:
        sc = self.sc
        self.dir.mkdir(parents=True, exist_ok=True)
        if sc.database == "sqlite":
            self.ledger_url = f"sqlite+aiosqlite:///{self.dir / 'ledger.db'}"
        else:
            self.pg_database = f"syncd_reliab_{uuid.uuid4().hex[:10]}"
            await pg_admin(f'CREATE DATABASE "{self.pg_database}"')
            self.ledger_url = f"postgresql+asyncpg://{PG_BASE.split('://', 1)[1]}/{self.pg_database}"
        ports = [_free_port() for _ in range(sc.replicas)]
        hook = ports[-1]
        options = {name: {"webhook_url": f"http://127.0.0.1:{hook}/webhooks/{name}"}
                   for name in ("dentally", "sf")}
        extra = {name: {"poll_interval": sc.poll_interval} for name in MEMBERS}
        n_new = sc.changes  # every change may be a new appointment at worst
        self.world = await make_world(self.dir, self.ledger_url, MEMBERS, n_appointments=sc.initial + n_new,
                                      sandbox_options=options, connector_extra=extra)
        world = self.world
        await seed_member(world, ADAPTERS, "zoho", sc.initial)
        await seed_member(world, ADAPTERS, "dentally", 0)
        await seed_member(world, ADAPTERS, "sf", 0)
        await world.import_crosswalk()
        base = world.config_path.read_text(encoding="utf-8").replace('level = "warning"', 'level = "info"')
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for i, port in enumerate(ports):
            path = self.dir / f"replica{i}.toml"
            path.write_text(_replica_config(base, port, hook), encoding="utf-8")
            self.replicas.append(Replica(i, path, port, logs))
        self.unused_keys = [a.key for a in world.dataset.appointments[sc.initial:]]
        zoho = ADAPTERS["zoho_crm"]
        for rec in await world.records("zoho"):
            if zoho.is_appointment(rec):
                self._expect("zoho", zoho.view(rec), changes=0)

    def _expect(self, origin: str, view: RecordView, *, changes: int = 1) -> None:
        key = (origin, view.external_id)
        before = self.expected.get(key)
        self.expected[key] = Expected(origin, view.external_id, view.status, view.start, view.notes,
                                      (before.changes if before else 0) + changes)

    async def teardown(self) -> None:
        for replica in self.replicas:
            await replica.stop()
        if self.world is not None:
            await self.world.stop()
        if self.pg_database:
            await pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')

    # faults ----------------------------------------------------------------------------------------
    async def arm_faults(self, *, hard: bool) -> None:
        """(Re)arm every sandbox's probabilistic faults, and the hard-moment kill of replica 0."""
        assert self.world is not None
        world = self.world
        victim = self.replicas[0].pid
        per_kind = 1 - (1 - self.sc.fault_rate) ** (1 / 5)  # five kinds on most requests: about fault_rate in all
        for name, vendor in MEMBERS.items():
            adapter = ADAPTERS[vendor]
            await world.control(name, "DELETE", "/_sandbox/faults")
            big = 1_000_000
            faults: list[tuple[FaultSpot, dict[str, Any], float, int]] = []
            if hard and victim is not None and self.hard_armed < self.sc.hard_kills:
                for spot in adapter.any_write:
                    faults.append((spot, {"type": "signal_after_apply", "pid": victim}, 0.04, 1))
                if vendor in TOKEN_SPOTS:
                    faults.append((TOKEN_SPOTS[vendor], {"type": "signal_before_apply", "pid": victim}, 0.2, 1))
            for spot in (adapter.read, *adapter.any_write):
                faults.append((spot, {"type": "status", "status": 503}, per_kind, big))
            for spot in adapter.any_write:
                faults.append((spot, {"type": "drop_after_apply"}, per_kind, big))
                faults.append((spot, {"type": "hang", "seconds": 1.5}, per_kind / 2, big))
            faults.append((adapter.update, {"type": "mutate_before", "changes": adapter.notes(MUTATE_NOTE)},
                           per_kind, big))
            if adapter.rate_limit_ok:
                faults.append((adapter.read, {"type": "rate_limit", "retry_after": 1}, per_kind, big))
            if vendor in EXPIRED_TOKEN:
                faults.append((adapter.read, {"type": EXPIRED_TOKEN[vendor]}, per_kind / 2, big))
            for n, (spot, action, rate, times) in enumerate(faults):
                await world.control(name, "POST", "/_sandbox/faults", {
                    "match": {"method": spot.method, "path": spot.path}, "times": times, "rate": rate,
                    "action": action, **({"seed": self.rng.randrange(1 << 30)} if n == 0 else {})})
        if hard and victim is not None:
            self.hard_armed += 1

    async def count_faults(self) -> None:
        assert self.world is not None
        for name in MEMBERS:
            fired = (await self.world.control(name, "GET", "/_sandbox/faults"))["fired"]
            self.result.faults += sum(int(n) for kind, n in fired.items() if not kind.startswith("signal"))

    async def clear_faults(self) -> None:
        assert self.world is not None
        await self.count_faults()
        for name in MEMBERS:
            await self.world.control(name, "DELETE", "/_sandbox/faults")

    # changes ---------------------------------------------------------------------------------------
    async def change(self) -> None:
        assert self.world is not None
        world = self.world
        origin = self.rng.choice(sorted(MEMBERS))
        adapter = ADAPTERS[MEMBERS[origin]]
        own = [e for e in self.expected.values() if e.origin == origin and e.status in OPEN]
        op = self.rng.choice(("notes", "notes", "reschedule", "cancel", "new"))
        if not own or op == "new":
            if not self.unused_keys:
                return
            key = self.unused_keys.pop(0)
            marker = f"Reliability {key}"
            rec = adapter.new_record(world.dataset, key)
            rec.update(adapter.notes(marker))
            await world.control(origin, "POST", "/_sandbox/records", {"records": [rec]})
            for got in await world.records(origin):
                if adapter.is_appointment(got) and adapter.view(got).notes == marker:
                    self._expect(origin, adapter.view(got))
                    self.result.changes += 1
                    return
            raise AssertionError(f"{origin}: the new record for {key} is not there")
        target = self.rng.choice(own)
        rec = await world.record(origin, target.external_id)
        if adapter.is_terminal(rec) or rec.get("_deleted_at"):
            return
        if op == "reschedule" and (origin != "dentally" or not adapter.can_reschedule(rec)):
            # a Dentally copy is Confirmed, and Dentally refuses to move a Confirmed appointment: syncd
            # opens a conflict for a person to settle (docs/vendors/dentally.md §5), by design, not a
            # crash-safety fault; only appointments booked in Dentally (Pending) are moved
            op = "notes"
        if op == "notes":
            changes = adapter.notes(f"Note {self.result.changes} {self.rng.randrange(1000)}")
        elif op == "reschedule":
            changes = adapter.reschedule(rec, self.rng.randint(1, 3))
        else:
            changes = adapter.cancel()
        await world.edit(origin, target.external_id, changes)
        self._expect(origin, adapter.view(await world.record(origin, target.external_id)))
        self.result.changes += 1

    # kills -----------------------------------------------------------------------------------------
    async def monitor(self) -> None:
        """Restart a replica that died (killed at a hard moment by a sandbox, or crashed)."""
        while True:
            for replica in self.replicas:
                proc = replica.proc
                if proc is None or proc.returncode is None or replica.index in self.restarting:
                    continue
                if replica.index in self.left_dead:
                    continue  # left dead: the survivors finish its work
                if proc.returncode == -signal.SIGKILL:
                    self.result.hard_kills += 1
                else:
                    replica.unexpected_exits.append(int(proc.returncode))
                    self.result.problems.append(f"replica {replica.index} exited {proc.returncode} on its own "
                                                f"(life {replica.lives})")
                await self.restart(replica)
            await asyncio.sleep(0.1)

    async def restart(self, replica: Replica) -> None:
        self.restarting.add(replica.index)
        try:
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            await replica.start()
            if replica.index == 0:
                await self.arm_faults(hard=self.killing)
        finally:
            self.restarting.discard(replica.index)

    async def intake_holder(self) -> Replica:
        """The replica that reads the most vendors now (PostgreSQL: the most ``poll:<connector>`` leases)."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        ledger = await Ledger.open(self.ledger_url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                leases = await tx.leases()
        finally:
            await ledger.close()
        now = datetime.now(UTC)
        polls = Counter(row.holder.rsplit(":", 1)[-1] for row in leases
                        if row.name.startswith("poll:") and row.expires_at >= now)
        return max(self.replicas, key=lambda r: (polls.get(str(r.pid), 0), -r.index))

    async def random_kill(self) -> None:
        victim = await self.intake_holder()
        deadline = time.monotonic() + 30
        while (victim.index in self.restarting or victim.pid is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # still coming back from the last kill: this kill waits for it
        if victim.pid is None:
            return
        self.restarting.add(victim.index)
        try:
            await victim.kill()
            self.result.kills += 1
        finally:
            self.restarting.discard(victim.index)
        await self.restart(victim)

    # the phases ------------------------------------------------------------------------------------
    async def execute(self) -> Result:
        began = time.monotonic()
        sc = self.sc
        await self.setup()
        monitor: asyncio.Task[None] | None = None
        try:
            for replica in self.replicas:
                await replica.start()
            await self.wait_initial()
            await self.arm_faults(hard=True)
            monitor = asyncio.create_task(self.monitor())
            start = time.monotonic()
            kill_at = sorted(self.rng.uniform(0, sc.seconds) for _ in range(sc.kills))
            change_at = sorted(self.rng.uniform(0, sc.seconds) for _ in range(sc.changes))
            events = sorted([(t, "kill") for t in kill_at] + [(t, "change") for t in change_at])
            for at, what in events:
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if what == "kill":
                    await self.random_kill()
                else:
                    await self.change()
            await self.count_faults()
            self.killing = False
            await self.clear_faults()
            self.result.faults -= 0  # counted once, just above, before the faults were cleared
            if sc.replicas > 1:
                while self.restarting:
                    await asyncio.sleep(0.1)
                victim = await self.intake_holder()  # one replica dies mid-run: the survivors finish
                self.left_dead.add(victim.index)
                await victim.kill()
                self.result.kills += 1
            else:
                while self.restarting:
                    await asyncio.sleep(0.1)
            await self.settle()
        finally:
            if monitor is not None:
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
            await self.teardown()
        self.result.seconds = time.monotonic() - began
        return self.result

    async def wait_initial(self) -> None:
        assert self.world is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = []
            for name in ("dentally", "sf"):
                adapter = ADAPTERS[MEMBERS[name]]
                counts.append(sum(1 for r in await self.world.records(name) if adapter.is_appointment(r)))
            if all(c >= self.sc.initial for c in counts):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the first sync did not create the {self.sc.initial} appointments within 90 s")

    async def settle(self) -> None:
        """Let the daemons finish (faults off, no more kills) until the judge is satisfied or time is up."""
        deadline = time.monotonic() + self.sc.settle_seconds
        while True:
            await asyncio.sleep(3)
            verdict = await self.judge()
            if verdict.ok or time.monotonic() > deadline:
                self.result.lost = verdict.lost
                self.result.duplicated = verdict.duplicated
                self.result.conflicts = verdict.conflicts
                self.result.converged = verdict.converged
                self.result.appointments = verdict.appointments
                self.result.problems.extend(verdict.problems)
                return

    # the judge -------------------------------------------------------------------------------------
    async def judge(self) -> Verdict:
        assert self.world is not None
        world = self.world
        views: dict[str, dict[str, RecordView]] = {}
        for name, vendor in MEMBERS.items():
            adapter = ADAPTERS[vendor]
            views[name] = {adapter.external_id(r): adapter.view(r)
                           for r in await world.records(name) if adapter.is_appointment(r)}
        ledger = await Ledger.open(self.ledger_url, create=False)
        try:
            async with ledger.transaction(readonly=True) as tx:
                links = await tx.all_links(include_retired=True)
                conflicted = {c.canonical_id for c in await tx.conflicts()}
        finally:
            await ledger.close()
        return judge(views, links, self.expected, conflicted)


def _shape(view: RecordView) -> tuple[str, str, str | None]:
    """What every system must agree on: open or the terminal status, the start, the notes."""
    status = "entered-in-error" if view.deleted else view.status
    return ("open" if status in OPEN else status, view.start.astimezone(UTC).isoformat(), view.notes)


def judge(views: Mapping[str, Mapping[str, RecordView]], links: list[Link],
          expected: Mapping[tuple[str, str], Expected], conflicted: frozenset[str] | set[str] = frozenset()
          ) -> Verdict:
    """Judge the vendors' final records (``views``: member -> external id -> record) against the
    changes users made (``expected``), with the ledger's links only to tell which record is which.

    An appointment with an open conflict (``conflicted``: two users changed one field with no policy
    to settle it, e.g. equal modified times; it waits for a person by design) is counted apart, in
    ``conflicts``, and neither as lost nor in the converged share."""
    verdict = Verdict()
    verdict.conflicts = len(conflicted)
    live: dict[str, dict[str, str]] = defaultdict(dict)  # canonical id -> member -> external id
    by_record: dict[tuple[str, str], str] = {}
    retired: set[tuple[str, str]] = set()
    for lk in links:
        if lk.retired:
            retired.add((lk.connector, lk.external_id))
            continue
        if lk.connector in live[lk.canonical_id]:
            verdict.duplicated += 1
            verdict.problems.append(f"{lk.canonical_id}: several live links in {lk.connector}")
        live[lk.canonical_id][lk.connector] = lk.external_id
        by_record[(lk.connector, lk.external_id)] = lk.canonical_id
    # duplicates: one reference on several open records of one system, or an open copy nobody links
    for name, by_id in views.items():
        refs: Counter[str] = Counter()
        for rid, view in by_id.items():
            if view.deleted or view.status not in OPEN or (name, rid) in retired:
                continue
            if view.reference is not None:
                refs[view.reference] += 1
                if (name, rid) not in by_record:
                    verdict.duplicated += 1
                    verdict.problems.append(f"{name} {rid}: open copy of {view.reference} that no link names")
        for ref, n in refs.items():
            if n > 1:
                verdict.duplicated += n - 1
                verdict.problems.append(f"{name}: {n} open records carry reference {ref}")
    # lost: a user's last change missing from some system (its own included: never reverted)
    tracked: set[str] = set()
    for (origin, rid), exp in expected.items():
        cid = by_record.get((origin, rid))
        if cid is None:
            if exp.status in OPEN:
                verdict.lost += 1
                verdict.problems.append(f"{origin} {rid}: never linked (its appointment reached no system)")
            continue
        tracked.add(cid)
        if cid in conflicted:
            continue
        want = ("open" if exp.status in OPEN else exp.status, exp.start.astimezone(UTC).isoformat(), exp.notes)
        bad: list[str] = []
        for name in views:
            ext = live[cid].get(name)
            found = views[name].get(ext) if ext is not None else None
            if found is None:
                if want[0] == "open":
                    bad.append(f"{name}: missing")
                continue
            got = _shape(found)
            notes_ok = got[2] == want[2] or (got[2] or "").startswith(MUTATE_NOTE)
            if got[:2] != want[:2] or not notes_ok:
                bad.append(f"{name} {ext}: {got} (want {want})")
        if bad:
            verdict.lost += 1
            verdict.problems.append(f"{cid} (from {origin} {rid}): " + "; ".join(bad))
    # converged: every system holds the same appointment
    agreeing = 0
    judged = {cid: members for cid, members in live.items() if cid not in conflicted}
    for cid, members in judged.items():
        shapes = {_shape(views[n][e]) for n, e in members.items() if e in views.get(n, {})}
        complete = len(members) == len(views) or all(s[0] != "open" for s in shapes)
        if len(shapes) == 1 and complete:
            agreeing += 1
        else:
            verdict.problems.append(f"{cid}: not converged: {sorted(map(str, shapes))} in {sorted(members)}")
    verdict.appointments = len(live)
    verdict.converged = 100.0 * agreeing / len(judged) if judged else 100.0
    return verdict


async def run_scenario(scenario: Scenario, workdir: Path) -> Result:
    return await Run(scenario, workdir).execute()
