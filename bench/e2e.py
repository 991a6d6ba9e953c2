"""End to end: ``syncd resync --json`` as a real process, three passes, beside the loopback baseline.

For each pair (source -> target) and ledger backend:

1. two built-in sandboxes run in their OWN process (``syncd sandbox --port-base 0 --no-rate-limits``);
   the source is seeded with N appointments (``seed_body(generate(N))``), the target with the same
   reference data and no appointments; the reference crosswalk is imported into a fresh ledger
   (SQLite file, or a new PostgreSQL database dropped afterwards); the client-side limiter is set to
   10,000 requests/s so that neither limit is what is measured;
2. **first pass** (creates): ``syncd resync --json`` creates every record in the target;
3. **nothing-to-do pass**: the same command again; it must write nothing;
4. **update pass**: 10 % of the source records get a new note (``POST /_sandbox/records``: another
   user's edit, the version and modified time move), then the command again.

Each pass is one child process, bounded in time (a pass over its budget is killed by its pid and the
figure is what it finished, marked as stopped). Per pass: records/s (changes/s for creates and
updates) over the pass's own ``duration_s`` (the process's wall time, start-up included, is in the
note), ``ratio_vs_loopback`` = that rate / the baseline's GET+PUT pairs/s measured in the same run,
CPU seconds of the syncd process per change (its own rusage, less the CPU a child spends starting
Python and importing syncd, measured apart), and the vendor calls of each side taken
from the sandboxes' request log (``GET /_sandbox/requests`` before and after: reads are GETs, writes
are POST/PUT/PATCH/DELETE, token calls are counted apart), beside ``api_calls`` of ``resync --json``.

Hard targets (issue 16): creates and updates >= 0.6 x baseline pairs/s; nothing to do >= 5,000
records/s; CPU <= 1 ms per change; the nothing-to-do pass makes 0 writes; a changed record costs one
write in the target (Zoho: one call per 100 records); the source is read at its maximum page size
(list calls <= ceil(N / page size) + 1).

Run alone: ``python -m bench.e2e [--quick] [--n N] [--pair SOURCE:TARGET]... [--backend sqlite|postgresql]...``
(``--baseline PAIRS_PER_S`` skips measuring it; ``--profile DIR`` runs the first and update passes
under pyinstrument and writes its reports there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import (
    ROOT,
    Figure,
    MeasuredRun,
    pg_database,
    pg_reachable,
    print_table,
    run_measured,
    sandboxes,
    sqlite_ledger_url,
    syncd_command,
    write_results,
)

__all__ = ["AUTH", "PAIRS", "Setup", "run", "setup_pair", "write_config"]

BENCH = "e2e"
N = 10_000
QUICK_N = 1_000
PAIRS: tuple[tuple[str, str], ...] = (
    ("zoho_crm", "salesforce_health"),
    ("dentally", "zoho_crm"),
    ("onlive", "saludya"),
)
BACKENDS = ("sqlite", "postgresql")
UPDATE_SHARE = 0.10
TARGET_RATIO = 0.6
TARGET_NOOP_PER_S = 5_000.0
TARGET_CPU_MS = 1.0
MIN_BUDGET_S = {"create": 10.0, "noop": 8.0, "update": 8.0}
BUDGET_SLACK = 1.25
STARTUP_ALLOWANCE_S = 4.0
"""Each pass may take BUDGET_SLACK x the time its target allows (N / target rate) plus the process
start-up, and at least MIN_BUDGET_S, before it is stopped: a pass that meets its target always finishes;
one that is stopped has missed it, and the figure says how far it got."""
MAX_REQUESTS_PER_SECOND = 10_000  # the client-side limiter must not be what is measured either
BATCH_WRITE = {"zoho_crm": 100}
"""Vendors whose writes carry up to this many records per call (docs/vendors/zoho_crm.md)."""
NOTES_FIELD = {"zoho_crm": "Additional_Information", "dentally": "notes", "onlive": "comment",
               "salesforce_health": "Comments", "saludya": "notes"}

# sandbox credentials (docs/vendors/README.md "Sandbox options and credentials"; not secrets)
AUTH: dict[str, dict[str, str]] = {
    "salesforce_health": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                          "refresh_token": "sandbox-refresh", "api_version": "65.0"},
    "zoho_crm": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                 "refresh_token": "sandbox-refresh"},
    "saludya": {"api_key": "sandbox-key"},
    "onlive": {"access_key_id": "OLAK7Q2N4X9EXAMPLE", "secret_access_key": "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"},
    "dentally": {"access_token": "sandbox-token", "user_agent": "syncd-bench/1.0 (loopback)"},
}
TIMEZONES = {"salesforce_health": "UTC", "zoho_crm": "Asia/Kolkata", "saludya": "America/Bogota",
             "onlive": "Europe/Madrid", "dentally": "Europe/London"}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def write_config(
    path: Path, ledger_url: str, urls: Mapping[str, str], *, server_port: int | None = None,
    poll_interval: int = 60, webhook_secrets: Mapping[str, str] | None = None, level: str = "error",
) -> None:
    """A config with one connector per vendor in ``urls`` (named after the vendor) in one sync group."""
    lines = [f"[ledger]\nurl = {_toml(ledger_url)}\n", f'[log]\nlevel = "{level}"\nformat = "json"\n']
    if server_port is not None:
        lines.append(f'[server]\nhost = "127.0.0.1"\nport = {server_port}\n')
    for vendor, url in urls.items():
        entries: dict[str, Any] = {"type": vendor, "base_url": url, "poll_interval": poll_interval,
                                   "timezone": TIMEZONES[vendor],
                                   "max_requests_per_second": MAX_REQUESTS_PER_SECOND, **AUTH[vendor]}
        if vendor == "salesforce_health":
            entries["token_url"] = f"{url}/services/oauth2/token"
        if vendor == "zoho_crm":
            entries["accounts_url"] = url
        if webhook_secrets and vendor in webhook_secrets:
            entries["webhook_secret"] = webhook_secrets[vendor]
        lines.append(f"[connectors.{vendor}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in entries.items()))
    lines.append(f'[[sync]]\nname = "bench"\nmembers = {_toml(list(urls))}\n')
    path.write_text("\n".join(lines), encoding="utf-8")


def page_size(vendor: str) -> int:
    """The vendor's list page size as syncd uses it (``mappings/<vendor>.toml`` [options])."""
    with open(Path(ROOT) / "mappings" / f"{vendor}.toml", "rb") as fh:
        options = tomllib.load(fh).get("options", {})
    return int(options.get("page_size") or options.get("query_page_size") or 100)


async def control(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as resp:
        text = await resp.text()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url} answered {resp.status}: {text[:200]}")
        return json.loads(text) if text else None


async def request_counts(session: aiohttp.ClientSession, url: str) -> Counter[tuple[str, str]]:
    doc = await control(session, "GET", f"{url}/_sandbox/requests")
    return Counter({(r["method"], r["route"]): int(r["count"]) for r in doc["requests"]})


async def measured_child(
    session: aiohttp.ClientSession, urls: Mapping[str, str], args: Sequence[str], timeout: float
) -> tuple[MeasuredRun, dict[str, Calls]]:
    """Run ``args`` as a measured child process, and count what it cost each sandbox in ``urls``."""
    before = {v: await request_counts(session, url) for v, url in urls.items()}
    run = await run_measured(args, timeout=timeout)
    after = {v: await request_counts(session, url) for v, url in urls.items()}
    return run, {v: Calls.of(before[v], after[v]) for v in before}


@dataclass
class Calls:
    reads: int = 0
    writes: int = 0
    auth: int = 0
    routes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> Calls:
        calls = cls()
        for (method, route), count in (after - before).items():
            calls.routes[f"{method} {route}"] = count
            if "oauth" in route or "token" in route:
                calls.auth += count
            elif method == "GET":
                calls.reads += count
            else:
                calls.writes += count
        return calls

    @property
    def total(self) -> int:
        return self.reads + self.writes + self.auth


def _without_appointments(vendor: str, body: dict[str, Any]) -> dict[str, Any]:
    """The seed body with its appointment records left out (Salesforce keeps reference data as records)."""
    records = body.get("records") or []
    if vendor == "salesforce_health":
        kept = [r for r in records if (r.get("attributes") or {}).get("type") != "ServiceAppointment"]
    else:
        kept = []
    return {**body, "records": kept}


def appointment_records(vendor: str, dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    records = list(dump.get("records") or [])
    if vendor == "salesforce_health":
        return [r for r in records if (r.get("attributes") or {}).get("type") == "ServiceAppointment"]
    return records


@dataclass
class Setup:
    source: str
    target: str
    n: int
    urls: dict[str, str]
    config_path: Path
    ledger_url: str


@contextlib.asynccontextmanager
async def ledger_for(backend: str) -> AsyncIterator[str]:
    if backend == "postgresql":
        async with pg_database() as url:
            yield url
    else:
        async with sqlite_ledger_url() as url:
            yield url


async def setup_pair(
    session: aiohttp.ClientSession, source: str, target: str, n: int, urls: Mapping[str, str], ledger_url: str,
    tmp: Path, *, seed_target_appointments: bool = False, **config: Any,
) -> Setup:
    """Seed both sandboxes, write the config and import the reference crosswalk into a new ledger.
    With ``seed_target_appointments`` the target holds the same appointments and the ledger links
    them (a ledger that already knows every appointment, without N vendor creates; :func:`bulk_links`)."""
    from syncd.config import load_config
    from syncd.crosswalk import import_rows, parse_csv
    from syncd.ledger.store import Ledger
    from syncd.sandboxkit.seedgen import crosswalk_csv, generate

    single_location = "zoho_crm" in (source, target)
    dataset = generate(n, seed=11, now=datetime.now(UTC), locations=1 if single_location else None)
    crosswalk: dict[str, list[tuple[str, str, str]]] = {}
    links: list[tuple[str, str, str]] = []
    for vendor in (source, target):
        module = importlib.import_module(f"connectors.{vendor}.sandbox")
        body, rows = module.seed_body(dataset)
        keep_appointments = vendor == source or seed_target_appointments
        if not keep_appointments:
            body = _without_appointments(vendor, body)
        await control(session, "POST", f"{urls[vendor]}/_sandbox/records", body)
        crosswalk[vendor] = [r for r in rows if r[0] != "appointment"]
        links += [(key, vendor, ext) for kind, key, ext in rows if kind == "appointment" and seed_target_appointments]
    path = tmp / "config.toml"
    write_config(path, ledger_url, {source: urls[source], target: urls[target]}, **config)
    loaded = load_config(str(path), env={})
    rows, problems = parse_csv(crosswalk_csv(crosswalk), loaded.connectors)
    if problems:
        raise RuntimeError(f"crosswalk problems: {problems[:3]}")
    ledger = await Ledger.open(ledger_url)
    try:
        await ledger.upgrade()
        report = await import_rows(ledger, rows, loaded)
        if report.problems:
            raise RuntimeError(f"crosswalk import problems: {report.problems[:3]}")
        await bulk_links(ledger, links)
    finally:
        await ledger.close()
    return Setup(source, target, n, dict(urls), path, ledger_url)


async def bulk_links(ledger: Any, links: Sequence[tuple[str, str, str]], chunk: int = 5_000) -> None:
    """What importing ``appointment`` crosswalk rows into an EMPTY ledger stores (a link per system and
    an empty merge-base row per appointment), written as SQLAlchemy Core bulk inserts into the store's
    own tables (one executemany per chunk and table) instead of row-by-row contradiction checks, which an
    empty ledger cannot have, and without building one ORM object per row (about 0.5 ms each).
    ``links``: (canonical key, connector, external id)."""
    from syncd.ledger.store import APPOINTMENTS, LINKS

    now = datetime.now(UTC)
    keys = list(dict.fromkeys(key for key, _, _ in links))
    for start in range(0, len(keys), chunk):
        async with ledger.transaction() as tx:
            await tx.conn.execute(APPOINTMENTS.insert(), [
                {"canonical_id": key, "sync_group": "bench", "snapshot": None, "fingerprint": None,
                 "slot_key": None, "updated_at": now, "claimed_by": None, "claimed_until": None}
                for key in keys[start:start + chunk]
            ])
    for start in range(0, len(links), chunk):
        async with ledger.transaction() as tx:
            await tx.conn.execute(LINKS.insert(), [
                {"canonical_id": key, "connector": connector, "external_id": ext, "version": None,
                 "fingerprint": None, "written_fingerprint": None, "written_version": None, "modified_at": None,
                 "seen": None, "retired": False, "created_at": now, "updated_at": now}
                for key, connector, ext in links[start:start + chunk]
            ])


async def edit_share(session: aiohttp.ClientSession, setup: Setup, share: float, tag: str) -> int:
    """Another user changes the note of ``share`` of the source's appointments; returns how many."""
    vendor = setup.source
    url = setup.urls[vendor]
    records = appointment_records(vendor, await control(session, "GET", f"{url}/_sandbox/records"))
    step = max(1, round(1 / share))
    chosen = records[::step]
    key = "Id" if chosen and "Id" in chosen[0] else "id"
    edits = []
    for i, rec in enumerate(chosen):
        edit: dict[str, Any] = {key: rec[key], NOTES_FIELD[vendor]: f"bench {tag} edit {i}"}
        if "attributes" in rec:
            edit["attributes"] = {"type": rec["attributes"]["type"]}
        edits.append(edit)
    await control(session, "POST", f"{url}/_sandbox/records", {"records": edits})
    return len(edits)


@dataclass
class Pass:
    kind: str
    run: MeasuredRun
    doc: dict[str, Any]
    calls: dict[str, Calls]
    changes: int
    expected: int
    seconds: float
    """the pass itself: ``duration_s`` of ``resync --json`` (the process's wall time when it was stopped)"""
    startup_cpu_s: float = 0.0

    @property
    def pass_cpu_s(self) -> float:
        """CPU seconds of the child beyond what starting the interpreter and importing syncd costs."""
        return max(0.0, self.run.cpu_s - self.startup_cpu_s)


_STARTUP: dict[str, float] = {}


async def startup_cpu() -> float:
    """CPU seconds a child spends starting Python and importing what ``syncd resync`` imports (measured
    once per run, best of 2, and subtracted from each pass's CPU: it is paid once per process, not per
    record)."""
    if "cpu" not in _STARTUP:
        code = "import syncd.cli, syncd.passes, syncd.ledger.store, connectors"
        runs = [await run_measured([sys.executable, "-c", code], timeout=60) for _ in range(2)]
        _STARTUP["cpu"] = min(r.cpu_s for r in runs)
    return _STARTUP["cpu"]


async def resync_pass(
    session: aiohttp.ClientSession, setup: Setup, kind: str, expected: int, budget: float,
    profile: Path | None = None,
) -> Pass:
    """One ``syncd resync --json`` child process (bounded by ``budget``) and what it cost each vendor."""
    before = {v: await request_counts(session, setup.urls[v]) for v in (setup.source, setup.target)}
    args = syncd_command("resync", "--json", "--config", str(setup.config_path))
    saved: Path | None = None
    if profile is not None:
        await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
        saved = profile / f"{setup.source}-{setup.target}-{kind}.pyisession"
        args = [sys.executable, "-m", "pyinstrument", "--renderer", "pyisession", "--outfile", str(saved),
                "-m", "syncd", *args[3:]]
    run = await run_measured(args, timeout=budget)
    if saved is not None:
        await render_profile(saved)
    after = {v: await request_counts(session, setup.urls[v]) for v in (setup.source, setup.target)}
    doc = run.json()
    counts = (doc.get("connectors") or {}).get(setup.target) or {}
    changes = sum(int(counts.get(k, 0)) for k in ("created", "updated", "cancelled"))
    if run.timed_out and kind == "create":
        # the process was stopped: count what reached the target
        dump = await control(session, "GET", f"{setup.urls[setup.target]}/_sandbox/records")
        changes = len(appointment_records(setup.target, dump))
    calls = {v: Calls.of(before[v], after[v]) for v in before}
    seconds = run.seconds
    if not run.timed_out and isinstance(doc.get("duration_s"), (int, float)) and doc["duration_s"] > 0:
        seconds = float(doc["duration_s"])
    return Pass(kind, run, doc, calls, changes, expected, seconds, await startup_cpu())


async def render_profile(session: Path) -> None:
    """From a saved pyinstrument session: ``<stem>.txt`` (the call tree), ``<stem>-total.txt`` and
    ``<stem>-self.txt`` (functions by the time spent in them and below them, or in them alone)."""
    base = [sys.executable, "-m", "pyinstrument", "--load", str(session), "--renderer", "text"]
    stem = session.with_suffix("")
    await run_measured([*base, "--outfile", f"{stem}.txt"], timeout=300)
    for mode in ("total", "self"):
        await run_measured([*base, "-p", "flat", "-p", f"flat_time={mode}", "--outfile", f"{stem}-{mode}.txt"],
                           timeout=300)


def _pass_note(p: Pass) -> str:
    note = f"pass {p.seconds:.1f} s (process {p.run.seconds:.1f} s with start-up), exit {p.run.returncode}"
    if p.run.timed_out:
        note = f"STOPPED after {p.seconds:.0f} s (budget): {p.changes:,} of {p.expected:,} done"
    elif p.kind != "noop" and p.changes != p.expected:
        note += f"; {p.changes:,} of {p.expected:,} written (dead letters {p.doc.get('dead_letters')}, " \
                f"conflicts {p.doc.get('open_conflicts')})"
    if p.run.returncode not in (0, 1) and not p.run.timed_out:
        note += f"; stderr: {p.run.stderr.strip().splitlines()[-1][:160] if p.run.stderr.strip() else '-'}"
    return note


def pass_figures(setup: Setup, label: str, p: Pass, baseline: float | None) -> list[Figure]:
    """The figures of one pass (see the module docstring for the targets)."""
    src, dst = setup.source, setup.target
    figures: list[Figure] = []
    calls_extra: dict[str, object] = {
        v: {"reads": c.reads, "writes": c.writes, "auth": c.auth, "routes": c.routes} for v, c in p.calls.items()
    }
    api_calls = {k: int(v.get("api_calls", 0)) for k, v in (p.doc.get("connectors") or {}).items()}
    base_extra: dict[str, object] = {
        "pair": f"{src}->{dst}", "pass": p.kind, "n": setup.n, "seconds": p.seconds, "changes": p.changes,
        "expected": p.expected, "timed_out": p.run.timed_out, "exit_code": p.run.returncode,
        "process_seconds": p.run.seconds, "cpu_s": p.run.cpu_s, "startup_cpu_s": p.startup_cpu_s,
        "pass_cpu_s": p.pass_cpu_s, "max_rss_mb": p.run.max_rss_mb, "calls": calls_extra, "api_calls": api_calls,
    }
    note = _pass_note(p)
    if p.kind == "noop":
        rate = setup.n / p.seconds if p.seconds and not p.run.timed_out else 0.0
        figures.append(Figure(BENCH, f"{label}: nothing to do", rate, "records/s", TARGET_NOOP_PER_S, hard=True,
                              note=note, extra=base_extra, complete=not p.run.timed_out))
        writes = p.calls[dst].writes + p.calls[src].writes
        figures.append(Figure(BENCH, f"{label}: nothing to do, writes", writes, "calls", 0, hard=True,
                              lower_is_better=True, note=f"reads {src} {p.calls[src].reads:,}, "
                              f"{dst} {p.calls[dst].reads:,} for {setup.n:,} unchanged records"))
        return figures
    what = "creates" if p.kind == "create" else "updates"
    rate = p.changes / p.seconds if p.seconds else 0.0
    ratio = rate / baseline if baseline else None
    target = TARGET_RATIO * baseline if baseline else None
    extra = {**base_extra, "rate": rate, "baseline_pairs_per_s": baseline, "ratio_vs_loopback": ratio}
    ratio_note = f"ratio_vs_loopback {ratio:.3f}; " if ratio is not None else "no baseline; "
    figures.append(Figure(BENCH, f"{label}: {what}", rate, "changes/s", target, hard=True,
                          note=ratio_note + note, extra=extra, complete=not p.run.timed_out))
    cpu_ms = 1000 * p.pass_cpu_s / p.changes if p.changes else None
    busy = f", {100 * p.pass_cpu_s / p.seconds:.0f}% of a core" if p.seconds else ""
    figures.append(Figure(BENCH, f"{label}: {what}, CPU per change", cpu_ms, "ms", TARGET_CPU_MS, hard=True,
                          lower_is_better=True, complete=not p.run.timed_out,
                          note=f"syncd process {p.run.cpu_s:.1f} CPU s less {p.startup_cpu_s:.1f} s start-up{busy}"))
    if p.changes and not p.run.timed_out:
        per = BATCH_WRITE.get(dst, 1)
        allowed = math.ceil(p.changes / per) / p.changes
        writes = p.calls[dst].writes
        figures.append(Figure(BENCH, f"{label}: {what}, {dst} writes per change", writes / p.changes, "calls",
                              allowed, hard=True, lower_is_better=True,
                              note=f"{writes:,} write calls for {p.changes:,} changes"
                                   + (f" (batches of {per})" if per > 1 else "")))
        if dst == "salesforce_health" and p.kind == "create":
            total = p.calls[dst].total
            figures.append(Figure(BENCH, f"{label}: salesforce calls per create", total / p.changes, "calls",
                                  note="every call on the target: " + ", ".join(
                                      f"{r} {c:,}" for r, c in sorted(p.calls[dst].routes.items()))))
    if p.kind == "create" and not p.run.timed_out:
        size = page_size(src)
        reads = p.calls[src].reads
        most = math.ceil(setup.n / size) + 1
        figures.append(Figure(BENCH, f"{label}: {src} records per read call", setup.n / reads if reads else None,
                              "records", setup.n / most, hard=True,
                              note=f"{reads:,} read calls for {setup.n:,} records, page size {size}"))
    return figures


def budgets_for(n: int, baseline: float | None) -> dict[str, float]:
    """Seconds each pass may run (see MIN_BUDGET_S)."""
    change_rate = TARGET_RATIO * baseline if baseline else 100.0
    allowed = {"create": n / change_rate, "noop": n / TARGET_NOOP_PER_S, "update": n * UPDATE_SHARE / change_rate}
    return {kind: max(MIN_BUDGET_S[kind], BUDGET_SLACK * seconds + STARTUP_ALLOWANCE_S)
            for kind, seconds in allowed.items()}


async def measure_pair(
    source: str, target: str, backend: str, n: int, baseline: float | None, budgets: Mapping[str, float] | None,
    profile: Path | None = None,
) -> list[Figure]:
    label = f"{source}->{target} {backend} N={n:,}"
    budgets = budgets or budgets_for(n, baseline)
    figures: list[Figure] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with sandboxes([source, target]) as child, ledger_for(backend) as ledger_url, \
            aiohttp.ClientSession(timeout=timeout) as session:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            setup = await setup_pair(session, source, target, n, child.urls, ledger_url, Path(tmp))
            print(f"  {label}: first pass ...", file=sys.stderr, flush=True)
            first = await resync_pass(session, setup, "create", n, budgets["create"], profile)
            figures += pass_figures(setup, label, first, baseline)
            if first.run.timed_out or first.changes < n:
                why = "first pass stopped at its budget" if first.run.timed_out else "first pass did not create all"
                targets: tuple[tuple[str, str, float], ...] = (("nothing to do", "records/s", TARGET_NOOP_PER_S),
                           ("updates", "changes/s", TARGET_RATIO * baseline if baseline else 0.0))
                for kind, unit, goal in targets:
                    figures.append(Figure(BENCH, f"{label}: {kind}", None, unit, goal, hard=True,
                                          note=f"not measured: {why}"))
                return figures
            print(f"  {label}: nothing-to-do pass ...", file=sys.stderr, flush=True)
            noop = await resync_pass(session, setup, "noop", 0, budgets["noop"])
            figures += pass_figures(setup, label, noop, baseline)
            edited = await edit_share(session, setup, UPDATE_SHARE, "update")
            print(f"  {label}: update pass ({edited:,} edits) ...", file=sys.stderr, flush=True)
            update = await resync_pass(session, setup, "update", edited, budgets["update"], profile)
            figures += pass_figures(setup, label, update, baseline)
    return figures


async def run(
    *, quick: bool = False, n: int | None = None, pairs: Sequence[tuple[str, str]] | None = None,
    backends: Sequence[str] | None = None, baseline: float | None = None, profile: Path | None = None,
    budgets: Mapping[str, float] | None = None,
) -> list[Figure]:
    """Every pair on every backend (quick: the first pair on SQLite, N = 1,000)."""
    if baseline is None:
        from bench import baseline as baseline_bench

        measured = await baseline_bench.run(quick=True)
        baseline = measured[0].value
    pairs = list(pairs or (PAIRS[:1] if quick else PAIRS))
    backends = list(backends or (("sqlite",) if quick else BACKENDS))
    figures: list[Figure] = []
    if "postgresql" in backends and not await pg_reachable():
        backends.remove("postgresql")
        figures.append(Figure(BENCH, "PostgreSQL", None, "", 1.0, hard=True, note="server not reachable"))
    for source, target in pairs:
        for backend in backends:
            figures += await measure_pair(source, target, backend, n or (QUICK_N if quick else N), baseline,
                                          budgets, profile)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N:,}, one pair, SQLite")
    parser.add_argument("--n", type=int, help=f"number of appointments (default {N:,})")
    parser.add_argument("--pair", action="append", help="SOURCE:TARGET vendor types (repeatable)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="ledger backend (repeatable)")
    parser.add_argument("--baseline", type=float, help="loopback pairs/s (default: measure it now)")
    parser.add_argument("--profile", type=Path, help="run the first and update passes under pyinstrument")
    args = parser.parse_args(argv)
    pairs = []
    for raw in args.pair or []:
        pair = tuple(raw.split(":"))
        if len(pair) != 2 or pair[0] == pair[1] or any(p not in AUTH for p in pair):
            parser.error(f"--pair: two different vendor types among {', '.join(AUTH)}")
        pairs.append((pair[0], pair[1]))
    started = time.monotonic()
    figures = asyncio.run(run(quick=args.quick, n=args.n, pairs=pairs or None, backends=args.backend,
                              baseline=args.baseline, profile=args.profile))
    write_results(BENCH, figures, quick=args.quick, seconds=time.monotonic() - started)
    return print_table(figures)


if __name__ == "__main__":
    sys.exit(main())
